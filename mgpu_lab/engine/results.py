"""The typed results of a run: one `Completion` per prompt, one `RunSummary`, and the `RunResult` that holds them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace


@dataclass
class Completion:
    """What one prompt produced: text, token ids and honest counts."""

    index: int
    prompt: str
    text: str
    token_ids: list[int] = field(repr=False)
    prompt_tokens: int
    generated_tokens: int
    stop_reason: str  # "eos": the model ended it; "length": max_new_tokens cut it off
    padded_tokens: int = 0  # positions of this row that held padding: left of the prompt, after its EOS


def first_difference(a: list[int], b: list[int]) -> int | None:
    """The first position where two token lists differ, or None when they are equal."""
    for position, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return position
    return None if len(a) == len(b) else min(len(a), len(b))


@dataclass(frozen=True)
class ProcessStats:
    """What one process did in a run: its share of the prompts, tokens, forward steps, seconds and bytes held."""

    process: int
    replica: int
    prompts: int
    prompt_tokens: int
    generated_tokens: int
    rows: int  # sequences its forward steps decoded, summed over the steps
    calls: int  # forward steps (generate calls, or scheduler steps)
    seconds: float
    parameter_bytes: int  # of the model, as this process holds it (its shard under tensor parallelism)


@dataclass(frozen=True)
class RunSummary:
    """The figures of one run: what ran where, how it batched, honest token counts, wall time and tokens/s."""

    mode: str
    model: str
    dtype: str
    device: str
    num_processes: int
    tp_size: int  # processes that split one copy of the model (tensor parallelism); 1: each holds it whole
    replicas: int  # copies of the model that split the prompts: num_processes // tp_size
    knob: str | None  # the setting that sized the batches: "batch_size", "token_budget", or None (one per call)
    batch_size: int | None
    token_budget: int | None
    mean_batch_size: float | None  # sequences one forward step carried, on average; None when nothing ran
    max_new_tokens: int
    prompts: int
    reused: int  # completions a resumed run took from its output file
    partial_dropped: int  # unfinished last lines (0 or 1) a resumed run dropped from its output file
    prompt_tokens: int
    generated_tokens: int
    stopped_at_eos: int
    padded_tokens: int
    padding_ratio: float  # padded positions per real (prompt or generated) token
    wall_s: float
    tokens_per_s: float

    @classmethod
    def of(cls, settings: dict, results: list[Completion], per_process: list[ProcessStats],
           wall: float) -> RunSummary:
        """Build the summary of a run from its settings, its ordered results and each process's figures."""
        generated = sum(c.generated_tokens for c in results)
        real = sum(c.prompt_tokens + c.generated_tokens for c in results)
        padded = sum(c.padded_tokens for c in results)
        calls = sum(p.calls for p in per_process)
        return cls(**settings, prompts=len(results), reused=0, partial_dropped=0,
                   mean_batch_size=round(sum(p.rows for p in per_process) / calls, 2) if calls else None,
                   prompt_tokens=sum(c.prompt_tokens for c in results), generated_tokens=generated,
                   stopped_at_eos=sum(c.stop_reason == "eos" for c in results), padded_tokens=padded,
                   padding_ratio=round(padded / real, 3) if real else 0.0, wall_s=round(wall, 4),
                   tokens_per_s=round(generated / wall, 2) if wall > 0 else 0.0)

    @classmethod
    def from_record(cls, record: dict) -> RunSummary:
        """The summary inside a benchmark record (a record holds every summary field and more).

        Records made before a field existed get what it meant then: nothing reused or dropped, no tensor parallelism.
        """
        before = {"reused": 0, "partial_dropped": 0, "tp_size": 1, "replicas": record.get("num_processes")}
        return cls(**{f.name: record.get(f.name, before.get(f.name)) for f in fields(cls)})

    def batching(self) -> str:
        """How the run grouped its prompts, in a few words: the knob and its value."""
        return f"{self.knob.replace('_', ' ')} {getattr(self, self.knob)}" if self.knob else "one prompt per call"

    def to_dict(self) -> dict:
        """The summary as plain JSON-ready values, under the same names as its fields."""
        return asdict(self)


@dataclass
class RunResult:
    """One result per prompt, in prompt order, and a summary of the run."""

    results: list[Completion]
    summary: RunSummary
    per_process: list[ProcessStats] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The JSON form the command line prints: {"summary": ..., "per_process": ..., "results": [...]}."""
        return {"summary": self.summary.to_dict(), "per_process": [asdict(p) for p in self.per_process],
                "results": [asdict(c) for c in self.results]}

    def with_reused(self, reused: dict[int, Completion], partial_dropped: int = 0) -> RunResult:
        """The result with the completions a resumed run took from its output file put back in prompt order."""
        results = sorted([*self.results, *reused.values()], key=lambda c: c.index)
        return replace(self, results=results, summary=replace(self.summary, prompts=len(results), reused=len(reused),
                                                              partial_dropped=partial_dropped))
