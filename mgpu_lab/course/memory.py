"""Lesson 6's arithmetic: a model's bytes, its KV cache, what one GPU holds under TP, and what tensor parallelism sends."""

from __future__ import annotations

import torch
from transformers import LlamaForCausalLM

from ..engine.models import model_config

BF16 = 2  # bytes per number in bf16 (and fp16)


def parameters(model: str) -> int:
    """How many parameters a model has, counted on the meta device (no memory used, no weights read)."""
    with torch.device("meta"):
        return LlamaForCausalLM(model_config(model)).num_parameters()


def kv_bytes_per_token(model: str, dtype_bytes: int = BF16) -> int:
    """Bytes the KV cache keeps for one token of one sequence: a key and a value per layer per KV head."""
    config = model_config(model)
    head_dim = config.hidden_size // config.num_attention_heads
    return 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * dtype_bytes


def bytes_per_gpu(weights: int, kv_cache: int, tp_size: int) -> float:
    """What one GPU of a TP group holds: its 1/tp_size of the weights and of the KV cache (the heads are split)."""
    return (weights + kv_cache) / tp_size


def best_layout(need: int, gpu_bytes: int, gpus: int, heads: int) -> tuple[int, int] | None:
    """(replicas, tp_size) for a box: the smallest TP size that fits and divides the heads, the rest as DP copies.

    `need`: bytes of one copy (weights + KV cache); None when even all the GPUs together cannot hold it.
    """
    for tp in range(1, gpus + 1):
        if gpus % tp == 0 and heads % tp == 0 and bytes_per_gpu(need, 0, tp) <= gpu_bytes:
            return gpus // tp, tp
    return None


def allreduce_bytes_per_token(model: str, dtype_bytes: int = BF16) -> int:
    """What TP's all-reduces carry per generated token of one sequence: two per layer (attention out, MLP out),
    each the token's hidden vector."""
    config = model_config(model)
    return 2 * config.num_hidden_layers * config.hidden_size * dtype_bytes
