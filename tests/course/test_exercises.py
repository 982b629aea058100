"""Every exercise check accepts the solution and rejects each typical wrong answer, and each loophole, with a hint."""

import contextlib
import importlib.util
import math
from pathlib import Path

import pytest
from accelerate import Accelerator
from accelerate.utils import gather_object
from transformers import AutoModelForCausalLM, AutoTokenizer

from mgpu_lab.course import exercises
from mgpu_lab.course.demos import what_each_process_sees
from mgpu_lab.course.staircase import calls_on_busiest_rank
from mgpu_lab.launcher import launch as launch_module
from mgpu_lab.engine.batching import budget_batches
from mgpu_lab.engine.generate import generate_batched
from mgpu_lab.engine.prompts import default_prompts
from mgpu_lab.engine.results import Completion

SOLUTIONS = Path(__file__).resolve().parents[2] / "notebooks" / "solutions" / "solutions.py"
spec = importlib.util.spec_from_file_location("solutions", SOLUTIONS)
solutions = importlib.util.module_from_spec(spec)
spec.loader.exec_module(solutions)


def squares_without_a_list() -> list[int]:
    return gather_object(Accelerator().process_index ** 2)


def squares_local_only() -> list[int]:
    return [Accelerator().process_index ** 2]


def squares_computed_in_one_process() -> list[int]:
    """The right list, with no gather: every process computes every rank's value itself."""
    return [r * r for r in range(Accelerator().num_processes)]


def squares_written_out() -> list[int]:
    return [0, 1, 4]


def squares_through_the_kit() -> list[int]:
    """Lets a kit demonstration do the gathering."""
    return [seen["process_index"] ** 2 for seen in what_each_process_sees()]


def restore_by_text(shares, count):
    """Drops duplicates by value: the article's prompts repeat, so real prompts go too."""
    seen, kept = set(), []
    for index, prompt in sorted(pair for share in shares for pair in share):
        if prompt not in seen:
            seen.add(prompt)
            kept.append((index, prompt))
    return kept


def restore_the_article(shares, count):
    """Ignores its input: the article's first prompts, which the lesson's shares happen to hold."""
    return list(enumerate(default_prompts()[:count]))


def restore_the_lessons_shares(shares, count):
    """Ignores its input: restores the shares the notebook printed, whatever the check hands it."""
    printed = exercises.padded_pair_shares(count, 4)
    return sorted({index: prompt for share in printed for index, prompt in share}.items())


CALLS_TABLE = {case: solutions.calls(*case) for case in exercises.CALLS_CASES}  # passes every fixed case


def calls_via_the_kit(prompts, processes, batch_size):
    return calls_on_busiest_rank(prompts, processes, batch_size)


FIXED_LENGTHS = list(exercises.varied_lengths()[:60])
FIXED_BATCHES = solutions.budget_batches(FIXED_LENGTHS, 20, 2048)


def batched_with(pad_token=True, padding_side="left", add_special_tokens=True, cut_prompt=True, cut_eos=True,
                 order=sorted, gather=True, split=True, one_at_a_time=False):
    """The lesson 3 solution with one of the usual mistakes switched on."""
    def batched(folder, prompts, max_new_tokens, batch_size):
        accelerator = Accelerator()
        model = AutoModelForCausalLM.from_pretrained(folder, device_map={"": accelerator.device})
        tokenizer = AutoTokenizer.from_pretrained(folder)
        if pad_token:
            tokenizer.pad_token = tokenizer.eos_token
        results = []
        items = list(enumerate(prompts))
        size = 1 if one_at_a_time else batch_size
        with accelerator.split_between_processes(items) if split else contextlib.nullcontext(items) as share:
            for start in range(0, len(share), size):
                chunk = share[start:start + size]
                batch = tokenizer([p for _, p in chunk], return_tensors="pt", padding=True, padding_side=padding_side,
                                  add_special_tokens=add_special_tokens)
                output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                        pad_token_id=tokenizer.eos_token_id)
                width = batch["input_ids"].shape[1] if cut_prompt else 0
                for (index, _), new in zip(chunk, output[:, width:].tolist()):
                    if cut_eos and tokenizer.eos_token_id in new:
                        new = new[:new.index(tokenizer.eos_token_id) + 1]
                    results.append((index, tokenizer.decode(new, skip_special_tokens=True), len(new)))
        return order(gather_object(results) if gather else results)
    return batched


