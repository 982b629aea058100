"""Checks for the lessons' exercises and predictions: each prints a verdict and a hint, and returns True or False."""

from __future__ import annotations

import functools
import math
import random
from typing import Any, Callable

from ..engine.batching import budget_batches, fixed_batches
from ..engine.runner import run
from .demos import who_gets_what
from ..engine.generate import generate_batched
from ..engine.results import Completion
from ..launcher.launch import LaunchError, launch
from ..engine.models import TINY, load_model, load_tokenizer
from ..engine.prompts import default_prompts, varied_prompts
from .memory import best_layout
from .staircase import calls_on_busiest_rank
from .watch import Watched, calls_into, watched

# The batched-function exercise: 8 of the article's prompts on 2 processes, batches of 3, so every process pads.
CHECK_PROMPTS = default_prompts(repeat=1)[:8]
CHECK_NEW_TOKENS, CHECK_BATCH, CHECK_PROCESSES = 16, 3, 2
# The restore exercise's splits, and the calls exercise's fixed cases: the article's table, then counts that divide
# evenly (where `prompts // (processes * batch) + 1` is one too many) and uneven splits; random cases follow them.
RESTORE_CASES = ((10, 4), (12, 5), (23, 4))
CALLS_CASES = ((100, 1, 16), (100, 4, 16), (100, 5, 16), (96, 1, 16), (64, 4, 16), (10, 4, 1), (7, 3, 2), (1, 8, 16))


def verdict(ok: bool, success: str, hint: str) -> bool:
    """Print a one-line verdict for the learner and return it."""
    print(f"✓ {success}" if ok else f"✗ not yet: {hint}")
    return ok


def attempt(fn: Callable, *args, **kwargs) -> tuple[Any, str | None]:
    """Call the learner's function; an exception becomes a hint instead of a traceback."""
    try:
        return fn(*args, **kwargs), None
    except LaunchError as error:
        return None, error.message
    except Exception as error:  # the learner's code may raise anything: report it, do not crash the lesson
        return None, f"your function raised {type(error).__name__}: {error}"


def predict(guess: Any, actual: Any, tolerance: float = 0.0, unit: str = "") -> bool:
    """Predict, then run: ✓ when `guess` equals `actual` (numbers: within `tolerance`, relative); always show `actual`."""
    shown = f"{actual}{unit}"
    if guess is None:
        print(f"? no prediction written yet; the real value: {shown}")
        return False
    if isinstance(actual, (int, float)) and isinstance(guess, (int, float)) and tolerance:
        ok = abs(guess - actual) <= tolerance * abs(actual)
    else:
        ok = guess == actual
    print(f"{'✓' if ok else '✗'} you predicted {guess!r}{unit}; the real value: {shown}")
    return ok


def compare_runs(these: list[Completion], those: list[Completion], dtype: str) -> int:
    """Print how many completions are identical and, where some differ, after how many tokens; return the count."""
    differ = [(a.index, first_difference(a.token_ids, b.token_ids))
              for a, b in zip(these, those) if a.token_ids != b.token_ids]
    print(f"{len(these) - len(differ)}/{len(these)} completions identical ({dtype})")
    if differ:
        where = ", ".join(f"prompt {index} after {tokens} tokens" for index, tokens in differ[:8])
        print(f"the others part ways: {where}{' ...' if len(differ) > 8 else ''}"
              + (" (in half precision a different batch shape rounds differently)" if dtype != "float32" else ""))
    return len(these) - len(differ)


def first_difference(these: list[int], those: list[int]) -> int:
    """How many leading tokens two generations share."""
    return next((i for i, (a, b) in enumerate(zip(these, those)) if a != b), min(len(these), len(those)))


def check_squares(fn: Callable[[], list[int]]) -> bool:
    """Lesson 1: `fn`, run on 3 processes, must gather every rank's square itself, in rank order."""
    seen, problem = attempt(launch, watched, (fn,), num_processes=3, verbose=False, cpu=True)
    if problem:
        return verdict(False, "", problem + " (gather_object needs a list: wrap your value in [ ])")
    hint = _squares_hint(seen)
    return verdict(not hint, "3 processes gathered [0, 1, 4]", hint)


def _squares_hint(seen: Watched) -> str:
    """What is wrong with rank 0's call of the squares function; empty when it gathered [0, 1, 4] itself."""
    if seen.kit:
        return f"the kit's {seen.kit} gathered for you: build the Accelerator and call gather_object yourself"
    if not seen.gathers:
        return (f"process 0 returned {seen.result!r} without gathering: each process knows only its own rank; "
                "send its square to the others with gather_object([accelerator.process_index ** 2])")
    return "" if seen.result == [0, 1, 4] else f"3 processes returned {seen.result!r}, expected [0, 1, 4]"


