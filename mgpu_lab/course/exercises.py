"""Checks for the lessons' exercises and predictions: each prints a verdict and a hint, and returns True or False.

Every check draws its arguments at random on every call, beside a few fixed cases, so an answer written for the
check's inputs fails; no hint shows the expected answer of a case the check uses again.
"""

from __future__ import annotations

import functools
import numbers
import random
from typing import Any, Callable

import torch

from ..engine.batching import budget_batches, fixed_batches
from ..engine.results import Completion, first_difference
from ..launcher.launch import launch
from ..engine.models import load_tokenizer
from ..engine.prompts import default_prompts, varied_prompts
from .batched_check import check_batched_function  # noqa: F401  (lesson 3's check, imported from here)
from .demos import who_gets_what
from .memory import best_layout, bytes_per_gpu
from .staircase import calls_on_busiest_rank
from .verdicts import attempt, verdict
from .watch import Watched, calls_into, watched_everywhere

# The restore exercise's fixed splits (the lesson's, then two more uneven ones); random ones follow them.
RESTORE_CASES = ((10, 4), (12, 5), (23, 4))
# The calls exercise's fixed cases: the article's table, then counts that divide evenly (where
# `prompts // (processes * batch) + 1` is one too many) and uneven splits; random cases follow them.
CALLS_CASES = ((100, 1, 16), (100, 4, 16), (100, 5, 16), (96, 1, 16), (64, 4, 16), (10, 4, 1), (7, 3, 2), (1, 8, 16))


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


def check_squares(fn: Callable[[], list[int]]) -> bool:
    """Lesson 1: `fn`, run at two world sizes drawn at random, must gather each rank's square itself, in rank order.

    The gather hands every square back `shift` higher (a number drawn for each launch), so only a list that came out of
    the gather matches: one rebuilt in process 0 from its own arithmetic does not.
    """
    for processes in sorted(random.sample(range(2, 5), 2), reverse=True):  # 3 or 4 first: there rank != its square
        shift = random.randint(100, 999) * 1000
        seen, problem = attempt(launch, watched_squares, (fn, shift), num_processes=processes, verbose=False, cpu=True)
        if problem:
            return verdict(False, "", problem + (" (gather_object needs a list: wrap your value in [ ])"
                                                 if "not iterable" in problem else ""))
        hint = squares_hint(seen, shift)
        if hint:
            return verdict(False, "", hint)
    return verdict(True, "every process sent its own square and the gathered list came back in rank order, at two "
                   "world sizes", "")


def watched_squares(fn: Callable[[], list[int]], shift: int) -> list[Watched]:
    """Run on every process: `fn()`, watched, with a gather of every rank's square handed back `shift` higher."""
    return watched_everywhere(fn, retouch=functools.partial(shift_squares, shift))


def shift_squares(shift: int, parts: list) -> None:
    """When `parts` (what one gather received) is every rank's square, raise each by `shift`, in place."""
    plain, squares = [as_plain(part) for part in parts], [r * r for r in range(len(parts))]
    if plain not in (squares, [[square] for square in squares]):
        return
    for rank, part in enumerate(parts):
        if isinstance(part, torch.Tensor):
            part.add_(shift)
        elif isinstance(part, (list, tuple)):
            parts[rank] = type(part)(value + shift for value in part)
        else:
            parts[rank] = part + shift


def unshifted(value: Any, shift: int) -> Any:
    """A learner's result as they would see it outside the check: the gather's `shift` taken off again."""
    if isinstance(value, list):
        return [unshifted(item, shift) for item in value]
    return value - shift if isinstance(value, numbers.Number) and value >= shift else value


def squares_hint(seen: list[Watched], shift: int = 0) -> str:
    """What is wrong with one launch of the squares function; empty when every rank gathered its own square."""
    processes, result = len(seen), as_plain(seen[0].result)
    squares = [rank ** 2 for rank in range(processes)]
    kit = next((s.kit for s in seen if s.kit), "")
    if kit:
        return f"the kit's {kit} gathered for you: build the Accelerator and call gather_object yourself"
    if not seen[0].gathers:
        return (f"on {processes} processes, process 0 returned {result!r} without gathering: each process knows only "
                "its own rank; send its square to the others with gather_object([accelerator.process_index ** 2])")
    for rank, s in enumerate(seen):
        if not any(as_plain(sent) in ([rank ** 2], rank ** 2) for sent in s.sent):
            return (f"on {processes} processes, process {rank} sent {s.sent!r:.80} to the gather: each process sends "
                    "its own rank squared, and only that")
    if result == [square + shift for square in squares]:
        return ""
    if result == squares and shift:
        return (f"on {processes} processes, process 0 returned {result!r}, a list it made itself, not the one its "
                "gather returned: return the gathered list (only the gather tells process 0 the others' squares)")
    return (f"on {processes} processes, process 0 returned {unshifted(result, shift)!r:.80}: return the gathered "
            "list, in rank order")


