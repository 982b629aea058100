"""Plain-text views of a run for notebooks and the terminal: the summary, the split, a few completions."""

from __future__ import annotations

import textwrap

from ..engine.results import Completion, ProcessStats, RunResult, RunSummary


def mean_batch(summary: RunSummary) -> str:
    """The mean number of sequences one forward step carried, or a dash when nothing ran."""
    return "-" if summary.mean_batch_size is None else f"{summary.mean_batch_size:.1f}"


def format_summary(summary: RunSummary) -> str:
    """The run's figures in a few aligned lines."""
    s = summary
    return "\n".join([
        f"mode: {s.mode}  model: {s.model} ({s.dtype})  processes: {s.num_processes} x {s.device}  "
        f"{s.batching()}  mean batch: {mean_batch(s)}",
        f"prompts: {s.prompts}{reused(s)}  prompt tokens: {s.prompt_tokens}  "
        f"generated tokens: {s.generated_tokens} ({s.stopped_at_eos} prompts stopped at EOS)  "
        f"padding: {s.padding_ratio:.2f} per real token",
        f"wall time: {s.wall_s:.2f} s  tokens/s: {s.tokens_per_s:.1f}",
    ])


def reused(summary: RunSummary) -> str:
    """How many completions a resumed run took from its output file instead of generating them."""
    dropped = "; its unfinished last line dropped" if summary.partial_dropped else ""
    return f" ({summary.reused} reused from the output file{dropped})" if summary.reused or dropped else ""


def format_split(per_process: list[ProcessStats]) -> str:
    """How many prompts and tokens each process handled."""
    return "\n".join(f"process {p.process}: {p.prompts} prompts ({p.prompt_tokens} tokens), "
                     f"{p.generated_tokens} tokens generated" for p in per_process)


def format_completions(results: list[Completion], count: int = 3, width: int = 100) -> str:
    """The first `count` completions, each with its prompt, token count and why it stopped."""
    blocks = []
    for c in results[:count]:
        text = textwrap.shorten(c.text.replace("\n", " ") or "(empty)", width=width, placeholder=" ...")
        blocks.append(f"[{c.index}] {c.prompt}\n    -> {text}\n    ({c.generated_tokens} tokens, "
                      f"stopped by {c.stop_reason})")
    return "\n".join(blocks)


def format_batch(tokenizer, batch) -> str:
    """A tokenized batch as the model sees it: one row per prompt, padding shown as a dot."""
    rows = []
    for ids, mask in zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist()):
        tokens = [tokenizer.convert_ids_to_tokens(i) if m else "·" for i, m in zip(ids, mask)]
        rows.append(f"mask {''.join(map(str, mask))}  | " + " ".join(tokens))
    return "\n".join(rows)


def count_identical(these: list[Completion], those: list[Completion]) -> int:
    """How many prompts got exactly the same generated tokens in two runs."""
    return sum(a.token_ids == b.token_ids for a, b in zip(these, those))


def as_record(run: dict | RunSummary | RunResult) -> dict:
    """A benchmark record as it is; a summary as its fields; a run's result with the bytes its processes hold."""
    if isinstance(run, RunResult):
        return {**run.summary.to_dict(), "parameter_bytes": max(p.parameter_bytes for p in run.per_process)}
    return run.to_dict() if isinstance(run, RunSummary) else run


def layout(summary: RunSummary) -> str:
    """How the processes were used: "2 DP" (copies), "TP 2" (one split copy), or "2 x TP 2"."""
    if summary.tp_size == 1:
        return f"{summary.num_processes} DP"
    return f"TP {summary.tp_size}" if summary.replicas == 1 else f"{summary.replicas} x TP {summary.tp_size}"


def format_records(records: list[dict | RunSummary | RunResult]) -> str:
    """Benchmark records (or run summaries, or results) as an aligned table: one line per configuration.

    Beside a peer's records (engine vllm, from bench --peer-python), a column: each kit record's tokens/s over the
    peer's on the same cores and new tokens. Where a record split the model (tensor parallelism), two more columns: the layout, and MB/proc, the model's
    bytes one process holds, where the record knows them (a bench record, a run's result).
    """
    records = [as_record(r) for r in records]
    ratios = any(r.get("x_input_order") for r in records)
    peer = any(r.get("engine") == "vllm" for r in records)
    split = any(RunSummary.from_record(r).tp_size > 1 for r in records)
    lines = [f"{'mode':<11}{'procs':>5}" + (f"{'layout':>10}" if split else "") + f"{'batching':>20}{'mean':>6}"
             f"{'new':>5}{'tokens':>8}{'pad/real':>9}" + (f"{'MB/proc':>9}" if split else "")
             + f"{'wall s':>9}{'tokens/s':>11}{'roofline':>10}"
             + (f"{'x input order':>15}{'limit':>7}" if ratios else "") + (f"{'x vllm':>8}" if peer else "")]
    for r in records:
        s = RunSummary.from_record(r)
        roof = "-" if r.get("roofline_fraction") is None else f"{r['roofline_fraction']:.0%}"
        held = "-" if r.get("parameter_bytes") is None else f"{r['parameter_bytes'] / 1e6:.1f}"
        line = (f"{s.mode:<11}{s.num_processes:>5}" + (f"{layout(s):>10}" if split else "")
                + f"{'vLLM scheduler' if r.get('engine') == 'vllm' else s.batching():>20}{mean_batch(s):>6}{s.max_new_tokens:>5}{s.generated_tokens:>8}"
                f"{s.padding_ratio:>9.2f}" + (f"{held:>9}" if split else "")
                + f"{s.wall_s:>9.2f}{s.tokens_per_s:>11.1f}{roof:>10}")
        if ratios:
            line += f"{r['x_input_order'] or 0:>14.2f}x{r['padding_free_limit'] or 0:>6.2f}x"
        if peer:
            line += f"{r['x_vllm']:>7.2f}x" if r.get("x_vllm") else f"{'-':>8}"
        lines.append(line)
    return "\n".join(lines)


def format_comparison(rows: list[dict]) -> str:
    """The scaling model against a measured table: calls on the busiest rank, measured and predicted seconds."""
    lines = [f"{'GPUs':>4}{'calls':>7}{'measured s':>12}{'model s':>9}{'error':>8}"]
    lines += [f"{r['num_processes']:>4}{r['calls']:>7}{r['measured_s']:>12.1f}{r['predicted_s']:>9.1f}{r['error']:>8.1%}"
              for r in rows]
    return "\n".join(lines)
