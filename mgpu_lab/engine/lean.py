"""Greedy decoding without `generate`: one prefill, then one forward per step, and nothing else per step.

`model.generate` runs logits processors, stopping criteria and cache bookkeeping at every step, and keeps computing
rows that already ended. `lean_decode` prefills a left-padded batch in groups of similar length (logits at the last
position only), takes the argmax, and drops each row from the batch (and from the KV cache) as soon as it ends.
`static_decode` keeps the batch whole and its KV cache preallocated (a `StaticCache`), so every step has the same
shapes and one compiled step (`torch.compile`) serves them all: the host work of a step becomes one call. Both
return what `generate` returns (prompt, new tokens, padding after an EOS), so the caller counts tokens the same way.
"""

from __future__ import annotations

import inspect

import torch
from transformers import BatchEncoding, DynamicCache, StaticCache

from .generate import Work

CACHE_BUCKET = 128  # static caches are a multiple of this long, so one compiled step serves most batches
STEP_ATTRIBUTE = "_mgpu_lab_compiled_step"  # where a model keeps its compiled decode step between batches
PREFILL_SLACK = 0.1  # a prefill group may compute this much padding beyond its real tokens


def cache_argument(model) -> str:
    """How the model's forward names its KV cache: `cache` (transformers >= 5.25) or `past_key_values` (before)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def left_positions(mask: torch.Tensor) -> torch.Tensor:
    """Each token's position in its own row of a left-padded batch (padding gets 0), as `generate` numbers them."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def pick(logits: torch.Tensor, stops: torch.Tensor | None) -> torch.Tensor:
    """The greedy next token of each row; `stops` (ids), when given, may not be picked (min_new_tokens)."""
    if stops is not None:
        logits = logits.index_fill(-1, stops, float("-inf"))
    return logits.argmax(-1)


def tight_groups(lengths: list[int]) -> list[list[int]]:
    """Rows in groups of similar length (shortest first): a group's padding stays under PREFILL_SLACK of its tokens."""
    groups: list[list[int]] = []
    total = 0
    for row in sorted(range(len(lengths)), key=lambda r: (lengths[r], r)):
        if groups and (len(groups[-1]) + 1) * lengths[row] <= (1 + PREFILL_SLACK) * (total + lengths[row]):
            groups[-1].append(row)
            total += lengths[row]
        else:
            groups.append([row])
            total = lengths[row]
    return groups


def tight_prefill(model, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, DynamicCache]:
    """Prefill a left-padded batch group by group, each cut to its own longest prompt; one KV cache for the batch.

    A length-sorted batch of varied prompts is still about 40% padding, all of it computed in one prefill; here
    each group computes its own tokens (and under PREFILL_SLACK more), and its keys and values are padded on the
    left (masked, as padding is) to the batch's width. Returns the last position's logits of every row, in order.
    """
    width, lengths = ids.shape[1], mask.sum(-1).tolist()
    groups = tight_groups(lengths)
    last, layers = [], []
    for group in groups:
        rows, w = torch.tensor(group, device=ids.device), max(lengths[row] for row in group)
        part, part_mask, cache = ids[rows, width - w:], mask[rows, width - w:], DynamicCache(config=model.config)
        out = model(input_ids=part, attention_mask=part_mask, position_ids=left_positions(part_mask), use_cache=True,
                    logits_to_keep=1, **{cache_argument(model): cache})
        last.append(out.logits[:, -1])
        layers.append([[torch.nn.functional.pad(t, (0, 0, width - w, 0)) for t in (layer.keys, layer.values)]
                       for layer in cache.layers])
    order = torch.tensor([row for group in groups for row in group], device=ids.device).argsort()
    whole = DynamicCache(config=model.config)
    for index in range(len(layers[0])):
        keys, values = (torch.cat([group[index][kind] for group in layers])[order] for kind in (0, 1))
        whole.update(keys, values, index)
    return torch.cat(last)[order], whole