def as_plain(value: Any) -> Any:
    """A tensor (accelerator.gather's answer) or a tuple as a list, so an answer is judged on its values."""
    value = value.tolist() if hasattr(value, "tolist") else value
    return list(value) if isinstance(value, tuple) else value


@functools.cache
def padded_index_shares(count: int, processes: int) -> tuple[tuple[int, ...], ...]:
    """The prompt indices each of `processes` processes receives of `count` prompts, apply_padding=True (launched)."""
    return tuple(map(tuple, launch(who_gets_what, (count, True), num_processes=processes, verbose=False, cpu=True)))


def padded_split(count: int, processes: int) -> list[list[int]]:
    """What split_between_processes(range(count), apply_padding=True) gives each process, computed here."""
    size, extra = divmod(count, processes)
    longest = size + (1 if extra else 0)
    shares = []
    for rank in range(processes):
        start = rank * size + min(rank, extra)
        share = list(range(start, start + size + (1 if rank < extra else 0)))
        shares.append(share + [count - 1] * (longest - len(share)))
    return shares


def pair_up(shares, prompts: list[str]) -> list[list[tuple[int, str]]]:
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


def restore_cases(extra: int = 4) -> list[tuple[int, int]]:
    """The fixed splits, then `extra` random ones (1-40 prompts on 2-8 processes), new on every call."""
    rng = random.Random()
    return [*RESTORE_CASES, *((rng.randint(1, 40), rng.randint(2, 8)) for _ in range(extra))]


def check_restore(fn: Callable[[list[list[tuple[int, str]]], int], list[tuple[int, str]]]) -> bool:
    """Lesson 2: `fn(shares, count)` must turn padded shares of (index, prompt) pairs back into one pair per prompt."""
    for count, processes in restore_cases():
        prompts = unknown_prompts(count)
        restored, problem = attempt(fn, pair_up(padded_split(count, processes), prompts), count)
        hint = problem or _restore_hint(restored, prompts, processes)
        if hint:
            return verdict(False, "", hint)
    return verdict(True, "every prompt comes back once, with its index, in order, on random splits too", "")


def as_pairs(restored: Any) -> list[tuple] | None:
    """The learner's pairs as tuples (lists and tuples alike), or None when it is not a list of pairs."""
    if not isinstance(restored, (list, tuple)) or any(isinstance(pair, (str, int)) for pair in restored):
        return None
    try:
        return [tuple(pair) for pair in restored]
    except TypeError:
        return None


def _restore_hint(restored: Any, prompts: list[str], processes: int) -> str:
    """What is wrong with one restored list; empty when it is one (index, prompt) pair per prompt, in order."""
    count, pairs = len(prompts), as_pairs(restored)
    if pairs == list(enumerate(prompts)):
        return ""
    if isinstance(restored, (list, tuple)) and list(restored) == list(range(count)):
        return "return the (index, prompt) pairs themselves, not just the numbers 0 ... count - 1"
    if pairs is not None and set(pairs) <= set(enumerate(prompts)):
        return _kept_pairs_hint(pairs, prompts, processes)
    indices = [pair[0] if len(pair) == 2 else None for pair in pairs] if pairs is not None else []
    if indices == list(range(count)):
        return ("the indices are right but not every prompt is the one shares hold for it: take each pair from "
                "shares (the check's prompts change on every run, the article's list is not among them)")
    return f"{count} prompts on {processes} processes gave {restored!r:.160}"


def _kept_pairs_hint(pairs: list[tuple], prompts: list[str], processes: int) -> str:
    """What is wrong with pairs that are all real (index, prompt) pairs: some doubled, some missing, or out of order."""
    count, indices = len(prompts), [index for index, _ in pairs]
    where = f"{count} prompts on {processes} processes"
    doubled = sorted({index for index in indices if indices.count(index) > 1})
    if doubled:
        return (f"{where}: index {doubled[0]} comes back {indices.count(doubled[0])} times: padding repeats the "
                "last prompts on short processes, so keep one pair per index")
    missing = sorted(set(range(count)) - set(indices))
    if missing:
        kept = {prompt for _, prompt in pairs}
        if len(kept) == len(pairs) and all(prompts[index] in kept for index in missing):
            return (f"{where} gave only {len(pairs)} pairs: prompts can repeat, so dropping duplicates by text loses "
                    "real prompts; drop them by index")
        return f"{where}: index {missing[0]} is missing: every index 0 ... {count - 1} comes back once"
    return f"{where}: every pair is there once, but in the order {indices!s:.80}: sort them by index"


