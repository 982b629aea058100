"""Lesson 3's exercise check: the learner's batched per-process function, launched on inputs drawn at random."""

from __future__ import annotations

import functools
import math
from collections import Counter
import random
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..engine.generate import generate_batched, prompt_lengths
from ..launcher.launch import launch
from ..engine.models import TINY, load_model, load_tokenizer
from ..engine.prompts import default_prompts, varied_prompts
from .verdicts import attempt, verdict
from .watch import Watched, watched_everywhere

SHORTEST_POOL = 40  # the pool's prompts have up to this many tokens: short enough to run in seconds on a CPU
# A prompt of the pool that tiny answers with EOS after 8 new tokens, where every other one of the pool runs 10 or more:
# planted in every draw in a batch of several rows, it ends its row early, so padding follows an EOS in that batch.
EARLY_EOS = ("was a bright cold day in April, and the clocks were striking thirteen. It is a truth universally "
             "acknowledged,")
EARLY_EOS_TOKENS = 8


@dataclass(frozen=True)
class BatchedCase:
    """One draw of the check's arguments: no answer can know them in advance."""

    prompts: list[str]
    max_new_tokens: int
    batch_size: int
    processes: int

    def shares(self) -> list[list[int]]:
        """The prompt indices each process holds under split_between_processes (contiguous, no padding)."""
        return contiguous_shares(len(self.prompts), self.processes)


def contiguous_shares(count: int, processes: int) -> list[list[int]]:
    """The indices of `count` prompts each of `processes` processes holds under split_between_processes."""
    size, extra = divmod(count, processes)
    starts = [rank * size + min(rank, extra) for rank in range(processes + 1)]
    return [list(range(starts[rank], starts[rank + 1])) for rank in range(processes)]


def crowded_positions(count: int, processes: int, batch_size: int) -> list[int]:
    """The positions that share a generate call with another row, whether shares are contiguous blocks or strided."""
    def batch_rows(shares: list[list[int]]) -> dict[int, int]:
        return {index: len(share[start:start + batch_size]) for share in shares
                for start in range(0, len(share), batch_size) for index in share[start:start + batch_size]}

    blocks = batch_rows(contiguous_shares(count, processes))
    strided = batch_rows([list(range(rank, count, processes)) for rank in range(processes)])
    return [index for index in range(count) if blocks[index] > 1 and strided[index] > 1]


@functools.cache
def prompt_pool() -> tuple[str, ...]:
    """The article's ten first lines and the varied set's short prompts."""
    varied = sorted(set(varied_prompts()))
    short = [p for p, n in zip(varied, prompt_lengths(load_tokenizer("tiny"), varied)) if n <= SHORTEST_POOL]
    return tuple(default_prompts(repeat=1) + short)


def draw_case(rng: random.Random | None = None) -> BatchedCase:
    """A fresh case: 2 or 3 processes, batches of 2-4, 10-20 new tokens, enough prompts that process 0 makes 2+ calls,
    and EARLY_EOS at a random place where it shares a batch, so one row always stops early inside a padded batch."""
    rng = rng or random.Random()
    processes, batch_size = rng.randint(2, 3), rng.randint(2, 4)
    count = rng.randint(processes * batch_size + 1, processes * batch_size * 2)
    others = [prompt for prompt in prompt_pool() if prompt != EARLY_EOS]
    prompts = [rng.choice(others) for _ in range(count)]
    prompts[rng.choice(crowded_positions(count, processes, batch_size))] = EARLY_EOS
    return BatchedCase(prompts, rng.randint(EARLY_EOS_TOKENS + 2, 20), batch_size, processes)


def reference_rows(case: BatchedCase) -> list[tuple[int, str, int]]:
    """What run("batched") returns for the case, made here with one thread as each launched process has."""
    model, tokenizer = load_model("tiny")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = [(index, c.text, c.generated_tokens) for share in case.shares()
                for index, c in zip(share, generate_batched(model, tokenizer, [case.prompts[i] for i in share],
                                                            case.max_new_tokens, case.batch_size))]
    finally:
        torch.set_num_threads(threads)
    return rows


def check_batched_function(fn: Callable, case: BatchedCase | None = None) -> bool:
    """Lesson 3: `fn(folder, prompts, max_new_tokens, batch_size)`, launched, must return what run("batched") does."""
    case = case or draw_case()
    seen, problem = attempt(launch, watched_everywhere, (fn, TINY, case.prompts, case.max_new_tokens,
                            case.batch_size), num_processes=case.processes, verbose=False, cpu=True)
    if problem:
        if "padding token" in problem:
            problem += " (Llama tokenizers have none: tokenizer.pad_token = tokenizer.eos_token)"
        return verdict(False, "", problem)
    rows = as_rows(seen[0].result)
    if rows is None:
        return verdict(False, "", "return a list of (index, text, generated tokens), one per prompt, got "
                       f"{seen[0].result!r:.120}")
    hint = work_hint(seen, case) or diagnose(rows, reference_rows(case), seen, case)
    return verdict(not hint, f"your function gives exactly what run(\"batched\") gives: {len(case.prompts)} prompts "
                   f"drawn at random, {case.processes} processes, batches of {case.batch_size}, "
                   f"{case.max_new_tokens} new tokens", hint)


