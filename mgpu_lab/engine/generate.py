"""One process's work: greedy generation for a list of prompts, one at a time or in left-padded batches."""

from __future__ import annotations

from typing import Callable

import torch
from torch.distributed.fsdp import FSDPModule
from transformers import BatchEncoding

from .batching import budget_batches, fixed_batches, sorted_batches
from ..defaults import BATCH_SIZE
from .results import Completion
from .validate import prompt_list, whole_number

# (model, left-padded batch, max_new_tokens, pad id, stop ids, force_length) -> prompt + new tokens, as generate's
Decoder = Callable[..., torch.Tensor]


def pad_token(tokenizer) -> str:
    """The token that fills padding: the tokenizer's own, or EOS for Llama tokenizers that have none."""
    return tokenizer.pad_token if tokenizer.pad_token is not None else tokenizer.eos_token


def eos_ids(model, tokenizer) -> set[int]:
    """Every token id that ends a sequence for this model."""
    ids = model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, list) else [ids]) if ids is not None else set()
    return ids | {tokenizer.eos_token_id}


def check_context(model, items: list[tuple[int, str]], lengths: list[int], max_new_tokens: int) -> None:
    """Reject a prompt that, with max_new_tokens after it, does not fit the model's context."""
    limit = model.config.max_position_embeddings
    for (number, _), length in zip(items, lengths):
        if length + max_new_tokens > limit:
            raise ValueError(
                f"Prompt {number} has {length} tokens; with max_new_tokens={max_new_tokens} it needs "
                f"{length + max_new_tokens} positions but the model holds {limit}. "
                "Fix: shorten the prompt or lower max_new_tokens."
            )


def token_ids(tokenizer, prompts: list[str], add_special_tokens: bool = True) -> list[list[int]]:
    """Each prompt's token ids (BOS included by default): a run tokenizes its prompts once, here."""
    return tokenizer(list(prompts), add_special_tokens=add_special_tokens).input_ids if prompts else []


def prompt_lengths(tokenizer, prompts: list[str]) -> list[int]:
    """Each prompt's length in tokens, BOS included."""
    return [len(row) for row in token_ids(tokenizer, prompts)]


def count_until_eos(new_ids: list[int], stop_ids: set[int]) -> tuple[int, str]:
    """Tokens generated up to and including the first EOS; what follows it in a batch is padding."""
    for position, token in enumerate(new_ids):
        if token in stop_ids:
            return position + 1, "eos"
    return len(new_ids), "length"


def padded_batch(tokenizer, prompts: list[str], device: torch.device | str = "cpu", padding_side: str = "left",
                 add_special_tokens: bool = True) -> BatchEncoding:
    """Tokenize a batch; the right way keeps BOS and pads on the left, so every row's last token is real."""
    return pad_ids(tokenizer, token_ids(tokenizer, prompts, add_special_tokens), device, padding_side)


def pad_ids(tokenizer, rows: list[list[int]], device: torch.device | str = "cpu",
            padding_side: str = "left") -> BatchEncoding:
    """Pad tokenized prompts into one batch with an attention mask; the tokenizer is left as the caller gave it.

    Padding uses pad_token(tokenizer), EOS when the tokenizer has no pad token (the attention mask hides it).
    """
    own = tokenizer.pad_token
    tokenizer.pad_token = pad_token(tokenizer)
    try:
        return tokenizer.pad({"input_ids": rows}, padding=True, padding_side=padding_side,
                             return_tensors="pt").to(device)
    finally:
        tokenizer.pad_token = own


def generate_naive(model, tokenizer, prompts: list[str], max_new_tokens: int,
                   indices: list[int] | None = None, force_length: bool = False) -> list[Completion]:
    """The article's loop: one generate call per prompt (a batch of one needs no padding)."""
    return generate_batched(model, tokenizer, prompts, max_new_tokens, 1, indices, force_length)


def generate_batched(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int = BATCH_SIZE,
                     indices: list[int] | None = None, force_length: bool = False,
                     **batch_options) -> list[Completion]:
    """Batches of `batch_size` prompts in input order, left padded, one generate call per batch.

    `batch_options` go to `generate_items`: the lessons pass padding_side="right" or add_special_tokens=False
    to show what goes wrong with them.
    """
    batches = fixed_batches(len(prompt_list(prompts)), whole_number("batch_size", batch_size))
    return generate_in_batches(model, tokenizer, prompts, max_new_tokens, batches, indices, force_length,
                               **batch_options)


def generate_sorted(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int = BATCH_SIZE,
                    indices: list[int] | None = None, force_length: bool = False) -> list[Completion]:
    """Batches of `batch_size` prompts of similar length; results come back in input order."""
    ids = token_ids(tokenizer, prompt_list(prompts))
    batches = sorted_batches([len(row) for row in ids], whole_number("batch_size", batch_size))
    return generate_in_batches(model, tokenizer, prompts, max_new_tokens, batches, indices, force_length, ids=ids)