def check_calls(fn: Callable[[int, int, int], int]) -> bool:
    """Lesson 4: `fn(prompts, processes, batch_size)` must count the busiest process's generate calls."""
    for prompts, processes, batch in CALLS_CASES + random_workloads(40):
        found, problem = attempt(calls_into, fn, (prompts, processes, batch), [calls_on_busiest_rank])
        answer, kit = found or (None, "")
        if kit:
            return verdict(False, "", f"that is the kit's own {kit}: write the count yourself, from how many prompts "
                           "the busiest process holds")
        if problem or answer != calls_on_busiest_rank(prompts, processes, batch):
            return verdict(False, "", problem or f"for {prompts} prompts, {processes} processes, batches of {batch}: "
                           f"you said {answer!r}, which is not it; the busiest process holds ceil(prompts / processes) "
                           "prompts, and makes one call per batch of them, the last one maybe short")
    return verdict(True, "your count matches on every case, the article's table and random workloads included", "")


def random_workloads(count: int) -> tuple[tuple[int, int, int], ...]:
    """`count` random (prompts, processes, batch size) cases, new on every call, so no table of answers fits them."""
    rng = random.Random()
    return tuple((rng.randint(1, 300), rng.randint(1, 8), rng.randint(1, 32)) for _ in range(count))


@functools.cache
def varied_lengths() -> tuple[int, ...]:
    """The token length of each of the varied prompts, with tiny's tokenizer."""
    return tuple(len(ids) for ids in load_tokenizer("tiny")(varied_prompts()).input_ids)


def budget_cases() -> list[tuple[list[int], int, int]]:
    """The budget exercise's (lengths, new tokens, budget): the lesson's case, then two drawn at random.

    One random case has a budget below the lesson's 2048 and many new tokens, the other a larger budget and few:
    a number copied from the lesson breaks the budget in one or leaves the batches half empty in the other.
    """
    rng = random.Random()

    def some_lengths() -> list[int]:
        return rng.sample(varied_lengths(), rng.choice([*range(30, 60), *range(61, 91)]))

    return [(list(varied_lengths()[:60]), 20, 2048),
            (some_lengths(), rng.randint(40, 120), rng.randint(1024, 1800)),
            (some_lengths(), rng.randint(4, 16), rng.randint(3500, 8000))]


def check_budget_batches(fn: Callable[[list[int], int, int], list[list[int]]]) -> bool:
    """Lesson 5: `fn(lengths, new_tokens, budget)` must cover every prompt once, keep to the budget, fill batches, pad less."""
    for lengths, new_tokens, budget in budget_cases():
        found, problem = attempt(calls_into, fn, (lengths, new_tokens, budget), [budget_batches])
        batches, kit = found or (None, "")
        hint = (f"that is the kit's own {kit}: write the batching yourself" if kit else problem
                or _budget_hint(batches, lengths, new_tokens, budget))
        if hint:
            return verdict(False, "", hint)
    return verdict(True, "every prompt once, within budget, few batches, and less than half the padding of input-order "
                   "batches, on the lesson's prompts and on random sets, budgets and new tokens", "")


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
        return (f"with new_tokens={new_tokens} and budget={budget}, {len(over)} batch(es) hold more than {budget} "
                "padded tokens: count rows x (longest prompt + new_tokens), with the arguments you are given")
    enough = len(budget_batches(lengths, new_tokens, budget)) * 3 // 2
    if len(batches) > enough:
        return (f"with new_tokens={new_tokens} and budget={budget}: {len(batches)} batches, where filling each one "
                f"up to the budget needs at most {enough}: every generate call costs a pass over the weights, so "
                "make them count (and use the arguments you are given)")
    if padding(batches, lengths) >= padding(fixed_batches(len(lengths), 16), lengths) / 2:
        return "within budget, but the padding is not even halved: sort by length first"
    return ""


def padding(batches: list[list[int]], lengths: list[int]) -> float:
    """Padded prompt positions per real prompt token for a set of batches."""
    padded = sum(len(b) * max(lengths[p] for p in b) - sum(lengths[p] for p in b) for b in batches)
    return padded / sum(lengths)