def as_rows(result: Any) -> list[tuple[int, str, int]] | None:
    """The learner's result as (index, text, tokens) tuples, whatever sequences hold them; None if it is not that."""
    try:
        return [(int(index), str(text), int(tokens)) for index, text, tokens in result]
    except (TypeError, ValueError):
        return None


def work_hint(seen: list[Watched], case: BatchedCase) -> str:
    """How a process skipped the lesson's work (its own generate calls, in batches, on its share, gathered), or ""."""
    kit = next((s.kit for s in seen if s.kit), "")
    if kit:
        return f"the kit's {kit} did the work: write the tokenize, generate and gather lines yourself"
    if not any(s.calls for s in seen):
        return ("your function made no generate call: it returned results made elsewhere; generate them from "
                "the prompts it is given")
    if not seen[0].gathers:
        return "process 0 returned only what it made itself: gather every process's results with gather_object"
    made = sum(sum(s.batches) for s in seen)
    if made != len(case.prompts):
        return (f"{case.processes} processes generated for {made} prompts in all, for {len(case.prompts)} prompts: "
                "each process generates only the share split_between_processes gives it")
    for rank, (s, share) in enumerate(zip(seen, map(len, case.shares()))):
        calls = math.ceil(share / case.batch_size)
        if sum(s.batches) != share:
            return (f"process {rank} generated for {sum(s.batches)} prompts, where its share holds {share}: every "
                    "process generates its own share itself, at the same time as the others")
        if max(s.batches, default=0) > case.batch_size or len(s.batches) != calls:
            return (f"process {rank} made {len(s.batches)} generate call(s) of {s.batches} rows for its "
                    f"{share} prompts; batch_size={case.batch_size} means {calls} calls of at most "
                    f"{case.batch_size} rows: one call per chunk of the share")
    return rows_hint(seen, case)


def rows_hint(seen: list[Watched], case: BatchedCase) -> str:
    """Whether the generate calls' rows, over every process, are the prompts given, each once; "" when they are (or
    when a call's rows cannot be read apart from their padding, which a later hint names)."""
    calls = [call for s in seen for call in s.calls]
    if any(call.no_mask or len(call.prompts) != call.rows for call in calls):
        return ""
    tokenizer = load_tokenizer("tiny")
    edges = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}

    def bare(ids: Any) -> tuple[int, ...]:
        ids = list(ids)
        while ids and ids[0] in edges:
            ids.pop(0)
        return tuple(ids)

    given = Counter(bare(ids) for ids in tokenizer(case.prompts, add_special_tokens=False).input_ids)
    if Counter(bare(row) for call in calls for row in call.prompts) != given:
        return ("the generate calls' rows are not the prompts the function was given, each once: generate from the "
                "prompts of each process's share")
    return ""


def diagnose(rows: list[tuple[int, str, int]], expected: list[tuple[int, str, int]], seen: list[Watched],
             case: BatchedCase) -> str:
    """The first way `rows` differ from the reference, named from what the function did; empty when they match."""
    indices = [row[0] for row in rows]
    if sorted(indices) != list(range(len(expected))):
        return (f"got results for prompts {sorted(indices)}: gather every process's results with gather_object"
                if len(rows) < len(expected) else "some prompts are missing or doubled")
    if indices != sorted(indices):
        return f"the results come in the order {indices}: sort the gathered list by prompt index"
    if rows == expected:
        return ""
    if any(case.prompts[index] in text for index, text, _ in rows):
        return "the prompt is still in the text: keep only output[:, batch['input_ids'].shape[1]:]"
    return call_hint([call for s in seen for call in s.calls], case) or (
        ("the texts match but the token counts differ: count only up to and including the first EOS; what follows "
         "it in a batch is padding") if [r[1] for r in rows] == [r[1] for r in expected] else
        "the completions differ from run(\"batched\"): greedy decoding (do_sample=False) on left-padded batches "
        "with BOS and the attention mask")


def call_hint(calls: list, case: BatchedCase) -> str:
    """The mistake the generate calls themselves show (new tokens, padding side, BOS, mask), or ""."""
    asked = {call.max_new_tokens for call in calls}
    if asked != {case.max_new_tokens}:
        return (f"your generate calls asked for max_new_tokens={sorted(asked, key=str)}, the check passed "
                f"{case.max_new_tokens}: use the function's max_new_tokens argument")
    if any(call.right_padded for call in calls):
        return "the rows end in padding: pad on the left (padding_side=\"left\")"
    if any(call.bos_missing for call in calls):
        return "BOS is missing: keep the special tokens (no add_special_tokens=False)"
    if any(call.no_mask for call in calls):
        return "the padding is read as text: pass the attention mask too (generate(**batch, ...))"
    return ""
