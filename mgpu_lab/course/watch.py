"""What a learner's answer does, seen from inside: the gathers and generate calls it makes, the kit code it calls."""

from __future__ import annotations

import contextlib
import os
import sys
import types
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Callable, Iterator

import torch

KIT = str(resources.files("mgpu_lab")) + os.sep  # code under here is the kit's, not the learner's


@dataclass(frozen=True)
class GenerateCall:
    """One model.generate call: how many rows, and how its batch was built."""

    rows: int
    max_new_tokens: int | None  # as passed, or as its generation config says; None when neither says
    right_padded: bool  # some row ends in padding (the attention mask ends in 0)
    bos_missing: bool  # some row's first real token is not BOS
    no_mask: bool  # several rows and no attention mask
    prompts: tuple[tuple[int, ...], ...] = ()  # each row's tokens, padding (where the mask says) left out


@dataclass
class Watched:
    """What one process's call of the learner's function returned and did."""

    result: Any = None
    gathers: int = 0  # all_gather_object, gather_object and tensor all_gather calls, through accelerate or not
    sent: list = field(default_factory=list)  # what this process put into each gather (a tensor as a list)
    calls: list[GenerateCall] = field(default_factory=list)  # every generate call, in order
    kit: str = ""  # a kit function that gathered or generated for the answer ("" when its own code did)

    @property
    def batches(self) -> list[int]:
        """The rows of each generate call, in order."""
        return [call.rows for call in self.calls]


Retouch = Callable[[list], None]  # changes what one gather hands back (the list of every rank's part), in place


def watched(fn: Callable, *args: Any, retouch: Retouch | None = None) -> Watched:
    """Run on every process: call `fn(*args)` while counting its gathers (each retouched) and generate calls."""
    seen = Watched()
    with _counting_gathers(seen, retouch), _counting_generates(seen):
        seen.result = fn(*args)
    return seen


def watched_everywhere(fn: Callable, *args: Any, retouch: Retouch | None = None) -> list[Watched]:
    """Run on every process: `watched(fn, *args)`, then every process's record, in rank order."""
    seen = watched(fn, *args, retouch=retouch)
    if not torch.distributed.is_initialized():
        return [seen]
    records: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(records, seen)
    return records


def _kit_caller() -> str:
    """The outermost kit function on the stack below the learner's function (the one it called), or ""."""
    frame, name = sys._getframe(2), ""
    while frame is not None and frame.f_code is not watched.__code__:
        if frame.f_code.co_filename.startswith(KIT):
            name = frame.f_code.co_name
        frame = frame.f_back
    return name


def _as_list(value: Any) -> Any:
    """A tensor as a plain list, anything else as it is."""
    return value.tolist() if isinstance(value, torch.Tensor) else value


# Where a gather can be reached from (torch.distributed re-exports distributed_c10d's functions), and each one's
# argument that this process sends and its argument that receives every process's part: (position, name).
GATHER_MODULES = ("torch.distributed", "torch.distributed.distributed_c10d")
GATHERS = {"all_gather_object": ((1, "obj"), (0, "object_list")), "all_gather": ((1, "tensor"), (0, "tensor_list")),
           "gather_object": ((0, "obj"), (1, "object_gather_list"))}


@contextlib.contextmanager
def _counting_gathers(seen: Watched, retouch: Retouch | None = None) -> Iterator[None]:
    """Count and record every gather (accelerate's gather_object and gather, torch's, under any import path)."""
    modules = [sys.modules[name] for name in GATHER_MODULES]
    originals = {name: getattr(modules[0], name) for name in GATHERS}
    inside: list[bool] = []  # all_gather_object gathers through all_gather: count the outer call only

    def counted(name: str) -> Callable:
        def gather(*args, **kwargs):
            if inside:
                return originals[name](*args, **kwargs)
            sent, received = (args[i] if len(args) > i else kwargs.get(key) for i, key in GATHERS[name])
            seen.gathers += 1
            seen.sent.append(_as_list(sent))
            seen.kit = seen.kit or _kit_caller()
            inside.append(True)
            try:
                answer = originals[name](*args, **kwargs)
            finally:
                inside.pop()
            if retouch is not None and isinstance(received, list):
                retouch(received)
            return answer
        return gather

    for module in modules:
        for name in originals:
            setattr(module, name, counted(name))
    try:
        yield
    finally:
        for module in modules:
            for name, original in originals.items():
                setattr(module, name, original)


