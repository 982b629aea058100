"""Solutions to the lesson exercises. Try them yourself first: each lesson's last cell checks your answer."""

import math

from accelerate import Accelerator
from accelerate.utils import gather_object


def squares() -> list[int]:
    """Lesson 1: every process contributes its rank squared; the list is gathered on every process."""
    accelerator = Accelerator()
    return gather_object([accelerator.process_index ** 2])


def restore(shares: list[list[int]], count: int) -> list[int]:
    """Lesson 2: drop the padding duplicates by index, not by slicing, and put the indices in order."""
    return sorted({index for share in shares for index in share})[:count]


def tokenize_batch(tokenizer, prompts: list[str]):
    """Lesson 3: keep BOS, pad on the left with EOS as the pad token, return tensors with the attention mask."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")


def calls(prompts: int, processes: int, batch_size: int) -> int:
    """Lesson 4: the busiest process holds ceil(prompts / processes) prompts, in ceil(that / batch) batches."""
    return math.ceil(math.ceil(prompts / processes) / batch_size)


def budget_batches(lengths: list[int], new_tokens: int, budget: int) -> list[list[int]]:
    """Lesson 5: sort by length, then grow each batch while rows x (longest + new tokens) fits the budget."""
    batches: list[list[int]] = []
    for position in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        if batches and (len(batches[-1]) + 1) * (lengths[position] + new_tokens) <= budget:
            batches[-1].append(position)
        else:
            batches.append([position])
    return batches