def not_done(*args):
    raise NotImplementedError("write your answer here")


def one_prompt_per_batch(lengths, new_tokens, budget):
    return [[i] for i in range(len(lengths))]


@pytest.mark.parametrize("check, solution", [
    (exercises.check_squares, solutions.squares), (exercises.check_restore, solutions.restore),
    (exercises.check_calls, solutions.calls), (exercises.check_budget_batches, solutions.budget_batches),
    (exercises.check_layout, solutions.layout),
])
def test_check_accepts_the_solution(capsys, check, solution):
    assert check(solution) is True
    assert capsys.readouterr().out.startswith("✓")


@pytest.mark.parametrize("check, wrong, hint", [
    (exercises.check_squares, squares_without_a_list, "gather_object needs a list"),
    (exercises.check_squares, squares_local_only, "process 0 returned [0] without gathering"),
    (exercises.check_squares, squares_computed_in_one_process, "returned [0, 1, 4] without gathering"),
    (exercises.check_squares, squares_written_out, "returned [0, 1, 4] without gathering"),
    (exercises.check_squares, squares_through_the_kit, "the kit's what_each_process_sees gathered for you"),
    (exercises.check_squares, not_done, "NotImplementedError"),
    (exercises.check_restore, lambda shares, count: [p for s in shares for p in s][:count],
     "10 prompts on 4 processes gave"),
    (exercises.check_restore, lambda shares, count: list(range(count)), "not just the numbers"),
    (exercises.check_restore, restore_by_text, "drop them by index"),
    (exercises.check_restore, restore_the_article, "take each pair from shares"),
    (exercises.check_restore, restore_the_lessons_shares, "take each pair from shares"),
    (exercises.check_calls, lambda p, n, b: p / (n * b), "you said 6.25"),
    (exercises.check_calls, lambda p, n, b: math.ceil(p / b), "4 processes"),
    (exercises.check_calls, lambda p, n, b: p // (n * b) + 1, "for 96 prompts, 1 processes, batches of 16: you said 7"),
    (exercises.check_calls, lambda p, n, b: CALLS_TABLE.get((p, n, b)), "you said None"),
    (exercises.check_calls, calls_on_busiest_rank, "the kit's own calls_on_busiest_rank"),
    (exercises.check_calls, calls_via_the_kit, "the kit's own calls_on_busiest_rank"),
    (exercises.check_budget_batches, lambda lengths, new, budget: [[i] for i in range(len(lengths))][:-1],
     "missing or appear twice"),
    (exercises.check_budget_batches,
     lambda lengths, new, budget: [list(range(i, min(i + 16, len(lengths)))) for i in range(0, len(lengths), 16)],
     "more than 2048 padded tokens"),
    (exercises.check_budget_batches, one_prompt_per_batch, "batches, where filling"),
    (exercises.check_budget_batches, lambda lengths, new, budget: FIXED_BATCHES, "prompts you cannot know in advance"),
    (exercises.check_budget_batches, lambda lengths, new, budget: solutions.budget_batches(lengths, 0, budget),
     "rows x (longest prompt + new tokens)"),
    (exercises.check_budget_batches, budget_batches, "the kit's own budget_batches"),
    (exercises.check_layout, lambda w, kv, gpu, n, heads: (1, n), "you said (1, 4)"),
    (exercises.check_layout, lambda w, kv, gpu, n, heads: solutions.layout(w, 0, gpu, n, heads), "the answer is (1, 4)"),
    (exercises.check_layout, lambda w, kv, gpu, n, heads: solutions.layout(w, kv, gpu, n, math.factorial(8)),
     "12 heads: you said (1, 8)"),
    (exercises.check_layout, lambda w, kv, gpu, n, heads: tuple(reversed(solutions.layout(w, kv, gpu, n, heads))),
     "the answer is (4, 1)"),
])
def test_check_rejects_a_wrong_answer_with_a_hint(capsys, check, wrong, hint):
    assert check(wrong) is False
    out = capsys.readouterr().out
    assert out.startswith("✗ not yet:") and hint in out


def test_batched_function_check_accepts_the_solution_on_any_machine(capsys, monkeypatch):
    monkeypatch.setattr(launch_module, "count_gpus", lambda: 1)  # a one-GPU box: the check still runs 2 CPU processes
    assert exercises.check_batched_function(solutions.batched_on_each_process) is True
    assert capsys.readouterr().out.startswith("✓")


@pytest.mark.parametrize("mistake, hint", [
    ({"padding_side": "right"}, "pad on the left"),
    ({"pad_token": False}, "tokenizer.pad_token = tokenizer.eos_token"),
    ({"add_special_tokens": False}, "BOS is missing"),
    ({"cut_prompt": False}, "the prompt is still in the text"),
    ({"cut_eos": False}, "up to and including the first EOS"),
    ({"order": lambda rows: sorted(rows, reverse=True)}, "sort the gathered list by prompt index"),
    ({"gather": False}, "gather every process's results"),
    ({"split": False, "gather": False}, "gather every process's results"),
    ({"split": False}, "process 0 generated for 8 prompts, its share is 4"),
    ({"one_at_a_time": True}, "process 0 made 4 generate calls for its 4 prompts: batch them"),
])
def test_batched_function_check_names_each_usual_mistake(capsys, mistake, hint):
    assert exercises.check_batched_function(batched_with(**mistake)) is False
    out = capsys.readouterr().out
    assert out.startswith("✗ not yet:") and hint in out


def rows_from_elsewhere(folder, prompts, max_new_tokens, batch_size):
    """Ignores its input: returns the check's own reference rows, made before the launch."""
    return list(exercises._reference_rows())


def batched_by_the_kit(folder, prompts, max_new_tokens, batch_size):
    """Lets the kit's generate_batched do the tokenizing and generating."""
    accelerator = Accelerator()
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with accelerator.split_between_processes(list(enumerate(prompts))) as share:
        made = generate_batched(model, tokenizer, [prompt for _, prompt in share], max_new_tokens, batch_size)
        results = [(index, c.text, c.generated_tokens) for (index, _), c in zip(share, made)]
    return sorted(gather_object(results))


@pytest.mark.parametrize("wrong, hint", [
    (rows_from_elsewhere, "made no generate call"),
    (batched_by_the_kit, "the kit's generate_batched did the work"),
])
def test_batched_function_check_wants_the_work_done_in_the_function(capsys, wrong, hint):
    assert exercises.check_batched_function(wrong) is False
    out = capsys.readouterr().out
    assert out.startswith("✗ not yet:") and hint in out


def test_the_batched_mistakes_helper_without_mistakes_passes(capsys):
    """Guards the test above: each mistake is the only difference from a function the check accepts."""
    assert exercises.check_batched_function(batched_with()) is True


@pytest.mark.parametrize("guess, actual, tolerance, mark", [
    (None, 5.5, 0.1, "? no prediction"), (5.4, 5.5, 0.1, "✓"), (3, 5.5, 0.1, "✗"),
    (["r", "a"], ["r", "a"], 0.0, "✓"), ("rank0", ["r", "a"], 0.0, "✗"),
])
def test_predict_marks_the_guess_and_shows_the_real_value(capsys, guess, actual, tolerance, mark):
    assert exercises.predict(guess, actual, tolerance) is (mark == "✓")
    out = capsys.readouterr().out
    assert out.startswith(mark) and f"the real value: {actual}" in out


def completion(index, token_ids):
    return Completion(index, "prompt", "text", token_ids, 3, len(token_ids), "length")


def test_compare_runs_counts_identical_and_says_where_the_others_part(capsys):
    these = [completion(0, [5, 6, 7]), completion(1, [5, 6, 7]), completion(2, [1, 2])]
    those = [completion(0, [5, 6, 7]), completion(1, [5, 9, 7]), completion(2, [1, 2])]
    assert exercises.compare_runs(these, those, "bfloat16") == 2
    out = capsys.readouterr().out
    assert "2/3 completions identical (bfloat16)" in out and "prompt 1 after 1 tokens" in out
    assert "half precision" in out
    assert exercises.compare_runs(these, these, "float32") == 3
    assert capsys.readouterr().out == "3/3 completions identical (float32)\n"
