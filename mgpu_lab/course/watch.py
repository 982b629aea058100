"""What a learner's answer does, seen from inside: the gathers and generate calls it makes, the kit code it calls."""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Callable, Iterator

import torch

KIT = str(resources.files("mgpu_lab")) + os.sep  # code under here is the kit's, not the learner's


@dataclass
class Watched:
    """What one process's call of the learner's function returned and did."""

    result: Any = None
    gathers: int = 0  # all_gather_object calls, through gather_object or not
    batches: list[int] = field(default_factory=list)  # rows of each generate call, in order
    kit: str = ""  # a kit function that gathered or generated for the answer ("" when its own code did)


def watched(fn: Callable, *args: Any) -> Watched:
    """Run on every process: call `fn(*args)` while counting its gathers and generate calls."""
    seen = Watched()
    with _counting_gathers(seen), _counting_generates(seen):
        seen.result = fn(*args)
    return seen


def _kit_caller() -> str:
    """The outermost kit function on the stack below the learner's function (the one it called), or ""."""
    frame, name = sys._getframe(2), ""
    while frame is not None and frame.f_code is not watched.__code__:
        if frame.f_code.co_filename.startswith(KIT):
            name = frame.f_code.co_name
        frame = frame.f_back
    return name


@contextlib.contextmanager
def _counting_gathers(seen: Watched) -> Iterator[None]:
    """Count torch.distributed.all_gather_object, which accelerate's gather_object calls under the hood."""
    original = torch.distributed.all_gather_object

    def gather(*args, **kwargs):
        seen.gathers += 1
        seen.kit = seen.kit or _kit_caller()
        return original(*args, **kwargs)

    torch.distributed.all_gather_object = gather
    try:
        yield
    finally:
        torch.distributed.all_gather_object = original


@contextlib.contextmanager
def _counting_generates(seen: Watched) -> Iterator[None]:
    """Record the rows of every model.generate call (GenerationMixin.generate, which every causal LM inherits)."""
    from transformers.generation.utils import GenerationMixin

    original = GenerationMixin.generate

    def generate(self, *args, **kwargs):
        inputs = kwargs.get("input_ids", kwargs.get("inputs", args[0] if args else None))
        seen.batches.append(0 if inputs is None else len(inputs))
        seen.kit = seen.kit or _kit_caller()
        return original(self, *args, **kwargs)

    GenerationMixin.generate = generate
    try:
        yield
    finally:
        GenerationMixin.generate = original


def calls_into(fn: Callable, args: tuple, references: list[Callable]) -> tuple[Any, str]:
    """Call `fn(*args)` in this process; return its result and the name of the first of `references` it called."""
    codes = {reference.__code__: reference.__name__ for reference in references}
    called: list[str] = []

    def profile(frame, event, _arg):
        if event == "call" and frame.f_code in codes and not called:
            called.append(codes[frame.f_code])

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        result = fn(*args)
    finally:
        sys.setprofile(previous)
    return result, called[0] if called else ""
