"""The generation modes: each `Mode` says how it groups prompts, which knob sizes its batches, how it splits them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .batching import budget_batches, fixed_batches, sorted_batches
from .generate import Decoder, generate_decode
from .lean import compiled_decode, lean_decode

# (prompt lengths, the knob's value, max_new_tokens) -> batches, as lists of positions into the lengths
Batcher = Callable[[list[int], int, int], list[list[int]]]


@dataclass(frozen=True)
class Mode:
    """Everything the runner, the summary, the report and the benchmark need to know about one mode."""

    about: str
    knob: str | None = None  # the RunConfig field that sizes its batches: "batch_size", "token_budget", or None
    batches: Batcher | None = None  # None: the continuous-batching scheduler regroups requests at every step
    balanced: bool = False  # split prompts over processes by token count instead of by count
    decoder: Decoder = generate_decode  # what decodes a batch: model.generate, or one of engine/lean.py's loops


MODES = {
    "naive": Mode("one generate call per prompt (the article's first program)",
                  batches=lambda lengths, _, __: fixed_batches(len(lengths), 1)),
    "batched": Mode("batches of --batch-size in input order (the article's second program)", knob="batch_size",
                    batches=lambda lengths, size, _: fixed_batches(len(lengths), size)),
    "sorted": Mode("batches of --batch-size prompts of similar length, order restored", knob="batch_size",
                   batches=lambda lengths, size, _: sorted_batches(lengths, size)),
    "budget": Mode("length-sorted batches capped at --token-budget padded tokens", knob="token_budget",
                   batches=lambda lengths, budget, new: budget_batches(lengths, new, budget)),
    "balanced": Mode("token-budget batches, prompts split over processes by token count", knob="token_budget",
                     batches=lambda lengths, budget, new: budget_batches(lengths, new, budget), balanced=True),
    "lean": Mode("token-budget batches split by token count, decoded by the kit's own greedy loop: one prefill, "
                 "one forward per step, rows leave as they end", knob="token_budget",
                 batches=lambda lengths, budget, new: budget_batches(lengths, new, budget), balanced=True,
                 decoder=lean_decode),
    "compiled": Mode("batches of --batch-size prompts of similar length over a static KV cache, each decode step "
                     "one torch.compile'd call (a GPU technique)", knob="batch_size",
                     batches=lambda lengths, size, _: sorted_batches(lengths, size), decoder=compiled_decode),
    "continuous": Mode("continuous batching: transformers' paged-attention scheduler, --token-budget tokens "
                       "per step", knob="token_budget"),
}


def mode_names() -> list[str]:
    """Every generation mode the runner, the CLI and the benchmark accept."""
    return list(MODES)


def lookup_mode(name: str) -> Mode:
    """The Mode behind a name, or an error listing the known ones."""
    if name not in MODES:
        raise ValueError(f"Unknown mode {name!r}. Known modes: {', '.join(MODES)}.")
    return MODES[name]
