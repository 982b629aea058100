"""Continuous batching through transformers' scheduler: paged attention, requests join and leave each step."""

from __future__ import annotations

import inspect
import math
import warnings
from typing import Callable

import torch
from transformers import GenerationConfig
from transformers.generation.configuration_utils import ContinuousBatchingConfig

from .generate import check_context, count_until_eos, eos_ids, token_ids
from .results import Completion
from .validate import prompt_list, whole_number
from .models import quiet_transformers

PAGED = "paged|sdpa"
PAGE_SIZE = 256


@torch.no_grad()  # not inference_mode: the scheduler's own thread updates tensors made here in place
def generate_continuous(model, tokenizer, prompts: list[str], max_new_tokens: int, token_budget: int,
                        indices: list[int] | None = None, force_length: bool = False) -> list[Completion]:
    """Hand every prompt to the continuous-batching scheduler at once; completions come back in input order."""
    items = list(zip(range(len(prompts)) if indices is None else indices, prompt_list(prompts)))
    whole_number("max_new_tokens", max_new_tokens)
    budget = whole_number("token_budget", token_budget)
    completions, _ = continuous_items(model, tokenizer, items, max_new_tokens, budget, force_length)
    return sorted(completions, key=lambda c: c.index)


@torch.no_grad()
def continuous_items(model, tokenizer, items: list[tuple[int, str]], max_new_tokens: int, token_budget: int,
                     force_length: bool = False,
                     on_batch: Callable[[list[Completion]], None] | None = None,
                     ids: list[list[int]] | None = None) -> tuple[list[Completion], int]:
    """Stream (index, prompt) items through the scheduler: the completions, as they finished, and the steps run.

    `on_batch` sees each completion as soon as it finishes; `ids`: the items' token ids, if the caller has them.
    `token_budget` caps the tokens one scheduler step processes. The paged KV cache is sized for exactly this
    workload: left to itself it claims a share of free memory, which on a CPU means system RAM per process.
    """
    inputs = token_ids(tokenizer, [p for _, p in items]) if ids is None else ids
    check_context(model, items, [len(row) for row in inputs], max_new_tokens)
    if not items:
        return [], 0
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                              pad_token_id=tokenizer.eos_token_id,
                              min_new_tokens=max_new_tokens if force_length else None)
    previous = model.config._attn_implementation
    with warnings.catch_warnings(), quiet_transformers():  # the scheduler's notes about NCCL are noise here
        warnings.simplefilter("ignore")
        model.set_attn_implementation(PAGED)
        try:
            return _stream(model, tokenizer, items, inputs, config,
                           cache_config(inputs, max_new_tokens, token_budget), on_batch)
        finally:
            model.set_attn_implementation(previous)


def _stream(model, tokenizer, items, inputs, config, cb_config, on_batch) -> tuple[list[Completion], int]:
    """Add every request, then collect each one as the scheduler finishes it; also count the scheduler's steps."""
    stop_ids = eos_ids(model, tokenizer)
    completions = []
    with model.continuous_batching_context_manager(generation_config=config, continuous_batching_config=cb_config,
                                                   block=True, timeout=5) as manager:
        by_request = dict(zip(manager.add_requests(inputs, max_new_tokens=config.max_new_tokens), items))
        while len(completions) < len(items):
            output = manager.get_result(timeout=1)
            if output is None:
                if not manager.is_running():
                    raise RuntimeError("The continuous-batching scheduler stopped before every prompt finished.")
                continue
            if output.error:
                raise RuntimeError(f"The continuous-batching scheduler failed a request: {output.error}")
            if output.is_finished():
                done = _completion(tokenizer, *by_request[output.request_id], output, stop_ids)
                if on_batch:
                    on_batch([done])
                completions.append(done)
        steps = getattr(manager, "current_batch", 0)  # forward passes run; 5.17 sets it in the scheduler's thread
    return completions, steps


def cache_config(inputs: list[list[int]], max_new_tokens: int, token_budget: int) -> ContinuousBatchingConfig:
    """Pages enough for every request at full length at once, and at most `token_budget` tokens per step."""
    pages = sum(math.ceil((len(ids) + max_new_tokens) / PAGE_SIZE) for ids in inputs)
    # transformers 5.24 calls a page `page_size`; earlier 5.x releases (5.17, seen on a GPU box) `block_size`.
    size = "page_size" if "page_size" in inspect.signature(ContinuousBatchingConfig).parameters else "block_size"
    return ContinuousBatchingConfig(**{size: PAGE_SIZE}, num_blocks=pages + 1,
                                    max_batch_tokens=max(token_budget, max(len(ids) for ids in inputs)))


def _completion(tokenizer, index: int, prompt: str, output, stop_ids: set[int]) -> Completion:
    """A scheduler output as a Completion; no row is padded, so padded_tokens is 0."""
    count, reason = count_until_eos(list(output.generated_tokens), stop_ids)
    kept = list(output.generated_tokens)[:count]
    return Completion(index=index, prompt=prompt, text=tokenizer.decode(kept, skip_special_tokens=True),
                      token_ids=kept, prompt_tokens=len(output.prompt_ids), generated_tokens=count,
                      stop_reason=reason)
