"""Continuous batching through transformers' `generate_batch`: paged attention, requests join and leave each step."""

from __future__ import annotations

import inspect
import math
import warnings

import torch
from transformers import GenerationConfig
from transformers.generation.configuration_utils import ContinuousBatchingConfig

from .batching import DEFAULT_TOKEN_BUDGET
from .generate import Completion, check_prompts, count_until_eos, eos_ids
from .models import quiet_transformers

PAGED = "paged|sdpa"
PAGE_SIZE = 256


@torch.inference_mode()
def generate_continuous(model, tokenizer, prompts: list[str], max_new_tokens: int,
                        token_budget: int = DEFAULT_TOKEN_BUDGET, indices: list[int] | None = None,
                        force_length: bool = False) -> list[Completion]:
    """Hand every prompt to the continuous-batching scheduler at once; completions come back in input order.

    `token_budget` caps the tokens one scheduler step processes. The paged KV cache is sized for exactly this
    workload: left to itself it claims a share of free memory, which on a CPU means system RAM per process.
    """
    indices = list(range(len(prompts))) if indices is None else indices
    check_prompts(model, tokenizer, prompts, max_new_tokens, indices)
    if not prompts:
        return []
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                              pad_token_id=tokenizer.eos_token_id,
                              min_new_tokens=max_new_tokens if force_length else None)
    previous = model.config._attn_implementation
    with warnings.catch_warnings(), quiet_transformers():  # the scheduler's notes about NCCL are noise here
        warnings.simplefilter("ignore")
        model.set_attn_implementation(PAGED)
        try:
            inputs = [tokenizer(p).input_ids for p in prompts]
            outputs = model.generate_batch(inputs, generation_config=config, progress_bar=False,
                                           continuous_batching_config=cache_config(inputs, max_new_tokens,
                                                                                   token_budget))
        finally:
            model.set_attn_implementation(previous)
    ordered = sorted(outputs.values(), key=lambda out: int(out.request_id.rsplit("_", 1)[1]))
    return [_completion(tokenizer, index, prompt, out, eos_ids(model, tokenizer))
            for index, prompt, out in zip(indices, prompts, ordered)]


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