def generate_budget(model, tokenizer, prompts: list[str], max_new_tokens: int, token_budget: int,
                    indices: list[int] | None = None,
                    force_length: bool = False) -> list[Completion]:
    """Length-sorted batches bounded by padded tokens instead of a prompt count."""
    ids = token_ids(tokenizer, prompt_list(prompts))
    batches = budget_batches([len(row) for row in ids], whole_number("max_new_tokens", max_new_tokens),
                             whole_number("token_budget", token_budget))
    return generate_in_batches(model, tokenizer, prompts, max_new_tokens, batches, indices, force_length, ids=ids)


class BatchOutOfMemory(RuntimeError):
    """A generate call that ran out of GPU memory; `rows` is the number of prompts in that batch."""

    def __init__(self, rows: int):
        super().__init__(f"out of GPU memory on a batch of {rows} prompt(s)")
        self.rows = rows


def generate_in_batches(model, tokenizer, prompts: list[str], max_new_tokens: int, batches: list[list[int]],
                        indices: list[int] | None = None, force_length: bool = False,
                        ids: list[list[int]] | None = None, **batch_options) -> list[Completion]:
    """One left-padded generate call per batch of positions; completions come back in input order."""
    items = list(zip(range(len(prompts)) if indices is None else indices, prompt_list(prompts)))
    whole_number("max_new_tokens", max_new_tokens)
    done = generate_items(model, tokenizer, items, max_new_tokens, batches, force_length, ids=ids, **batch_options)
    return sorted(done, key=lambda c: c.index)


def generate_items(model, tokenizer, items: list[tuple[int, str]], max_new_tokens: int, batches: list[list[int]],
                   force_length: bool = False, on_batch: Callable[[list[Completion]], None] | None = None,
                   ids: list[list[int]] | None = None, padding_side: str = "left",
                   add_special_tokens: bool = True, decoder: Decoder | None = None) -> list[Completion]:
    """Generate for (index, prompt) items, one call per batch of positions; `on_batch` sees each batch's results.

    `ids`: the items' token ids, when the caller already has them (a run tokenizes once); else tokenized here.
    `padding_side="right"` and `add_special_tokens=False` are for the lessons, to show what goes wrong with them.
    `decoder`: what turns a padded batch into tokens instead of `model.generate` (engine/lean.py's decoders).
    """
    ids = token_ids(tokenizer, [p for _, p in items], add_special_tokens) if ids is None else ids
    check_context(model, items, [len(row) for row in ids], max_new_tokens)
    completions = []
    for positions in batches:
        chunk = [items[p] for p in positions]
        batch = pad_ids(tokenizer, [ids[p] for p in positions], model.device, padding_side)
        # FSDP's hooks (on DP x TP replicas, tensor_parallel.py) refuse inference tensors: no_grad is enough there
        with torch.inference_mode(not isinstance(model, FSDPModule)):
            try:
                done = _completions(model, tokenizer, batch, chunk, max_new_tokens, force_length, decoder)
            except torch.cuda.OutOfMemoryError:
                raise BatchOutOfMemory(len(chunk)) from None
        if on_batch:
            on_batch(done)
        completions += done
    return completions


def _completions(model, tokenizer, batch, chunk: list[tuple[int, str]],
                 max_new_tokens: int, force_length: bool, decoder: Decoder | None = None) -> list[Completion]:
    """Run one greedy generate call (or `decoder`) on a batch from padded_batch and cut each row at its first EOS."""
    pad_id, stop_ids = tokenizer.convert_tokens_to_ids(pad_token(tokenizer)), eos_ids(model, tokenizer)
    output = decoder(model, batch, max_new_tokens, pad_id, stop_ids, force_length) if decoder else model.generate(
        **batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id,
        min_new_tokens=max_new_tokens if force_length else None,
        synced_gpus=False,  # FSDP-wrapped replicas (DP x TP) would otherwise step in lock-step with every other rank
    )
    width = batch["input_ids"].shape[1]
    new_tokens = output[:, width:].tolist()  # the prompt (and its padding) is cut off
    completions = []
    for row, (index, prompt) in enumerate(chunk):
        count, reason = count_until_eos(new_tokens[row], stop_ids)
        kept, prompt_tokens = new_tokens[row][:count], int(batch["attention_mask"][row].sum())
        completions.append(Completion(
            index=index, prompt=prompt, text=tokenizer.decode(kept, skip_special_tokens=True),
            token_ids=kept, prompt_tokens=prompt_tokens, generated_tokens=count, stop_reason=reason,
            padded_tokens=output.shape[1] - prompt_tokens - count,
        ))
    return completions