def describe_call(model: Any, args: tuple, kwargs: dict) -> GenerateCall:
    """What one generate call asked for, read from its arguments."""
    inputs = kwargs.get("input_ids", kwargs.get("inputs", args[0] if args else None))
    mask = kwargs.get("attention_mask")
    rows = 0 if inputs is None else len(inputs)
    bos = getattr(model.config, "bos_token_id", None)
    if inputs is None or bos is None or (mask is None and rows > 1):  # no mask: padding cannot be told from text
        bos_missing = False
    elif mask is None:
        bos_missing = int(inputs[0][0]) != bos
    else:
        firsts = mask.long().argmax(dim=1)  # the first real position of each row
        bos_missing = any(int(inputs[r, f]) != bos for r, f in enumerate(firsts.tolist()))
    config = kwargs.get("generation_config") or getattr(model, "generation_config", None)
    new_tokens = kwargs.get("max_new_tokens", getattr(config, "max_new_tokens", None))
    return GenerateCall(rows=rows, max_new_tokens=new_tokens,
                        right_padded=mask is not None and bool((mask[:, -1] == 0).any()),
                        bos_missing=bos_missing, no_mask=mask is None and rows > 1, prompts=_rows(inputs, mask))


def _rows(inputs: Any, mask: Any) -> tuple[tuple[int, ...], ...]:
    """Each row of a generate call's input ids as plain numbers, without the positions its attention mask hides."""
    if not isinstance(inputs, torch.Tensor) or inputs.dim() != 2:
        return ()
    if not isinstance(mask, torch.Tensor) or mask.shape != inputs.shape:
        return tuple(tuple(row) for row in inputs.tolist())
    return tuple(tuple(i for i, m in zip(row, keep) if m) for row, keep in zip(inputs.tolist(), mask.tolist()))


@contextlib.contextmanager
def _counting_generates(seen: Watched) -> Iterator[None]:
    """Record every model.generate call (GenerationMixin.generate, which every causal LM inherits)."""
    from transformers.generation.utils import GenerationMixin

    original = GenerationMixin.generate

    def generate(self, *args, **kwargs):
        seen.calls.append(describe_call(self, args, kwargs))
        seen.kit = seen.kit or _kit_caller()
        return original(self, *args, **kwargs)

    GenerationMixin.generate = generate
    try:
        yield
    finally:
        GenerationMixin.generate = original


def calls_into(fn: Callable, args: tuple, references: list[Callable]) -> tuple[Any, str]:
    """Call `fn(*args)` in this process; return its result and the name of the first of `references` it called.

    A call is seen however it is made: by any name, from a closure, another thread, or with the profiler off.
    """
    called: list[str] = []
    with contextlib.ExitStack() as stack:
        for reference in references:
            stack.enter_context(_noticing(reference, called))
        result = fn(*args)
    return result, called[0] if called else ""


@contextlib.contextmanager
def _noticing(reference: types.FunctionType, called: list[str]) -> Iterator[None]:
    """While open, `reference` itself (its code, so every reference to it) notes its name in `called`, then runs."""
    code, name = reference.__code__, reference.__name__
    hook = f"__mgpu_lab_noticing_{name}__"
    original = types.FunctionType(code, reference.__globals__, name, reference.__defaults__, reference.__closure__)
    original.__kwdefaults__ = reference.__kwdefaults__

    def notice(*args: Any, **kwargs: Any) -> Any:
        called.append(name)
        return original(*args, **kwargs)

    namespace: dict[str, Any] = {}
    exec(compile(f"def {name}(*args, **kwargs):\n    return {hook}(*args, **kwargs)\n", KIT + "watch.py", "exec"),
         namespace)
    reference.__globals__[hook] = notice  # the forwarding code finds the hook in its function's own module
    reference.__code__ = namespace[name].__code__
    try:
        yield
    finally:
        reference.__code__ = code
        del reference.__globals__[hook]
