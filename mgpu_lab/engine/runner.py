"""Data parallelism: split prompts over processes, generate on each, gather every result back in prompt order."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object

from .. import defaults
from .batching import balanced_split
from .budget import saturating_rows, token_budget_for
from .continuous import continuous_items
from .generate import BatchOutOfMemory, generate_items, token_ids
from .launch import DEFAULT_TIMEOUT_S, already_launched, default_processes, launch
from .models import check_model, dtype_name, is_synthetic, load_model, model_identity
from .modes import Mode, lookup_mode
from .output import OutputFile, append_completions, begin_output, claimed, made_by
from .progress import Progress, tell, wanted
from .prompts import default_prompts
from .results import Completion, RunResult, RunSummary
from .tensor_parallel import Layout, check_tp, load_options, parameter_bytes
from .validate import run_inputs

Item = tuple[int, str]  # a prompt and its index in the run's prompt list: they travel together end to end
Tokens = list[list[int]]  # every prompt's token ids, by index: each process tokenizes the run's prompts once


@dataclass(frozen=True)
class RunConfig:
    """Everything one inference run needs; it travels to every process."""

    mode: str = "batched"
    model: str = defaults.MODEL
    prompts: tuple[str, ...] = ()
    max_new_tokens: int = defaults.MAX_NEW_TOKENS
    batch_size: int = defaults.BATCH_SIZE
    token_budget: int | None = None  # None: budget.py's rule picks one for this model, device and prompts
    output: OutputFile | None = None  # the checked .jsonl file every completion is appended to as it is produced
    skip: frozenset[int] = frozenset()  # indices whose completions the output file already holds (resume)
    tp_size: int = 1  # ranks that split one copy of the model (tensor parallelism); num_processes // tp_size copies


DEFAULTS = RunConfig()
KNOBS = ("batch_size", "token_budget")  # the RunConfig fields a Mode may name as its knob


def check_run(mode: object, model: object, prompts: object, num_processes: object, tp_size: object = 1,
              cpu: bool = False, **settings: object) -> tuple[str, ...]:
    """Every input of one run, checked in one place before any process starts; the prompts as a tuple."""
    continuous = lookup_mode(mode).batches is None
    check_model(model)
    prompts = run_inputs(prompts, num_processes, tp_size=tp_size, **settings)
    world = num_processes or (int(os.environ["WORLD_SIZE"]) if already_launched() else default_processes(cpu))
    check_tp(model, world, tp_size, continuous)
    return prompts


def split_for_rank(items: list, layout: Layout) -> list:
    """This replica's contiguous share of `items` (each already carrying its index), as accelerate splits; no padding."""
    size, extra = divmod(len(items), layout.replicas)  # the first `extra` replicas take one more
    start = layout.replica * size + min(layout.replica, extra)
    return items[start:start + size + (layout.replica < extra)]


def balanced_share(items: list[Item], ids: Tokens, max_new_tokens: int, layout: Layout) -> list[Item]:
    """This replica's share when prompts are split by token count; every rank computes the same split."""
    costs = [len(ids[i]) + max_new_tokens for i, _ in items]
    return [items[i] for i in balanced_split(costs, layout.replicas)[layout.replica]]


def in_prompt_order(gathered: list[Completion], expected: list[int]) -> list[Completion]:
    """Sort gathered completions by prompt index and check that each expected index has exactly one."""
    ordered = sorted(gathered, key=lambda c: c.index)
    if [c.index for c in ordered] != sorted(expected):
        raise RuntimeError(f"Gathered {len(ordered)} results for {len(expected)} prompts: "
                           "some are missing or doubled.")
    return ordered


def run_on_this_process(config: RunConfig) -> RunResult:
    """The function every process runs: join the group, load the model, tokenize once, then one timed run."""
    accelerator = Accelerator()
    model, tokenizer = load_model(config.model, accelerator.device, split=split_options(accelerator, config))
    if config.output:
        begin_output(config.output, dtype_name(model.dtype), accelerator.is_main_process)
    ids = token_ids(tokenizer, config.prompts)
    return timed_run(accelerator, model, tokenizer, settle_budget(config, model, ids, accelerator), ids)


def layout_of(accelerator: Accelerator, config: RunConfig) -> Layout:
    """Which replica this process serves and its rank inside it."""
    return Layout.of(accelerator.process_index, accelerator.num_processes, config.tp_size)


def split_options(accelerator: Accelerator, config: RunConfig) -> dict | None:
    """The from_pretrained options that split the model between a replica's ranks; None: each holds it whole."""
    return load_options(layout_of(accelerator, config)) if config.tp_size > 1 else None


def settle_budget(config: RunConfig, model, ids: Tokens, accelerator: Accelerator) -> RunConfig:
    """The config with a token budget where its mode needs one: the caller's, or the rule's (rank 0 probes)."""
    if config.token_budget is not None or lookup_mode(config.mode).knob != "token_budget":
        return config
    rows = [saturating_rows(model) if accelerator.is_main_process else 0]
    broadcast_object_list(rows)  # every process batches with the same budget
    lengths = [len(row) for row in ids]
    return replace(config, token_budget=token_budget_for(rows[0], lengths, config.max_new_tokens))


