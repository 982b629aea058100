"""Lesson 1: every process says hello, gather_object collects the messages, one process prints them."""

from __future__ import annotations

from accelerate import Accelerator
from accelerate.utils import gather_object


def hello() -> list[str]:
    """Run on every process: build a one-item list, gather all of them, print once, return the gathered list."""
    accelerator = Accelerator()
    message = [f"Hello from process {accelerator.process_index} of {accelerator.num_processes} "
               f"(device: {accelerator.device.type})"]
    messages = gather_object(message)  # a list in, one list of every process's items out
    accelerator.print(f"Gathered {len(messages)} messages on the main process:")
    for line in messages:
        accelerator.print(" ", line)
    return messages
