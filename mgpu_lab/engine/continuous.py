"""Continuous batching through transformers' scheduler: paged attention, requests join and leave each step."""

from __future__ import annotations

import inspect
import math
import warnings
from typing import Callable

import torch
from transformers import GenerationConfig
from transformers.generation.configuration_utils import ContinuousBatchingConfig

from .generate import Work, check_context, completion, eos_ids
from .models import quiet_transformers
from .results import Completion

PAGED = "paged|sdpa"
PAGE_SIZE = 256


@torch.no_grad()  # not inference_mode: the scheduler's own thread updates tensors made here in place
def continuous_items(model, tokenizer, work: Work, token_budget: int,
                     on_batch: Callable[[list[Completion]], None] | None = None) -> tuple[list[Completion], int]:
    """Stream the work's items through the scheduler: the completions, as they finished, and the steps run.

    `on_batch` sees each completion as soon as it finishes. `token_budget` caps the tokens one scheduler step
    processes. The paged KV cache is sized for exactly this workload: left to itself it claims a share of free
    memory, which on a CPU means system RAM per process.
    """
    check_context(model, work.items, [len(row) for row in work.ids], work.max_new_tokens)
    if not work.items:
        return [], 0
    config = GenerationConfig(max_new_tokens=work.max_new_tokens, do_sample=False,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
                              min_new_tokens=work.max_new_tokens if work.force_length else None)
    previous = model.config._attn_implementation
    with warnings.catch_warnings(), quiet_transformers():  # the scheduler's notes about NCCL are noise here
        warnings.simplefilter("ignore")
        model.set_attn_implementation(PAGED)
        try:
            return _stream(model, tokenizer, work, config, cache_config(work, token_budget), on_batch)
        finally:
            model.set_attn_implementation(previous)


def _stream(model, tokenizer, work: Work, config, cb_config, on_batch) -> tuple[list[Completion], int]:
    """Add every request, then collect each one as the scheduler finishes it; also count the scheduler's steps."""
    stop_ids = eos_ids(model, tokenizer)
    completions = []
    with model.continuous_batching_context_manager(generation_config=config, continuous_batching_config=cb_config,
                                                   block=True, timeout=5) as manager:
        by_request = dict(zip(manager.add_requests(work.ids, max_new_tokens=config.max_new_tokens), work.items))
        while len(completions) < len(work.items):
            output = manager.get_result(timeout=1)
            if output is None:
                if not manager.is_running():
                    raise RuntimeError("The continuous-batching scheduler stopped before every prompt finished.")
                continue
            if output.error:
                raise RuntimeError(f"The continuous-batching scheduler failed a request: {output.error}")
            if output.is_finished():
                done = completion(tokenizer, by_request[output.request_id], list(output.generated_tokens),
                                  stop_ids, len(output.prompt_ids))  # no row is padded
                if on_batch:
                    on_batch([done])
                completions.append(done)
        steps = getattr(manager, "current_batch", 0)  # forward passes run; 5.17 sets it in the scheduler's thread
    return completions, steps


def cache_config(work: Work, token_budget: int) -> ContinuousBatchingConfig:
    """Pages enough for every request at full length at once, and at most `token_budget` tokens per step."""
    pages = sum(math.ceil((len(ids) + work.max_new_tokens) / PAGE_SIZE) for ids in work.ids)
    # transformers 5.24 calls a page `page_size`; earlier 5.x releases (5.17, seen on a GPU box) `block_size`.
    size = "page_size" if "page_size" in inspect.signature(ContinuousBatchingConfig).parameters else "block_size"
    return ContinuousBatchingConfig(**{size: PAGE_SIZE}, num_blocks=pages + 1,
                                    max_batch_tokens=max(token_budget, max(len(ids) for ids in work.ids)))
