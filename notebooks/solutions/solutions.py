"""Solutions to the lesson exercises. Try them yourself first: each lesson's last cell checks your answer."""

import math

from accelerate import Accelerator
from accelerate.utils import gather_object
from transformers import AutoModelForCausalLM, AutoTokenizer

from mgpu_lab.engine.models import pick_dtype


def squares() -> list[int]:
    """Lesson 1: every process contributes its rank squared; the list is gathered on every process."""
    accelerator = Accelerator()
    return gather_object([accelerator.process_index ** 2])


def restore(shares: list[list[tuple[int, str]]], count: int) -> list[tuple[int, str]]:
    """Lesson 2: keep one pair per index (a dict drops the padding duplicates), then put the indices in order."""
    by_index = {index: prompt for share in shares for index, prompt in share}
    return sorted(by_index.items())


def batched_on_each_process(folder, prompts: list[str], max_new_tokens: int, batch_size: int) -> list[tuple]:
    """Lesson 3: the article's batched program, right: pad token, left padding, BOS kept, prompt cut, sorted."""
    accelerator = Accelerator()
    model = AutoModelForCausalLM.from_pretrained(folder, device_map={"": accelerator.device},
                                                 dtype=pick_dtype(accelerator.device))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.pad_token = tokenizer.eos_token
    results = []
    with accelerator.split_between_processes(list(enumerate(prompts))) as share:
        for start in range(0, len(share), batch_size):
            chunk = share[start:start + batch_size]
            batch = tokenizer([prompt for _, prompt in chunk], return_tensors="pt", padding=True,
                              padding_side="left").to(accelerator.device)
            output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id)
            for (index, _), new in zip(chunk, output[:, batch["input_ids"].shape[1]:].tolist()):
                if tokenizer.eos_token_id in new:
                    new = new[:new.index(tokenizer.eos_token_id) + 1]
                results.append((index, tokenizer.decode(new, skip_special_tokens=True), len(new)))
    return sorted(gather_object(results))


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


def layout(weights: float, kv_cache: float, gpu_bytes: float, gpus: int, heads: int) -> tuple[int, int] | None:
    """Lesson 6: the smallest TP size whose share of one copy fits a GPU and that divides the GPUs and the heads."""
    for tp in range(1, gpus + 1):
        if gpus % tp == 0 and heads % tp == 0 and (weights + kv_cache) / tp <= gpu_bytes:
            return gpus // tp, tp
    return None
