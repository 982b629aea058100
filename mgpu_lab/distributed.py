"""Data parallelism: split prompts over processes, generate on each, gather every result back in prompt order."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from accelerate import Accelerator
from accelerate.utils import gather_object

from .generate import Completion, generate_batched, generate_naive
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


def mode_names() -> list[str]:
    """Every generation mode the runner, the CLI and the benchmark accept."""
    return list(_modes())


def generator(mode: str) -> Callable[..., list[Completion]]:
    """The generation function behind a mode name."""
    modes = _modes()
    if mode not in modes:
        raise ValueError(f"Unknown mode {mode!r}. Known modes: {', '.join(modes)}.")
    return modes[mode]


def _modes() -> dict[str, Callable[..., list[Completion]]]:
    """Mode name -> one process's generation function."""
    return {"naive": _naive, "batched": generate_batched}


def _naive(model, tokenizer, prompts, max_new_tokens, batch_size, **kwargs) -> list[Completion]:
    """Naive mode ignores the batch size: one prompt per generate call."""
    return generate_naive(model, tokenizer, prompts, max_new_tokens, **kwargs)


def split_for_rank(items: list, accelerator: Accelerator) -> list:
    """This process's contiguous share of `items`, each kept with its original index; no padding."""
    with accelerator.split_between_processes(list(enumerate(items))) as share:
        return share


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
    generate = generator(config.mode)
    share = split_for_rank(list(config.prompts), accelerator)
    accelerator.wait_for_everyone()
    start = time.perf_counter()
    mine = generate(model, tokenizer, [p for _, p in share], config.max_new_tokens, config.batch_size,
                    indices=[i for i, _ in share], force_length=is_synthetic(config.model))
    seconds = time.perf_counter() - start
    gathered = gather_object(mine)
    timings = gather_object([{"process": accelerator.process_index, "prompts": len(share),
                              "generated_tokens": sum(c.generated_tokens for c in mine),
                              "seconds": round(seconds, 4)}])
    accelerator.wait_for_everyone()
    wall = time.perf_counter() - start
    results = in_prompt_order(gathered, len(config.prompts))
    return RunResult(results, summarize(config, results, wall, accelerator, model), timings)


def summarize(config: RunConfig, results: list[Completion], wall: float, accelerator, model) -> dict:
    """The run's figures: what ran where, honest token counts, wall time between barriers, tokens/s."""
    generated = sum(c.generated_tokens for c in results)
    return {
        "mode": config.mode, "model": config.model, "dtype": str(model.dtype).removeprefix("torch."),
        "device": accelerator.device.type, "num_processes": accelerator.num_processes,
        "batch_size": config.batch_size if config.mode != "naive" else 1,
        "max_new_tokens": config.max_new_tokens, "prompts": len(results),
        "prompt_tokens": sum(c.prompt_tokens for c in results), "generated_tokens": generated,
        "stopped_at_eos": sum(c.stop_reason == "eos" for c in results),
        "wall_s": round(wall, 4), "tokens_per_s": round(generated / wall, 2) if wall > 0 else 0.0,
    }


def run(mode: str = "batched", model: str = "tiny", prompts: list[str] | None = None,
        num_processes: int | None = None, max_new_tokens: int = 100, batch_size: int = 16,
        verbose: bool = True) -> RunResult:
    """Launch one inference run on `num_processes` processes and return rank 0's ordered result."""
    generator(mode)  # an unknown mode or model fails here, before any process starts
    check_model(model)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    config = RunConfig(mode, model, tuple(default_prompts() if prompts is None else prompts),
                       max_new_tokens, batch_size)
    return launch(run_on_this_process, config, num_processes=num_processes, verbose=verbose)