def timed_run(accelerator: Accelerator, model, tokenizer, config: RunConfig, ids: Tokens) -> RunResult:
    """Split, generate, gather, summarise; the clock runs between two barriers, so it covers the slowest rank.

    `ids`: the token ids of every prompt of `config`, by index (token_ids(tokenizer, config.prompts)).
    """
    mode, layout = lookup_mode(config.mode), layout_of(accelerator, config)
    todo = [(i, p) for i, p in enumerate(config.prompts) if i not in config.skip]
    share = (balanced_share(todo, ids, config.max_new_tokens, layout) if mode.balanced
             else split_for_rank(todo, layout))
    accelerator.wait_for_everyone()
    start = time.perf_counter()
    mine, rows, calls = generate_share(model, tokenizer, share, [ids[i] for i, _ in share], mode, config,
                                       layout.reports)
    seconds = time.perf_counter() - start
    gathered = gather_object(mine if layout.reports else [])  # a replica's other ranks hold the same completions
    per_process = gather_object([{"process": accelerator.process_index, "replica": layout.replica,
                                  "prompts": len(share), "prompt_tokens": sum(c.prompt_tokens for c in mine),
                                  "generated_tokens": sum(c.generated_tokens for c in mine),
                                  "rows": rows, "calls": calls, "seconds": round(seconds, 4),
                                  "parameter_bytes": parameter_bytes(model)}])
    accelerator.wait_for_everyone()
    wall = time.perf_counter() - start
    results = in_prompt_order(gathered, [i for i, _ in todo])
    settings = {"mode": config.mode, "model": config.model, "dtype": dtype_name(model.dtype),
                "device": accelerator.device.type, "num_processes": accelerator.num_processes,
                "tp_size": config.tp_size, "replicas": layout.replicas, "knob": mode.knob,
                **{knob: getattr(config, knob) if knob == mode.knob else None for knob in KNOBS},
                "max_new_tokens": config.max_new_tokens}
    return RunResult(results, RunSummary.of(settings, results, per_process, wall), per_process)


def generate_share(model, tokenizer, share: list[Item], ids: Tokens, mode: Mode, config: RunConfig,
                   reports: bool = True) -> tuple[list[Completion], int, int]:
    """This process's completions, the rows its forward steps decoded, and how many steps (calls) it made.

    `reports`: False on a tensor-parallel rank whose replica's first rank writes and counts the same completions.
    """
    knob = getattr(config, mode.knob) if mode.knob else 1
    force = is_synthetic(config.model)

    def produced(done: list[Completion]) -> None:
        if not reports:
            return
        if config.output:
            append_completions(config.output.path, done)
        tell(len(done), sum(c.generated_tokens for c in done))

    if mode.batches is None:  # the scheduler forms a new batch at every step
        mine, steps = continuous_items(model, tokenizer, share, config.max_new_tokens, knob, force, produced, ids)
        return mine, sum(c.generated_tokens for c in mine), steps
    batches = mode.batches([len(row) for row in ids], knob, config.max_new_tokens)
    try:
        mine = generate_items(model, tokenizer, share, config.max_new_tokens, batches, force, produced, ids,
                              decoder=mode.decoder)
    except BatchOutOfMemory as error:
        raise torch.cuda.OutOfMemoryError(out_of_memory(mode, knob, error.rows)) from None
    return mine, len(share), len(batches)


def out_of_memory(mode: Mode, knob: int, rows: int) -> str:
    """One line for a batch that did not fit in GPU memory: its size and a smaller setting to try."""
    if mode.knob is None:
        return (f"out of GPU memory on a batch of {rows} prompt(s). Fix: lower --max-new-tokens, shorten the "
                "prompts, or use a smaller model.")
    smaller = max(1, knob // 2)
    return (f"out of GPU memory on a batch of {rows} prompt(s) ({mode.knob.replace('_', ' ')} {knob}). "
            f"Fix: try --{mode.knob.replace('_', '-')} {smaller} ({mode.knob}={smaller} in run()).")


def run(mode: str = DEFAULTS.mode, model: str = DEFAULTS.model, prompts: list[str] | None = None,
        num_processes: int | None = None, max_new_tokens: int = DEFAULTS.max_new_tokens,
        batch_size: int = DEFAULTS.batch_size, verbose: bool = True, token_budget: int | None = None,
        output: str | None = None, resume: bool = False, progress: bool | None = None,
        timeout: float = DEFAULT_TIMEOUT_S, cpu: bool = False, tp_size: int = 1) -> RunResult:
    """Launch one inference run on `num_processes` processes and return rank 0's ordered result.

    `output`: a .jsonl file each completion is appended to as it is produced; with `resume=True` the prompts it
    already holds are reused, not generated again. `progress`: a live bar (None: where someone watches).
    `timeout`: seconds a process waits for a peer that does not arrive before the run fails.
    `cpu=True`: CPU processes (fp32) even where GPUs exist. `tp_size`: processes that split one copy of the model
    (tensor parallelism); the num_processes // tp_size copies split the prompts (data parallelism).
    """
    prompts = check_run(mode, model, default_prompts() if prompts is None else prompts, num_processes, tp_size, cpu,
                        token_budget=token_budget, timeout=timeout, output=output, resume=resume,
                        max_new_tokens=max_new_tokens, batch_size=batch_size)
    settings = made_by(model_identity(model), max_new_tokens)
    with claimed(output, list(prompts), settings, resume) as (out, reused):  # held until every process is done
        config = RunConfig(mode=mode, model=model, prompts=prompts, max_new_tokens=max_new_tokens,
                           batch_size=batch_size, token_budget=token_budget, output=out, skip=frozenset(reused),
                           tp_size=tp_size)
        bar = Progress(total=len(prompts), done=len(reused)) if wanted(progress) else None
        result = launch(run_on_this_process, config, num_processes=num_processes, verbose=verbose, progress=bar,
                        timeout=timeout, cpu=cpu)
    return result.with_reused(reused, out.dropped if out else 0)
