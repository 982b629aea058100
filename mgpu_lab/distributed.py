"""Data parallelism: split prompts over processes, generate on each, gather every result back in prompt order."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from accelerate import Accelerator
from accelerate.utils import gather_object

from .batching import DEFAULT_TOKEN_BUDGET, balanced_split
from .checks import run_inputs
from .continuous import generate_continuous
from .generate import (Completion, generate_batched, generate_budget, generate_naive, generate_sorted,
                       prompt_lengths)
from .launch import launch
from .models import check_model, is_synthetic, load_model
from .prompts import default_prompts


@dataclass(frozen=True)
class RunConfig:
    """Everything one inference run needs; it travels to every process."""

    mode: str = "batched"
    model: str = "tiny"
    prompts: tuple[str, ...] = ()
    max_new_tokens: int = 100
    batch_size: int = 16
    token_budget: int = DEFAULT_TOKEN_BUDGET


@dataclass
class RunResult:
    """One result per prompt, in prompt order, and a summary of the run."""

    results: list[Completion]
    summary: dict
    per_process: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The JSON form the command line prints: {"summary": ..., "results": [...]}."""
        return {"summary": self.summary, "per_process": self.per_process,
                "results": [asdict(c) for c in self.results]}


@dataclass(frozen=True)
class Mode:
    """A way to run the prompts: how one process generates, and whether prompts are split by tokens."""

    generate: Callable[..., list[Completion]]
    balanced: bool = False
    about: str = ""


def _budget(model, tokenizer, prompts, config: RunConfig, **kwargs) -> list[Completion]:
    """Token-budget batches: the generation of both the budget and the balanced modes."""
    return generate_budget(model, tokenizer, prompts, config.max_new_tokens, config.token_budget, **kwargs)


MODES = {
    "naive": Mode(lambda m, t, p, c, **kw: generate_naive(m, t, p, c.max_new_tokens, **kw),
                  about="one generate call per prompt (the article's first program)"),
    "batched": Mode(lambda m, t, p, c, **kw: generate_batched(m, t, p, c.max_new_tokens, c.batch_size, **kw),
                    about="batches of --batch-size in input order (the article's second program)"),
    "sorted": Mode(lambda m, t, p, c, **kw: generate_sorted(m, t, p, c.max_new_tokens, c.batch_size, **kw),
                   about="batches of --batch-size prompts of similar length, order restored"),
    "budget": Mode(_budget, about="length-sorted batches capped at --token-budget padded tokens"),
    "balanced": Mode(_budget, balanced=True,
                     about="token-budget batches, prompts split over processes by token count"),
    "continuous": Mode(lambda m, t, p, c, **kw: generate_continuous(m, t, p, c.max_new_tokens, c.token_budget,
                                                                    **kw),
                       about="continuous batching: transformers' generate_batch with paged attention"),
}


def uses_batch_size(name: str) -> bool:
    """True for the modes whose batches are a fixed number of prompts."""
    return name in ("batched", "sorted")


def mode_names() -> list[str]:
    """Every generation mode the runner, the CLI and the benchmark accept."""
    return list(MODES)


def lookup_mode(name: str) -> Mode:
    """The Mode behind a name, or an error listing the known ones."""
    if name not in MODES:
        raise ValueError(f"Unknown mode {name!r}. Known modes: {', '.join(MODES)}.")
    return MODES[name]


def split_for_rank(items: list, accelerator: Accelerator) -> list:
    """This process's contiguous share of `items`, each kept with its original index; no padding."""
    with accelerator.split_between_processes(list(enumerate(items))) as share:
        return share


def balanced_share(prompts: list[str], tokenizer, max_new_tokens: int, accelerator: Accelerator) -> list:
    """This process's share when prompts are split by token count; every rank computes the same split."""
    costs = [length + max_new_tokens for length in prompt_lengths(tokenizer, prompts)]
    mine = balanced_split(costs, accelerator.num_processes)[accelerator.process_index]
    return [(i, prompts[i]) for i in mine]


