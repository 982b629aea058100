"""The lessons' demonstrations: hello (lesson 1), what gather_object does without a list, who gets which prompt."""

from __future__ import annotations

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object


def hello() -> list[str]:
    """Run on every process: build a one-item list, gather all of them, print once, return the gathered list."""
    accelerator = Accelerator()
    message = [f"Hello from process {accelerator.process_index} of {accelerator.num_processes} "
               f"(device: {accelerator.device.type})"]
    messages = gather_object(message)  # a list in, one list of every process's items out
    accelerator.print(f"Gathered {len(messages)} message{'s' if len(messages) > 1 else ''} on the main process:")
    for line in messages:
        accelerator.print(" ", line)
    return messages


def what_each_process_sees() -> list[dict]:
    """Run on every process: gather what each one knows about itself (rank, world size, device, threads)."""
    accelerator = Accelerator()
    me = {"process_index": accelerator.process_index, "local_process_index": accelerator.local_process_index,
          "num_processes": accelerator.num_processes, "is_main_process": accelerator.is_main_process,
          "device": str(accelerator.device), "backend": accelerator.state.backend,
          "torch_threads": torch.get_num_threads()}
    return gather_object([me])


def gather_without_a_list() -> dict:
    """Run on every process: what gather_object does with a bare string, int and dict, and with a dict in a list."""
    accelerator = Accelerator()
    rank = accelerator.process_index
    text = gather_object(f"rank{rank}")  # a string is a sequence: its characters arrive
    try:
        number = gather_object(rank)
    except TypeError as error:
        number = f"{type(error).__name__}: {error}"
    results = {"outputs": [f"text from {rank}"], "num_tokens": 10 + rank}  # the article's per-process results
    return {"gather_object(a string)": text, "gather_object(an int)": number,
            "gather_object(a dict)": gather_object(results),  # a dict iterates as its keys
            "gather_object([a dict])": gather_object([results])}


def who_gets_what(count: int, apply_padding: bool = False) -> list[list[int]]:
    """Run on every process: the prompt indices each rank receives from split_between_processes, gathered."""
    accelerator = Accelerator()
    with accelerator.split_between_processes(list(range(count)), apply_padding=apply_padding) as share:
        return gather_object([share])