@functools.cache
def padded_index_shares(count: int, processes: int) -> tuple[tuple[int, ...], ...]:
    """The prompt indices each of `processes` processes receives of `count` prompts, apply_padding=True."""
    return tuple(map(tuple, launch(who_gets_what, (count, True), num_processes=processes, verbose=False, cpu=True)))


def pair_up(shares: tuple[tuple[int, ...], ...], prompts: list[str]) -> list[list[tuple[int, str]]]:
    """Each index of each share with its prompt, as (index, prompt) pairs."""
    return [[(index, prompts[index]) for index in share] for share in shares]


def padded_pair_shares(count: int, processes: int) -> list[list[tuple[int, str]]]:
    """What each process receives of the article's first `count` prompts as (index, prompt) pairs, apply_padding=True."""
    return pair_up(padded_index_shares(count, processes), default_prompts())


def unknown_prompts(count: int) -> list[str]:
    """`count` prompts no answer can know in advance: drawn at random from a few varied ones, so texts repeat."""
    rng = random.Random()
    pool = rng.sample(sorted(set(varied_prompts())), max(1, count // 3))
    return [rng.choice(pool) for _ in range(count)]


def check_restore(fn: Callable[[list[list[tuple[int, str]]], int], list[tuple[int, str]]]) -> bool:
    """Lesson 2: `fn(shares, count)` must turn padded shares of (index, prompt) pairs back into one pair per prompt."""
    for count, processes in RESTORE_CASES:
        prompts = unknown_prompts(count)
        restored, problem = attempt(fn, pair_up(padded_index_shares(count, processes), prompts), count)
        hint = problem or _restore_hint(restored, prompts, processes)
        if hint:
            return verdict(False, "", hint)
    return verdict(True, "every prompt comes back once, with its index, in order", "")


def _restore_hint(restored: Any, prompts: list[str], processes: int) -> str:
    """What is wrong with one restored list; empty when it is one (index, prompt) pair per prompt, in order."""
    count = len(prompts)
    if restored == list(enumerate(prompts)):
        return ""
    if restored == list(range(count)):
        return "return the (index, prompt) pairs themselves, not just the numbers 0 ... count - 1"
    if isinstance(restored, list) and len(restored) < count:
        return (f"{count} prompts on {processes} processes gave only {len(restored)} pairs: prompts can repeat, so "
                "dropping duplicates by text loses real prompts; drop them by index")
    indices = [pair[0] if isinstance(pair, tuple) else None for pair in restored] if isinstance(restored, list) else []
    if indices == list(range(count)):
        return ("the indices are right but not every prompt is the one shares hold for it: take each pair from "
                "shares (the check's prompts change on every run, the article's list is not among them)")
    return f"{count} prompts on {processes} processes gave {restored!r:.160}"


@functools.cache
def _reference_rows() -> tuple[tuple[int, str, int], ...]:
    """run("batched") on the exercise's prompts: the rows a correct per-process function returns."""
    reference = run("batched", "tiny", CHECK_PROMPTS, num_processes=CHECK_PROCESSES, max_new_tokens=CHECK_NEW_TOKENS,
                    batch_size=CHECK_BATCH, verbose=False, progress=False, cpu=True)
    return tuple((c.index, c.text, c.generated_tokens) for c in reference.results)


def check_batched_function(fn: Callable) -> bool:
    """Lesson 3: `fn(folder, prompts, max_new_tokens, batch_size)`, launched, must return what run("batched") does."""
    expected = list(_reference_rows())
    seen, problem = attempt(launch, watched, (fn, TINY, CHECK_PROMPTS, CHECK_NEW_TOKENS, CHECK_BATCH),
                            num_processes=CHECK_PROCESSES, verbose=False, cpu=True)
    if problem:
        if "padding token" in problem:
            problem += " (Llama tokenizers have none: tokenizer.pad_token = tokenizer.eos_token)"
        return verdict(False, "", problem)
    try:
        rows = [(int(index), str(text), int(tokens)) for index, text, tokens in seen.result]
    except (TypeError, ValueError):
        return verdict(False, "", f"return a list of (index, text, generated tokens) tuples, got {seen.result!r:.120}")
    hint = _work_hint(seen) or _diagnose(rows, expected)
    return verdict(not hint, f"your function gives exactly what run(\"batched\") gives, {len(expected)} prompts on "
                   f"{CHECK_PROCESSES} processes", hint)


def _work_hint(seen: Watched) -> str:
    """How process 0 skipped the lesson's work (its own generate calls, in batches, on its share, gathered), or ""."""
    share = len(CHECK_PROMPTS) // CHECK_PROCESSES
    calls = math.ceil(share / CHECK_BATCH)
    if seen.kit:
        return f"the kit's {seen.kit} did the work: write the tokenize, generate and gather lines yourself"
    if not seen.batches:
        return ("your function made no generate call: it returned results made elsewhere; generate them from "
                "the prompts it is given")
    if not seen.gathers:
        return "process 0 returned only what it made itself: gather every process's results with gather_object"
    if sum(seen.batches) > share:
        return (f"process 0 generated for {sum(seen.batches)} prompts, its share is {share}: generate only the "
                "share split_between_processes gives it")
    if len(seen.batches) > calls:
        return (f"process 0 made {len(seen.batches)} generate calls for its {share} prompts: batch them, up to "
                f"batch_size={CHECK_BATCH} prompts per call ({calls} calls here)")
    return ""


def _diagnose(rows: list[tuple[int, str, int]], expected: list[tuple[int, str, int]]) -> str:
    """The first way `rows` differ from the reference, as a hint; empty when they are the same."""
    indices = [row[0] for row in rows]
    if sorted(indices) != list(range(len(expected))):
        return (f"got results for prompts {sorted(indices)}: gather every process's results with gather_object"
                if len(rows) < len(expected) else "some prompts are missing or doubled")
    if indices != sorted(indices):
        return f"the results come in the order {indices}: sort the gathered list by prompt index"
    if any(CHECK_PROMPTS[index] in text for index, text, _ in rows):
        return "the prompt is still in the text: keep only output[:, batch['input_ids'].shape[1]:]"
    if [row[1] for row in rows] == [row[1] for row in expected]:
        return ("the texts match but the token counts differ: count only up to and including the first EOS; "
                "what follows it in a batch is padding") if rows != expected else ""
    return _which_mistake([row[1] for row in rows])


def _which_mistake(texts: list[str]) -> str:
    """Name the usual mistake whose completions `texts` reproduce (right padding, BOS dropped), else a general hint."""
    model, tokenizer = load_model("tiny")
    half = len(CHECK_PROMPTS) // CHECK_PROCESSES
    shares = [CHECK_PROMPTS[start:start + half] for start in range(0, len(CHECK_PROMPTS), half)]
    for options, hint in (({"padding_side": "right"}, "the rows end in padding: pad on the left (padding_side=\"left\")"),
                          ({"add_special_tokens": False}, "BOS is missing: keep the special tokens "
                           "(no add_special_tokens=False)")):
        wrong = [c.text for share in shares
                 for c in generate_batched(model, tokenizer, share, CHECK_NEW_TOKENS, CHECK_BATCH, **options)]
        if wrong == texts:
            return hint
    return ("the completions differ from run(\"batched\"): pad on the left, keep BOS, pass the attention mask "
            "(**batch) and do_sample=False")


def check_calls(fn: Callable[[int, int, int], int]) -> bool:
    """Lesson 4: `fn(prompts, processes, batch_size)` must count the busiest process's generate calls."""
    for prompts, processes, batch in CALLS_CASES + random_workloads(40):
        found, problem = attempt(calls_into, fn, (prompts, processes, batch), [calls_on_busiest_rank])
        answer, kit = found or (None, "")
        expected = calls_on_busiest_rank(prompts, processes, batch)
        if kit:
            return verdict(False, "", f"that is the kit's own {kit}: write the count yourself, from how many prompts "
                           "the busiest process holds")
        if problem or answer != expected:
            return verdict(False, "", problem or f"for {prompts} prompts, {processes} processes, batches of {batch}: "
                           f"you said {answer!r}; the busiest process holds ceil({prompts} / {processes}) = "
                           f"{math.ceil(prompts / processes)} prompts, one call per batch of {batch}: {expected} calls")
    return verdict(True, "your count matches on every case, the article's table and random workloads included", "")


def random_workloads(count: int) -> tuple[tuple[int, int, int], ...]:
    """`count` random (prompts, processes, batch size) cases, new on every call, so no table of answers fits them."""
    rng = random.Random()
    return tuple((rng.randint(1, 300), rng.randint(1, 8), rng.randint(1, 32)) for _ in range(count))


@functools.cache
def varied_lengths() -> tuple[int, ...]:
    """The token length of each of the varied prompts, with tiny's tokenizer."""
    return tuple(len(ids) for ids in load_tokenizer("tiny")(varied_prompts()).input_ids)


def budget_cases() -> list[list[int]]:
    """The budget exercise's prompt lengths: the first 60 varied prompts, then a random set of another size."""
    rng = random.Random()
    return [list(varied_lengths()[:60]), rng.sample(varied_lengths(), rng.choice([*range(30, 60), *range(61, 91)]))]


def check_budget_batches(fn: Callable[[list[int], int, int], list[list[int]]]) -> bool:
    """Lesson 5: `fn(lengths, new_tokens, budget)` must cover every prompt once, keep to the budget, fill batches, pad less."""
    for lengths in budget_cases():
        found, problem = attempt(calls_into, fn, (lengths, 20, 2048), [budget_batches])
        batches, kit = found or (None, "")
        hint = (f"that is the kit's own {kit}: write the batching yourself" if kit else problem
                or _budget_hint(batches, lengths, 20, 2048))
        if hint:
            return verdict(False, "", hint)
    return verdict(True, "every prompt once, within budget, few batches, and less than half the padding of input-order "
                   "batches, on the lesson's prompts and on a random set", "")


def _budget_hint(batches: Any, lengths: list[int], new_tokens: int, budget: int) -> str:
    """What is wrong with one set of batches; empty when they pass every rule of the exercise."""
    try:
        positions = sorted(p for b in batches for p in b)
    except TypeError:
        return f"return a list of batches, each a list of prompt positions, got {batches!r:.120}"
    if positions != list(range(len(lengths))):
        return (f"for {len(lengths)} prompts some are missing or appear twice: put each position 0 ... "
                f"{len(lengths) - 1} of `lengths` in one batch (the check also tries prompts you cannot know in "
                "advance)")
    over = [b for b in batches if len(b) > 1 and len(b) * (max(lengths[p] for p in b) + new_tokens) > budget]
    if over:
        return (f"{len(over)} batch(es) hold more than {budget} padded tokens: count rows x (longest prompt + "
                "new tokens)")
    enough = len(budget_batches(lengths, new_tokens, budget)) * 3 // 2
    if len(batches) > enough:
        return (f"{len(batches)} batches, where filling each one up to the budget needs at most {enough}: every "
                "generate call costs a pass over the weights, so make them count")
    if padding(batches, lengths) >= padding(fixed_batches(len(lengths), 16), lengths) / 2:
        return "within budget, but the padding is not even halved: sort by length first"
    return ""


def padding(batches: list[list[int]], lengths: list[int]) -> float:
    """Padded prompt positions per real prompt token for a set of batches."""
    padded = sum(len(b) * max(lengths[p] for p in b) - sum(lengths[p] for p in b) for b in batches)
    return padded / sum(lengths)


GB = 10**9
# (weights, KV cache, one GPU's memory, GPUs, attention heads) in bytes: a 7B, a 13B, a 13B with a big cache,
# a 70B that needs the whole box, one of 8 GPUs whose 12 heads TP 8 does not divide, a 70B on too few GPUs.
LAYOUT_CASES = ((13.5 * GB, 4 * GB, 24 * GB, 4, 32), (26 * GB, 4 * GB, 24 * GB, 4, 40),
                (26 * GB, 40 * GB, 24 * GB, 4, 40), (70 * GB, 10 * GB, 24 * GB, 4, 32),
                (110 * GB, 10 * GB, 24 * GB, 8, 12), (140 * GB, 10 * GB, 24 * GB, 4, 64))


def check_layout(fn: Callable[[float, float, float, int, int], tuple[int, int] | None]) -> bool:
    """Lesson 6: `fn(weights, kv_cache, gpu_bytes, gpus, heads)` must give (replicas, tp_size), or None if nothing fits.

    The right answer is the smallest TP size that fits one copy (weights + KV cache) and divides both the GPUs
    and the heads; the GPUs left over hold more copies.
    """
    for weights, kv, gpu, gpus, heads in LAYOUT_CASES:
        answer, problem = attempt(fn, weights, kv, gpu, gpus, heads)
        expected = best_layout(weights + kv, gpu, gpus, heads)
        if problem or answer != expected:
            return verdict(False, "", problem or f"{weights / GB:g} GB of weights + {kv / GB:g} GB of KV cache on "
                           f"{gpus} x {gpu / GB:g} GB GPUs, {heads} heads: you said {answer!r}, the answer is "
                           f"{expected!r} (replicas, tp_size)")
    return verdict(True, "your layout matches on every box: the smallest TP that fits, the rest as copies", "")
