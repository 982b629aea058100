"""Every exercise check accepts the solution and rejects a typical wrong answer with a hint."""

import importlib.util
import math
from pathlib import Path

import pytest
from accelerate import Accelerator
from accelerate.utils import gather_object

from mgpu_lab import exercises

SOLUTIONS = Path(__file__).resolve().parent.parent / "notebooks" / "solutions" / "solutions.py"
spec = importlib.util.spec_from_file_location("solutions", SOLUTIONS)
solutions = importlib.util.module_from_spec(spec)
spec.loader.exec_module(solutions)


def squares_without_a_list() -> list[int]:
    return gather_object(Accelerator().process_index ** 2)


def squares_local_only() -> list[int]:
    return [Accelerator().process_index ** 2]


def tokenize_without_bos(tokenizer, prompts):
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)


def tokenize_right_padded(tokenizer, prompts):
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer(prompts, return_tensors="pt", padding=True, padding_side="right")


def not_done(*args):
    raise NotImplementedError("write your answer here")


@pytest.mark.parametrize("check, solution, wrong, hint", [
    (exercises.check_squares, solutions.squares, squares_without_a_list, "gather_object needs a list"),
    (exercises.check_squares, solutions.squares, squares_local_only, "expected [0, 1, 4]"),
    (exercises.check_restore, solutions.restore, lambda shares, count: [i for s in shares for i in s][:count],
     "10 prompts on 4 processes gave"),
    (exercises.check_batch_tokenizer, solutions.tokenize_batch, tokenize_without_bos, "does not start with BOS"),
    (exercises.check_batch_tokenizer, solutions.tokenize_batch, tokenize_right_padded, "ends in padding"),
    (exercises.check_calls, solutions.calls, lambda p, n, b: p / (n * b), "you said 6.25"),
    (exercises.check_calls, solutions.calls, lambda p, n, b: math.ceil(p / b), "4 processes"),
    (exercises.check_budget_batches, solutions.budget_batches, lambda lengths, new, budget: [[i] for i in range(len(lengths))][:-1],
     "missing or appear twice"),
    (exercises.check_budget_batches, solutions.budget_batches,
     lambda lengths, new, budget: [list(range(i, min(i + 16, len(lengths)))) for i in range(0, len(lengths), 16)],
     "more than 2048 padded tokens"),
    (exercises.check_squares, solutions.squares, not_done, "NotImplementedError"),
])
def test_check_accepts_solution_and_rejects_wrong_answer(capsys, check, solution, wrong, hint):
    assert check(solution) is True
    assert capsys.readouterr().out.startswith("✓")
    assert check(wrong) is False
    out = capsys.readouterr().out
    assert out.startswith("✗ not yet:") and hint in out