GB, GiB = 10**9, 2**30  # model sizes in GB; a GPU's memory as vendors state it ("24 GB") is in GiB
# (weights, KV cache, one GPU's memory, GPUs, attention heads) in bytes: a 7B, a 13B, a 13B of 25.5 GB that fits one
# "24 GB" GPU only because that is 24 GiB (25.8 GB), a 13B with a big cache,
# a 70B that needs the whole box, one of 8 GPUs whose 12 heads TP 8 does not divide, a 70B on too few GPUs,
# a copy that fills two GPUs to the last byte (it fits), and one on 6 GPUs that needs TP 3 (not a power of 2).
LAYOUT_CASES = ((13.5 * GB, 4 * GB, 24 * GiB, 4, 32), (26 * GB, 4 * GB, 24 * GiB, 4, 40),
                (22 * GB, 3.5 * GB, 24 * GiB, 4, 40),
                (26 * GB, 40 * GB, 24 * GiB, 4, 40), (70 * GB, 10 * GB, 24 * GiB, 4, 32),
                (110 * GB, 10 * GB, 24 * GiB, 8, 12), (140 * GB, 10 * GB, 24 * GiB, 4, 64),
                (40 * GiB, 8 * GiB, 24 * GiB, 4, 32), (52 * GB, 8 * GB, 24 * GiB, 6, 48))
GPU_SIZES = (16, 24, 32, 40, 48, 80, 94, 141)  # GiB: common cards
HEADS = (8, 12, 16, 20, 24, 25, 32, 40, 48, 52, 56, 64, 96, 128)


def random_boxes(count: int) -> list[tuple[float, float, float, int, int]]:
    """`count` random boxes: a model of 0.2-1.3x the whole box's memory, any GPU count 1-8, heads of real models."""
    rng = random.Random()
    boxes = []
    for _ in range(count):
        gpu, gpus = rng.choice(GPU_SIZES) * GiB, rng.randint(1, 8)
        need = gpu * gpus * rng.uniform(0.05, 1.3)
        kv = need * rng.uniform(0.0, 0.5)
        boxes.append((need - kv, kv, gpu, gpus, rng.choice(HEADS)))
    return boxes


def check_layout(fn: Callable[[float, float, float, int, int], tuple[int, int] | None]) -> bool:
    """Lesson 6: `fn(weights, kv_cache, gpu_bytes, gpus, heads)` must give (replicas, tp_size), or None if nothing fits.

    The right answer is the smallest TP size that fits one copy (weights + KV cache) and divides both the GPUs
    and the heads; the GPUs left over hold more copies.
    """
    for box in [*LAYOUT_CASES, *random_boxes(30)]:
        found, problem = attempt(calls_into, fn, box, [best_layout])
        answer, kit = found or (None, "")
        hint = (f"that is the kit's own {kit}: write the search over TP sizes yourself" if kit else problem
                or layout_hint(answer, *box))
        if hint:
            return verdict(False, "", hint)
    return verdict(True, "your layout matches on every box, the lesson's and random ones: the smallest TP that fits, "
                   "the rest as copies", "")


def layout_hint(answer: Any, weights: float, kv: float, gpu: float, gpus: int, heads: int) -> str:
    """Which rule `answer` breaks for one box, without giving the box's answer; empty when it is right."""
    expected, plain = best_layout(weights + kv, gpu, gpus, heads), as_plain(answer)
    if plain == (list(expected) if expected else None):
        return ""
    box = (f"{weights / GB:.1f} GB of weights + {kv / GB:.1f} GB of KV cache on {gpus} x {gpu / GiB:g} GiB GPUs, "
           f"{heads} heads: you said {answer!r}")
    if expected is None:
        return f"{box}, but no TP size that divides the GPUs and the heads fits one copy: return None"
    if not (isinstance(plain, list) and len(plain) == 2 and all(isinstance(n, numbers.Integral) for n in plain)):
        return f"{box}: return (replicas, tp_size), two whole numbers, or None when nothing fits"
    replicas, tp = plain
    if plain[::-1] == list(expected):
        return f"{box}: that reads as (tp_size, replicas); return (replicas, tp_size), replicas first"
    if tp < 1 or gpus % tp or heads % tp:
        return f"{box}: tp_size must divide both the {gpus} GPUs and the {heads} heads"
    if (weights + kv) / tp > gpu:
        return f"{box}: with TP {tp} each GPU holds (weights + KV cache) / {tp}, more than one GPU's memory"
    if replicas != gpus // tp:
        return f"{box}: with TP {tp} the {gpus} GPUs hold {gpus} // {tp} copies; replicas come first"
    if bytes_per_gpu(weights, kv, expected[1]) == gpu:
        return (f"{box}: a smaller TP size fills each GPU to the last byte, and that fits: a copy fits when it needs "
                "at most (<=) one GPU's memory")
    return f"{box}: a smaller TP size also fits and divides both; the smallest leaves the most GPUs for copies"