def who_gets_what(count: int, apply_padding: bool = False) -> list[list[int]]:
    """Run on every process: the prompt indices each rank receives from split_between_processes, gathered."""
    accelerator = Accelerator()
    with accelerator.split_between_processes(list(range(count)), apply_padding=apply_padding) as share:
        return gather_object([share])


def in_prompt_order(gathered: list[Completion], expected: int) -> list[Completion]:
    """Sort gathered completions by prompt index and check that each prompt has exactly one."""
    ordered = sorted(gathered, key=lambda c: c.index)
    if [c.index for c in ordered] != list(range(expected)):
        raise RuntimeError(f"Gathered {len(ordered)} results for {expected} prompts: some are missing or doubled.")
    return ordered


def run_on_this_process(config: RunConfig) -> RunResult:
    """The function every process runs: join the group, load the model, then one timed run."""
    accelerator = Accelerator()
    model, tokenizer = load_model(config.model, accelerator.device)
    return timed_run(accelerator, model, tokenizer, config)


def timed_run(accelerator: Accelerator, model, tokenizer, config: RunConfig) -> RunResult:
    """Split, generate, gather, summarise; the clock runs between two barriers, so it covers the slowest rank."""
    how = lookup_mode(config.mode)
    prompts = list(config.prompts)
    share = (balanced_share(prompts, tokenizer, config.max_new_tokens, accelerator) if how.balanced
             else split_for_rank(prompts, accelerator))
    accelerator.wait_for_everyone()
    start = time.perf_counter()
    mine = how.generate(model, tokenizer, [p for _, p in share], config,
                        indices=[i for i, _ in share], force_length=is_synthetic(config.model))
    seconds = time.perf_counter() - start
    gathered = gather_object(mine)
    timings = gather_object([{"process": accelerator.process_index, "prompts": len(share),
                              "prompt_tokens": sum(c.prompt_tokens for c in mine),
                              "generated_tokens": sum(c.generated_tokens for c in mine),
                              "seconds": round(seconds, 4)}])
    accelerator.wait_for_everyone()
    wall = time.perf_counter() - start
    results = in_prompt_order(gathered, len(config.prompts))
    return RunResult(results, summarize(config, results, wall, accelerator, model), timings)


def summarize(config: RunConfig, results: list[Completion], wall: float, accelerator, model) -> dict:
    """The run's figures: what ran where, honest token counts, wall time between barriers, tokens/s."""
    generated = sum(c.generated_tokens for c in results)
    real = sum(c.prompt_tokens + c.generated_tokens for c in results)
    padded = sum(c.padded_tokens for c in results)
    return {
        "mode": config.mode, "model": config.model, "dtype": str(model.dtype).removeprefix("torch."),
        "device": accelerator.device.type, "num_processes": accelerator.num_processes,
        "batch_size": config.batch_size if uses_batch_size(config.mode) else None,
        "token_budget": config.token_budget if config.mode in ("budget", "balanced") else None,
        "max_new_tokens": config.max_new_tokens, "prompts": len(results),
        "prompt_tokens": sum(c.prompt_tokens for c in results), "generated_tokens": generated,
        "stopped_at_eos": sum(c.stop_reason == "eos" for c in results),
        "padded_tokens": padded, "padding_ratio": round(padded / real, 3) if real else 0.0,
        "wall_s": round(wall, 4), "tokens_per_s": round(generated / wall, 2) if wall > 0 else 0.0,
    }


def run(mode: str = "batched", model: str = "tiny", prompts: list[str] | None = None,
        num_processes: int | None = None, max_new_tokens: int = 100, batch_size: int = 16,
        verbose: bool = True, token_budget: int = DEFAULT_TOKEN_BUDGET) -> RunResult:
    """Launch one inference run on `num_processes` processes and return rank 0's ordered result."""
    lookup_mode(mode)  # every mistake fails here, before any process starts
    check_model(model)
    prompts = run_inputs(default_prompts() if prompts is None else prompts, num_processes,
                         max_new_tokens=max_new_tokens, batch_size=batch_size, token_budget=token_budget)
    config = RunConfig(mode, model, prompts, max_new_tokens, batch_size, token_budget)
    return launch(run_on_this_process, config, num_processes=num_processes, verbose=verbose)
