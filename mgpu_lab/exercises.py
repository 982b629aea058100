"""Checks for the exercises at the end of each lesson: each prints a verdict and a hint, and returns True or False."""

from __future__ import annotations

from typing import Callable

from .batching import fixed_batches
from .distributed import who_gets_what
from .generate import generate_naive
from .launch import LaunchError, launch
from .models import load_model
from .prompts import default_prompts, varied_prompts
from .scaling import calls_on_busiest_rank


def verdict(ok: bool, success: str, hint: str) -> bool:
    """Print a one-line verdict for the learner and return it."""
    print(f"✓ {success}" if ok else f"✗ not yet: {hint}")
    return ok


def attempt(fn: Callable, *args, **kwargs):
    """Call the learner's function; an exception becomes a hint instead of a traceback."""
    try:
        return fn(*args, **kwargs), None
    except LaunchError as error:
        return None, error.message
    except Exception as error:  # the learner's code may raise anything: report it, do not crash the lesson
        return None, f"your function raised {type(error).__name__}: {error}"


def check_squares(fn: Callable[[], list[int]]) -> bool:
    """Lesson 1: `fn`, run on 3 processes, must return every rank's square, gathered, in rank order."""
    result, problem = attempt(launch, fn, num_processes=3, verbose=False)
    if problem:
        return verdict(False, "", problem + " (gather_object needs a list: wrap your value in [ ])")
    return verdict(result == [0, 1, 4], "3 processes gathered [0, 1, 4]",
                   f"3 processes returned {result!r}, expected [0, 1, 4]")


def check_restore(fn: Callable[[list[list[int]], int], list[int]]) -> bool:
    """Lesson 2: `fn(shares, count)` must turn padded per-process shares back into 0..count-1, once each."""
    for count, processes in ((10, 4), (7, 3), (5, 2)):
        shares = launch(who_gets_what, count, True, num_processes=processes, verbose=False)
        restored, problem = attempt(fn, shares, count)
        if problem or restored != list(range(count)):
            return verdict(False, "", problem or f"{count} prompts on {processes} processes gave {restored!r}")
    return verdict(True, "every prompt index comes back once, in order", "")


def check_batch_tokenizer(fn: Callable) -> bool:
    """Lesson 3: `fn(tokenizer, prompts)` must build a batch that gives the same greedy tokens as one by one."""
    model, tokenizer = load_model("tiny")
    prompts = default_prompts(repeat=1)[:6]
    batch, problem = attempt(fn, tokenizer, prompts)
    if problem:
        return verdict(False, "", problem)
    for row, (ids, mask) in enumerate(zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist())):
        if mask[-1] != 1:
            return verdict(False, "", f"row {row} ends in padding: pad on the left")
        if ids[mask.index(1)] != tokenizer.bos_token_id:
            return verdict(False, "", f"row {row} does not start with BOS: keep the special tokens")
    expected = [c.token_ids for c in generate_naive(model, tokenizer, prompts, 12)]
    output = model.generate(**batch, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    width = batch["input_ids"].shape[1]
    same = all(out[width:width + len(exp)].tolist() == exp for out, exp in zip(output, expected))
    return verdict(same, "your batch gives the same greedy tokens as one prompt at a time",
                   "the batch's greedy tokens differ from one-by-one: check the attention mask")


def check_calls(fn: Callable[[int, int, int], int]) -> bool:
    """Lesson 4: `fn(prompts, processes, batch_size)` must count the busiest process's generate calls."""
    for prompts, processes, batch in ((100, 1, 16), (100, 4, 16), (100, 5, 16), (10, 4, 1), (7, 3, 2), (1, 8, 16)):
        answer, problem = attempt(fn, prompts, processes, batch)
        expected = calls_on_busiest_rank(prompts, processes, batch)
        if problem or answer != expected:
            return verdict(False, "", problem or f"for {prompts} prompts, {processes} processes, batches of {batch}: "
                           f"you said {answer!r}, the busiest process makes {expected} calls")
    return verdict(True, "your count matches on every case, the article's table included", "")


def check_budget_batches(fn: Callable[[list[int], int, int], list[list[int]]]) -> bool:
    """Lesson 5: `fn(lengths, new_tokens, budget)` must cover every prompt once, keep to the budget, pad less."""
    _, tokenizer = load_model("tiny")
    lengths = [len(ids) for ids in tokenizer(varied_prompts()[:60]).input_ids]
    batches, problem = attempt(fn, lengths, 20, 2048)
    if problem:
        return verdict(False, "", problem)
    if sorted(p for b in batches for p in b) != list(range(len(lengths))):
        return verdict(False, "", "some prompts are missing or appear twice")
    over = [b for b in batches if len(b) > 1 and len(b) * (max(lengths[p] for p in b) + 20) > 2048]
    if over:
        return verdict(False, "", f"{len(over)} batch(es) hold more than 2048 padded tokens")
    return verdict(padding(batches, lengths) < padding(fixed_batches(len(lengths), 16), lengths) / 2,
                   "every prompt once, within budget, and less than half the padding of input-order batches",
                   "within budget, but the padding is not even halved: sort by length first")


def padding(batches: list[list[int]], lengths: list[int]) -> float:
    """Padded prompt positions per real prompt token for a set of batches."""
    padded = sum(len(b) * max(lengths[p] for p in b) - sum(lengths[p] for p in b) for b in batches)
    return padded / sum(lengths)
