"""Matplotlib figures for the scaling lesson: a learner's curve beside the article's and the scaling model's."""

from __future__ import annotations

import matplotlib.pyplot as plt

from ..engine.results import RunSummary
from .report import as_record, layout
from .staircase import article_results, predict_wall


def plot_scaling(records: list[dict], mode: str = "batched", title: str = "") -> plt.Figure:
    """Speed-up and tokens/s vs processes, one line per batch size: this machine, the article's GPUs, the model."""
    article = article_results()
    table = article[mode]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    _speedup_panel(left, table["num_processes"], table["wall_s"], article["prompts"], table.get("batch_size", 1),
                   f"article: {article['gpu']}, {article['model']}")
    runs = [RunSummary.from_record(r) for r in records]
    for batch, mine in by_batch_size(s for s in runs if s.mode == mode).items():
        counts, walls = [s.num_processes for s in mine], [s.wall_s for s in mine]
        color = _speedup_panel(left, counts, walls, mine[0].prompts, batch, f"this machine, batch {batch}")
        right.plot(counts, [s.tokens_per_s for s in mine], "o-", color=color, label=f"batch {batch}")
    right.set(xlabel="processes", ylabel="tokens/s", title="this machine, measured")
    if right.lines:
        right.set_xticks(sorted({n for line in right.lines for n in line.get_xdata()}))
        right.legend(fontsize=8)
    left.plot([1, max(table["num_processes"])], [1, max(table["num_processes"])], ":", color="gray", label="ideal")
    left.set_xticks(range(1, max(table["num_processes"]) + 1))
    left.set(xlabel="processes (GPUs)", ylabel="speed-up over 1 process", title=f"{mode}: speed-up")
    left.legend(fontsize=8)
    figure.suptitle(title or f"Data-parallel scaling, {mode} mode")
    figure.tight_layout()
    return figure


def by_batch_size(runs) -> dict[int, list[RunSummary]]:
    """Run summaries grouped by batch size (1 for naive), each group sorted by process count."""
    groups: dict[int, list[RunSummary]] = {}
    for summary in sorted(runs, key=lambda s: s.num_processes):
        groups.setdefault(summary.batch_size or 1, []).append(summary)
    return dict(sorted(groups.items()))


def _speedup_panel(axis, counts: list[int], walls: list[float], prompts: int, batch: int, label: str) -> str:
    """Measured speed-up as dots and the batch-count model's prediction as a dashed staircase; returns their colour."""
    predicted = predict_wall(walls[0], prompts, counts, batch)
    line, = axis.plot(counts, [walls[0] / w for w in walls], "o-", label=f"{label}, measured")
    axis.plot(counts, [walls[0] / p for p in predicted], "--", color=line.get_color(),
              label=f"{label}, batch-count model")
    return line.get_color()


def plot_modes(summaries_by_set: dict[str, list[RunSummary]]) -> plt.Figure:
    """Tokens/s of every mode, one panel per prompt set, with padding per real token written on each bar."""
    figure, axes = plt.subplots(1, len(summaries_by_set), figsize=(5 * len(summaries_by_set), 4), squeeze=False)
    for axis, (name, summaries) in zip(axes[0], summaries_by_set.items()):
        bars = axis.bar([s.mode for s in summaries], [s.tokens_per_s for s in summaries], color="tab:blue")
        for bar, s in zip(bars, summaries):
            axis.annotate(f"pad {s.padding_ratio:.1f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                          ha="center", va="bottom", fontsize=8)
        axis.set(title=f"{name} prompts", ylabel="tokens/s")
        axis.tick_params(axis="x", labelrotation=30)
    figure.tight_layout()
    return figure



def plot_parallelism(runs: list) -> plt.Figure:
    """Tokens/s and the model's MB per process side by side, one bar per layout (DP, TP, DP x TP)."""
    records = [as_record(r) for r in runs]
    names = [f"{layout(RunSummary.from_record(r))}\n{r['model']}" for r in records]
    figure, (speed, memory) = plt.subplots(1, 2, figsize=(10, 4))
    speed.bar(names, [r["tokens_per_s"] for r in records], color="tab:blue")
    speed.set(title="throughput", ylabel="tokens/s")
    memory.bar(names, [r["parameter_bytes"] / 1e6 for r in records], color="tab:orange")
    memory.set(title="model held by each process", ylabel="MB per process")
    figure.tight_layout()
    return figure


def plot_against_peer(records: list[dict]) -> plt.Figure:
    """Each kit mode's tokens/s as a ratio to vLLM's on the same cores (records from bench --peer-python)."""
    kit = [r for r in records if r.get("x_vllm")]
    figure, axis = plt.subplots(figsize=(max(4, 1.2 * len(kit)), 4))
    names = [f"{r['mode']}\n{r['num_processes']} proc, {r['max_new_tokens']} new" for r in kit]
    bars = axis.bar(names, [r["x_vllm"] for r in kit], color="tab:blue")
    for bar, r in zip(bars, kit):
        axis.annotate(f"{r['x_vllm']:.2f}x", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                      ha="center", va="bottom", fontsize=8)
    axis.axhline(1.0, color="gray", linestyle=":", label="vLLM, same cores")
    axis.set(ylabel="tokens/s over vLLM's", title="the kit's modes against vLLM")
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure
