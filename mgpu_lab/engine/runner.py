"""Data parallelism: split prompts over processes, generate on each, gather every result back in prompt order."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .. import defaults
from ..launcher.bar import Progress, tell, wanted
from ..launcher.launch import DEFAULT_TIMEOUT_S, already_launched, default_processes, launch, refuse_while_launching
from .batching import balanced_shares
from .budget import saturating_rows, token_budget_for
from .continuous import continuous_items
from .generate import BatchOutOfMemory, Item, Work, generate_items, token_ids
from .models import ResolvedModel, check_model, dtype_name, is_synthetic, load_model, locate_model, model_identity
from .modes import Mode, lookup_mode
from .output import OutputFile, append_completions, begin_output, claimed, made_by
from .prompts import default_prompts
from .results import Completion, ProcessStats, RunResult, RunSummary
from .tensor_parallel import Layout, check_tp, load_options, parameter_bytes
from .validate import launch_timeout, output_file, prompt_list, torchrun_env, whole_number

Tokens = list[list[int]]  # token ids, one row per prompt
KNOBS = ("batch_size", "token_budget")  # the RunConfig fields a Mode may name as its knob


@dataclass(frozen=True)
class RunConfig:
    """One inference run, every input checked once (check_run); each of its processes is handed it."""

    model: ResolvedModel  # checked and resolved in the launching process: the processes load it unchecked
    prompts: tuple[str, ...]
    mode: str = "batched"
    max_new_tokens: int = defaults.MAX_NEW_TOKENS
    batch_size: int = defaults.BATCH_SIZE
    token_budget: int | None = None  # None: budget.py's rule picks one for this model, device and prompts
    tp_size: int = 1  # ranks that split one copy of the model (tensor parallelism); num_processes // tp_size copies
    output: OutputFile | None = None  # the checked .jsonl file every completion is appended to as it is produced
    skip: frozenset[int] = frozenset()  # indices whose completions the output file already holds (resume)


def check_run(mode: object, model: object, prompts: object, num_processes: object, tp_size: object = 1,
              **settings: object) -> tuple[RunConfig, int]:
    """Every input of one run, checked once before any process starts: the run's config and its process count.

    `settings`: max_new_tokens, batch_size, token_budget (None: measured), timeout, output, resume, cpu.
    `model`: a name, or a ResolvedModel (a benchmark resolves its model once for all its runs).
    """
    continuous = lookup_mode(mode).batches is None
    if not isinstance(model, ResolvedModel):
        check_model(model)
    counts = _check_settings(num_processes, tp_size, **settings)
    prompts = prompt_list(prompts)
    world = num_processes or (int(os.environ["WORLD_SIZE"]) if already_launched()
                              else default_processes(settings.get("cpu", False)))
    name = model.name if isinstance(model, ResolvedModel) else model
    check_tp(name, world, tp_size, continuous)
    resolved = model if isinstance(model, ResolvedModel) else locate_model(name)  # builds `small` once, if needed
    return RunConfig(resolved, prompts, mode, token_budget=settings.get("token_budget"), tp_size=tp_size,
                     **counts), world


def _check_settings(num_processes: object, tp_size: object, token_budget: object = None, timeout: object = None,
                    output: object = None, resume: object = False, **others: object) -> dict[str, int]:
    """The run's other inputs: counts, budget, timeout, output file (and resume), process count, torchrun's env.

    Returns max_new_tokens and batch_size, checked.
    """
    if resume and output is None:
        raise ValueError("resume=True (--resume) needs the output file to resume from. "
                         "Fix: pass --output FILE.jsonl (output= in run()), or leave --resume out.")
    counts = {name: whole_number(name, others.get(name, default))
              for name, default in (("max_new_tokens", defaults.MAX_NEW_TOKENS), ("batch_size", defaults.BATCH_SIZE))}
    whole_number("tp_size", tp_size)
    if token_budget is not None:
        whole_number("token_budget", token_budget)
    if timeout is not None:
        launch_timeout(timeout)
    if output is not None:
        output_file(output)
    if num_processes is not None:
        whole_number("num_processes", num_processes)
    refuse_while_launching()  # another thread's launch has torchrun's variables in os.environ: name it instead
    torchrun_env(num_processes)
    return counts


@dataclass
class ProcessContext:
    """What one process builds once for a run and hands to the budget, the split, the timing and generation."""

    accelerator: Accelerator
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    prompt_ids: Tokens  # every prompt of the run, tokenized once, by prompt index
    layout: Layout
    mode: Mode

    @classmethod
    def build(cls, config: RunConfig) -> ProcessContext:
        """Join the run: the Accelerator, this process's place, the model (its TP shard), the prompts' token ids."""
        accelerator = Accelerator()
        layout = Layout.of(accelerator.process_index, accelerator.num_processes, config.tp_size)
        model, tokenizer = load_model(config.model, accelerator.device,
                                      tp_options=load_options(layout) if config.tp_size > 1 else None)
        return cls(accelerator, model, tokenizer, token_ids(tokenizer, config.prompts), layout,
                   lookup_mode(config.mode))


def prepare(config: RunConfig) -> tuple[ProcessContext, RunConfig]:
    """In each process, once: its context, the output file ready to append, and the config with its token budget."""
    context = ProcessContext.build(config)
    if config.output:
        begin_output(config.output, dtype_name(context.model.dtype), context.accelerator.is_main_process)
    return context, settle_budget(context, config)


def run_on_this_process(config: RunConfig) -> RunResult | None:
    """The function every process runs: build its context once, then one timed run; rank 0's result."""
    context, config = prepare(config)
    return timed_run(context, config)