@torch.inference_mode()
def lean_decode(model, batch: BatchEncoding, work: Work, pad_id: int, stop_ids: set[int]) -> torch.Tensor:
    """Greedy tokens for a left-padded batch; a row leaves the batch at its first stop id (unless the work forces its length)."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    stops = torch.tensor(sorted(stop_ids), device=ids.device)
    banned = stops if work.force_length else None
    last, cache = tight_prefill(model, ids, mask)
    token, rows = pick(last, banned), torch.arange(ids.shape[0], device=ids.device)
    new = torch.full((ids.shape[0], work.max_new_tokens), pad_id, dtype=ids.dtype, device=ids.device)
    position = left_positions(mask)[:, -1]
    for step in range(work.max_new_tokens):
        new[rows, step] = token
        running = torch.ones_like(token, dtype=torch.bool) if work.force_length else ~torch.isin(token, stops)
        if step == work.max_new_tokens - 1 or not running.any():
            break
        if not running.all():  # the ended rows leave the batch and the cache
            keep = running.nonzero().squeeze(-1)
            cache.batch_select_indices(keep)
            rows, token, mask, position = rows[keep], token[keep], mask[keep], position[keep]
        mask, position = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=-1), position + 1
        out = model(input_ids=token[:, None], attention_mask=mask, position_ids=position[:, None], use_cache=True,
                    **{cache_argument(model): cache})
        token = pick(out.logits[:, -1], banned)
    return torch.cat([ids, new[:, :step + 1]], dim=-1)


class CompiledStep:
    """One decode step over a static KV cache, compiled once per (model, batch rows, cache length) and reused."""

    def __init__(self, model, compile_step: bool = True, backend: str = "inductor"):
        self.model, self.cache_argument = model, cache_argument(model)
        self.step = (torch.compile(self._forward, fullgraph=True, dynamic=False, backend=backend) if compile_step
                     else self._forward)

    def _forward(self, token, mask, position, cache_position, cache):
        """The model's forward for one new token per row; logits of that token."""
        return self.model(input_ids=token, attention_mask=mask, position_ids=position, cache_position=cache_position,
                          use_cache=True, **{self.cache_argument: cache}).logits[:, -1]


@torch.inference_mode()
def static_decode(model, batch: BatchEncoding, work: Work, pad_id: int, stop_ids: set[int],
                  step: CompiledStep | None = None) -> torch.Tensor:
    """Greedy tokens for a left-padded batch over a StaticCache: every decode step has the same shapes.

    `step`: the (compiled) decode step to reuse across batches; None: an uncompiled one. The attention mask spans
    the whole cache from the start (future positions 0, set to 1 as they are written), so its shape never changes;
    the cache's length is rounded up to CACHE_BUCKET, so batches of other widths (not other row counts) reuse it.
    """
    ids, mask = batch["input_ids"], batch["attention_mask"]
    rows, width = ids.shape
    length = -(-(width + work.max_new_tokens) // CACHE_BUCKET) * CACHE_BUCKET  # batches of other widths reuse the step
    stops = torch.tensor(sorted(stop_ids), device=ids.device)
    banned = stops if work.force_length else None
    cache = StaticCache(config=model.config, max_cache_len=length)
    full = torch.cat([mask, mask.new_zeros(rows, length - width)], dim=-1)
    out = model(input_ids=ids, attention_mask=full[:, :width], position_ids=left_positions(mask),
                cache_position=torch.arange(width, device=ids.device), use_cache=True, logits_to_keep=1,
                **{cache_argument(model): cache})
    token, ended = pick(out.logits[:, -1], banned), torch.zeros(rows, dtype=torch.bool, device=ids.device)
    position, step = left_positions(mask)[:, -1:], step or CompiledStep(model, compile_step=False)
    new = torch.full((rows, work.max_new_tokens), pad_id, dtype=ids.dtype, device=ids.device)
    for index in range(work.max_new_tokens):
        new[:, index] = torch.where(ended, pad_id, token)
        ended |= torch.isin(token, stops) & (not work.force_length)
        if index == work.max_new_tokens - 1 or bool(ended.all()):
            break
        full[:, width + index] = 1
        position = position + 1
        token = pick(step.step(token[:, None], full, position, torch.tensor([width + index], device=ids.device),
                               cache), banned)
    return torch.cat([ids, new[:, :index + 1]], dim=-1)


def compiled_decode(model, batch: BatchEncoding, work: Work, pad_id: int, stop_ids: set[int]) -> torch.Tensor:
    """static_decode with the model's one compiled step (made on its first batch, reused by every later one)."""
    if not hasattr(model, STEP_ATTRIBUTE):
        setattr(model, STEP_ATTRIBUTE, CompiledStep(model))
    return static_decode(model, batch, work, pad_id, stop_ids, getattr(model, STEP_ATTRIBUTE))
