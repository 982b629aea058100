"""One process's work: greedy generation for a list of prompts, one at a time or in left-padded batches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch.distributed.fsdp import FSDPModule
from transformers import BatchEncoding

from ..defaults import BATCH_SIZE
from .batching import fixed_batches
from .results import Completion
from .validate import prompt_list, whole_number

Item = tuple[int, str]  # a prompt and its index in the run's prompt list: they travel together end to end


def pad_token(tokenizer) -> str:
    """The token that fills padding: the tokenizer's own, or EOS for Llama tokenizers that have none."""
    return tokenizer.pad_token if tokenizer.pad_token is not None else tokenizer.eos_token


def eos_ids(model, tokenizer) -> set[int]:
    """Every token id that ends a sequence for this model."""
    ids = model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, list) else [ids]) if ids is not None else set()
    return ids | {tokenizer.eos_token_id}


def check_context(model, items: list[Item], lengths: list[int], max_new_tokens: int) -> None:
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


@dataclass(frozen=True)
class Work:
    """Prompts to generate for: (index, prompt) items, their token ids by position, how many new tokens, and how
    their batches are padded."""

    items: list[Item]
    ids: list[list[int]]  # items[p]'s token ids at position p
    max_new_tokens: int
    force_length: bool = False  # always max_new_tokens (shape presets, whose text is noise), never an early EOS
    padding_side: str = "left"  # "right" is for the lessons, to show what goes wrong with it

    @classmethod
    def of(cls, tokenizer, prompts: list[str], max_new_tokens: int, add_special_tokens: bool = True,
           force_length: bool = False, padding_side: str = "left") -> Work:
        """Prompts checked, numbered from 0 and tokenized (BOS included, unless add_special_tokens=False)."""
        prompts = prompt_list(prompts)
        return cls(list(enumerate(prompts)), token_ids(tokenizer, prompts, add_special_tokens),
                   whole_number("max_new_tokens", max_new_tokens), force_length, padding_side)


# (model, left-padded batch, its work, pad id, stop ids) -> prompt + new tokens, as `model.generate` returns them
Decoder = Callable[[torch.nn.Module, BatchEncoding, Work, int, set[int]], torch.Tensor]


def generate_decode(model, batch: BatchEncoding, work: Work, pad_id: int, stop_ids: set[int]) -> torch.Tensor:
    """The decoder of most modes: one greedy `model.generate` call (engine/lean.py has the kit's own loops)."""
    return model.generate(
        **batch, max_new_tokens=work.max_new_tokens, do_sample=False, pad_token_id=pad_id,
        min_new_tokens=work.max_new_tokens if work.force_length else None,
        synced_gpus=False,  # FSDP-wrapped replicas (DP x TP) would otherwise step in lock-step with every other rank
    )


def generate_naive(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[Completion]:
    """The article's loop: one generate call per prompt (a batch of one needs no padding)."""
    return generate_batched(model, tokenizer, prompts, max_new_tokens, 1)


def generate_batched(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int = BATCH_SIZE,
                     padding_side: str = "left", add_special_tokens: bool = True) -> list[Completion]:
    """Batches of `batch_size` prompts in input order, left padded, one generate call per batch; in input order.

    The lessons pass padding_side="right" or add_special_tokens=False to show what goes wrong with them.
    """
    work = Work.of(tokenizer, prompts, max_new_tokens, add_special_tokens, padding_side=padding_side)
    batches = fixed_batches(len(work.items), whole_number("batch_size", batch_size))
    return generate_items(model, tokenizer, work, batches)


class BatchOutOfMemory(RuntimeError):
    """A generate call that ran out of GPU memory; `rows` is the number of prompts in that batch."""

    def __init__(self, rows: int):
        super().__init__(f"out of GPU memory on a batch of {rows} prompt(s)")
        self.rows = rows


def generate_items(model, tokenizer, work: Work, batches: list[list[int]],
                   on_batch: Callable[[list[Completion]], None] | None = None,
                   decoder: Decoder = generate_decode) -> list[Completion]:
    """Generate for the work's items, one `decoder` call per batch of positions; `on_batch` sees each batch's."""
    check_context(model, work.items, [len(row) for row in work.ids], work.max_new_tokens)
    completions = []
    for positions in batches:
        batch = pad_ids(tokenizer, [work.ids[p] for p in positions], model.device, work.padding_side)
        # FSDP's hooks (on DP x TP replicas, tensor_parallel.py) refuse inference tensors: no_grad is enough there
        with torch.inference_mode(not isinstance(model, FSDPModule)):
            try:
                done = _completions(model, tokenizer, batch, [work.items[p] for p in positions], work, decoder)
            except torch.cuda.OutOfMemoryError:
                raise BatchOutOfMemory(len(positions)) from None
        if on_batch:
            on_batch(done)
        completions += done
    return completions


def _completions(model, tokenizer, batch, chunk: list[Item], work: Work, decoder: Decoder) -> list[Completion]:
    """Decode a padded batch of `chunk` greedily with `decoder` and cut each row at its first EOS."""
    stop_ids = eos_ids(model, tokenizer)
    output = decoder(model, batch, work, tokenizer.convert_tokens_to_ids(pad_token(tokenizer)), stop_ids)
    width = batch["input_ids"].shape[1]
    new_tokens = output[:, width:].tolist()  # the prompt (and its padding) is cut off
    return [completion(tokenizer, item, new_tokens[row], stop_ids, int(batch["attention_mask"][row].sum()),
                       output.shape[1]) for row, item in enumerate(chunk)]


def completion(tokenizer, item: Item, new_ids: list[int], stop_ids: set[int], prompt_tokens: int,
               width: int = 0) -> Completion:
    """One prompt's Completion from the token ids generated after it, cut at the first EOS.

    `width`: the positions its row held in a padded batch (padding counted from it); 0: the row was not padded.
    """
    count, reason = count_until_eos(new_ids, stop_ids)
    kept = list(new_ids[:count])
    return Completion(index=item[0], prompt=item[1], text=tokenizer.decode(kept, skip_special_tokens=True),
                      token_ids=kept, prompt_tokens=prompt_tokens, generated_tokens=count, stop_reason=reason,
                      padded_tokens=width - prompt_tokens - count if width else 0)