def share_of_replica(items: list, layout: Layout) -> list:
    """This replica's contiguous share of `items` (each carrying its index), as accelerate splits; no padding."""
    size, extra = divmod(len(items), layout.replicas)  # the first `extra` replicas take one more
    start = layout.replica * size + min(layout.replica, extra)
    return items[start:start + size + (layout.replica < extra)]


def balanced_share(items: list[Item], prompt_ids: Tokens, max_new_tokens: int, layout: Layout) -> list[Item]:
    """This replica's share when prompts are split by token count; every rank computes the same split."""
    costs = [len(prompt_ids[i]) + max_new_tokens for i, _ in items]
    return [items[i] for i in balanced_shares(costs, layout.replicas)[layout.replica]]


def in_prompt_order(gathered: list[Completion], expected: list[int]) -> list[Completion]:
    """Sort gathered completions by prompt index and check that each expected index has exactly one."""
    ordered = sorted(gathered, key=lambda c: c.index)
    if [c.index for c in ordered] != sorted(expected):
        raise RuntimeError(f"Gathered {len(ordered)} results for {len(expected)} prompts: "
                           "some are missing or doubled.")
    return ordered


def settle_budget(context: ProcessContext, config: RunConfig) -> RunConfig:
    """The config with a token budget where its mode needs one: the caller's, or the rule's (rank 0 probes)."""
    if config.token_budget is not None or context.mode.knob != "token_budget":
        return config
    rows = [saturating_rows(context.model) if context.accelerator.is_main_process else 0]
    broadcast_object_list(rows)  # every process batches with the same budget
    lengths = [len(row) for row in context.prompt_ids]
    return replace(config, token_budget=token_budget_for(rows[0], lengths, config.max_new_tokens))


def timed_run(context: ProcessContext, config: RunConfig) -> RunResult | None:
    """Split, generate, gather once, summarise on rank 0 (None elsewhere); the clock covers the slowest rank.

    The clock starts at a barrier and stops when the one gather returns, which no rank leaves before all arrived.
    """
    accelerator, layout = context.accelerator, context.layout
    todo = [(i, p) for i, p in enumerate(config.prompts) if i not in config.skip]
    share = (balanced_share(todo, context.prompt_ids, config.max_new_tokens, layout) if context.mode.balanced
             else share_of_replica(todo, layout))
    work = Work(share, [context.prompt_ids[i] for i, _ in share], config.max_new_tokens,
                is_synthetic(config.model.name))
    accelerator.wait_for_everyone()
    start = time.perf_counter()
    mine, rows, calls = generate_share(context, work, config)
    stats = ProcessStats(accelerator.process_index, layout.replica, len(share),
                         sum(c.prompt_tokens for c in mine), sum(c.generated_tokens for c in mine), rows, calls,
                         round(time.perf_counter() - start, 4), parameter_bytes(context.model))
    # A replica's other ranks hold the same completions; rank 0 has the prompts, so none travels back.
    handed_in = [replace(c, prompt="") for c in mine] if layout.is_replica_lead else []
    gathered = gather_object([(handed_in, stats)])
    wall = time.perf_counter() - start
    if not accelerator.is_main_process:
        return None
    results = in_prompt_order([replace(c, prompt=config.prompts[c.index]) for done, _ in gathered for c in done],
                              [i for i, _ in todo])
    per_process = [stats for _, stats in gathered]
    return RunResult(results, RunSummary.of(run_settings(context, config), results, per_process, wall), per_process)


def run_settings(context: ProcessContext, config: RunConfig) -> dict:
    """What ran where, as the summary names it."""
    knob = context.mode.knob
    return {"mode": config.mode, "model": config.model.name, "dtype": dtype_name(context.model.dtype),
            "device": context.accelerator.device.type, "num_processes": context.accelerator.num_processes,
            "tp_size": config.tp_size, "replicas": context.layout.replicas, "knob": knob,
            **{name: getattr(config, name) if name == knob else None for name in KNOBS},
            "max_new_tokens": config.max_new_tokens}


def generate_share(context: ProcessContext, work: Work, config: RunConfig) -> tuple[list[Completion], int, int]:
    """This process's completions, the rows its forward steps decoded, and how many steps (calls) it made.

    Only the first rank of a replica appends to the output file and counts progress (the others hold the same).
    """
    def produced(done: list[Completion]) -> None:
        if config.output:
            append_completions(config.output.path, done)
        tell(len(done), sum(c.generated_tokens for c in done))

    knob = getattr(config, context.mode.knob) if context.mode.knob else 1
    on_batch = produced if context.layout.is_replica_lead else None
    return generate_with_mode(context.model, context.tokenizer, work, context.mode, knob, on_batch)


def generate_with_mode(model, tokenizer, work: Work, mode: Mode, knob: int,
                       on_batch=None) -> tuple[list[Completion], int, int]:
    """Generate for `work` as `mode` groups it (the one way into every mode): completions, rows decoded, steps."""
    if mode.batches is None:  # the scheduler forms a new batch at every step
        mine, steps = continuous_items(model, tokenizer, work, knob, on_batch)
        return mine, sum(c.generated_tokens for c in mine), steps
    batches = mode.batches([len(row) for row in work.ids], knob, work.max_new_tokens)
    try:
        mine = generate_items(model, tokenizer, work, batches, on_batch, mode.decoder)
    except BatchOutOfMemory as error:
        raise torch.cuda.OutOfMemoryError(out_of_memory(mode, knob, error.rows)) from None
    return mine, len(work.items), len(batches)


def out_of_memory(mode: Mode, knob: int, rows: int) -> str:
    """One line for a batch that did not fit in GPU memory: its size and a smaller setting to try."""
    if mode.knob is None:
        return (f"out of GPU memory on a batch of {rows} prompt(s). Fix: lower --max-new-tokens, shorten the "
                "prompts, or use a smaller model.")
    smaller = max(1, knob // 2)
    return (f"out of GPU memory on a batch of {rows} prompt(s) ({mode.knob.replace('_', ' ')} {knob}). "
            f"Fix: try --{mode.knob.replace('_', '-')} {smaller} ({mode.knob}={smaller} in run()).")


def run(mode: str = "batched", model: str = defaults.MODEL, prompts: list[str] | None = None, *,
        num_processes: int | None = None, max_new_tokens: int = defaults.MAX_NEW_TOKENS,
        batch_size: int = defaults.BATCH_SIZE, token_budget: int | None = None, tp_size: int = 1,
        output: str | None = None, resume: bool = False, progress: bool | None = None,
        timeout: float = DEFAULT_TIMEOUT_S, cpu: bool = False, verbose: bool = True) -> RunResult | None:
    """Launch one inference run on `num_processes` processes and return rank 0's ordered result.

    `output`: a .jsonl file each completion is appended to as it is produced; with `resume=True` the prompts it
    already holds are reused, not generated again. `progress`: a live bar (None: where someone watches).
    `timeout`: seconds a process waits for a peer that does not arrive before the run fails.
    `cpu=True`: CPU processes (fp32) even where GPUs exist. `tp_size`: processes that split one copy of the model
    (tensor parallelism); the num_processes // tp_size copies split the prompts (data parallelism).
    Under torchrun every rank calls run(); rank 0 gets the result, the others None.
    """
    config, world = check_run(mode, model, default_prompts() if prompts is None else prompts, num_processes,
                              tp_size, token_budget=token_budget, timeout=timeout, output=output, resume=resume,
                              max_new_tokens=max_new_tokens, batch_size=batch_size, cpu=cpu)
    made = made_by(model_identity(config.model), max_new_tokens) if output is not None else None
    with claimed(output, list(config.prompts), made, resume) as (out, reused):  # held until every process is done
        config = replace(config, output=out, skip=frozenset(reused))
        bar = Progress(total=len(config.prompts), done=len(reused)) if wanted(progress) else None
        result = launch(run_on_this_process, (config,), num_processes=world, timeout=timeout, cpu=cpu, progress=bar,
                        verbose=verbose)
    return result.with_reused(reused, out.dropped if out else 0) if result else None
