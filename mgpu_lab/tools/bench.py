"""The benchmark: sweep modes x processes x batch sizes x new tokens, warm up, repeat, keep the median, record all."""

from __future__ import annotations

import csv
import datetime
import io
import itertools
import json
import os
import platform
import statistics
from dataclasses import dataclass, replace
from pathlib import Path

import accelerate
import torch
import transformers
from tqdm.auto import tqdm

from .. import __version__, defaults
from ..course.roofline import bandwidth_for, roofline_fraction
from ..engine.models import is_synthetic, resolve_model
from ..engine.modes import lookup_mode
from ..engine.results import RunSummary
from ..engine.runner import RunConfig, check_run, prepare, timed_run
from ..engine.tensor_parallel import parameter_bytes
from ..engine.validate import positive_number, whole_number
from ..files import lock, write_whole
from ..launcher.launch import launch
from .peer import Peer, agreement, check_peer, measure_peer

RECORDS, RECORDS_CSV = "records.jsonl", "records.csv"


@dataclass(frozen=True)
class Sweep:
    """The grid a benchmark runs, and how often each point is repeated."""

    modes: tuple[str, ...] = ("naive", "batched")
    num_processes: tuple[int, ...] = (1, 2)
    tp_sizes: tuple[int, ...] = (1,)  # a TP size runs with each process count it divides
    batch_sizes: tuple[int, ...] = (defaults.BATCH_SIZE,)
    max_new_tokens: tuple[int, ...] = (defaults.MAX_NEW_TOKENS,)
    model: str = defaults.MODEL
    prompts: tuple[str, ...] = ()
    prompt_set: str = "default"
    repeats: int = 3
    bandwidth_gbs: float | None = None
    token_budget: int | None = None  # None: measured by the first point that needs one
    peer_python: str | None = None  # a venv's Python with vLLM: its LLM.generate is measured beside each point

    def points(self) -> list[tuple[str, int, int, int | None, int]]:
        """Every (mode, processes, TP size, batch size, new tokens) to measure; None where the knob is not batch size.

        A TP size runs with the process counts it divides (1, 2 over processes 1, 2: 1x1, 2x1 and 1 replica of TP 2).
        """
        grid = itertools.product(self.modes, self.num_processes, self.tp_sizes, self.batch_sizes, self.max_new_tokens)
        return list(dict.fromkeys((m, n, t, b if lookup_mode(m).knob == "batch_size" else None, k)
                                  for m, n, t, b, k in grid if n % t == 0))


def measure_on_this_process(config: RunConfig, repeats: int) -> dict | None:
    """Every process runs this: the run's context once, a short warm-up run not counted, then `repeats` runs.

    Rank 0's figures; None on the other ranks.
    """
    context, config = prepare(config)  # the same context run() builds: model, tokenizer, prompt ids, budget
    warm = context.accelerator.num_processes * 4
    timed_run(context, replace(config, prompts=config.prompts[:warm], max_new_tokens=4))
    runs = [timed_run(context, config) for _ in range(repeats)]
    if not context.accelerator.is_main_process:
        return None
    model = context.model
    return {"runs": [r.summary for r in runs], "device_name": device_name(context.accelerator.device),
            "token_ids": [c.token_ids for c in runs[-1].results],  # for the agreement with a peer, not recorded
            "model_params": model.num_parameters(),
            "model_bytes": model.num_parameters() * model.dtype.itemsize,
            "parameter_bytes": parameter_bytes(model)}  # what one process holds: model_bytes / tp_size, about


def device_name(device: torch.device) -> str:
    """The GPU's marketing name, or the CPU's architecture."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.machine()})"


def make_record(sweep: Sweep, measured: dict) -> dict:
    """One flat-enough record per configuration: the median of the repeats plus everything to compare later."""
    runs: list[RunSummary] = measured.pop("runs")
    median = replace(runs[0], wall_s=statistics.median(r.wall_s for r in runs),
                     tokens_per_s=round(statistics.median(r.tokens_per_s for r in runs), 2))
    return {**median.to_dict(), "engine": "mgpu_lab", "prompt_set": sweep.prompt_set,
            "synthetic": is_synthetic(sweep.model), "repeats": len(runs), "wall_s_all": [r.wall_s for r in runs], **measured,
            **roofline_columns(median, measured, sweep.bandwidth_gbs),
            "versions": {"mgpu_lab": __version__, "torch": torch.__version__,
                         "transformers": transformers.__version__, "accelerate": accelerate.__version__},
            "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def roofline_columns(summary: RunSummary, measured: dict, bandwidth_gbs: float | None) -> dict:
    """Bandwidth used and the fraction of the memory-bandwidth bound reached, when the GPU is known."""
    bandwidth = bandwidth_gbs or bandwidth_for(measured["device_name"])
    if bandwidth is None:
        return {"bandwidth_gbs": None, "roofline_fraction": None}
    if not summary.mean_batch_size:  # no prompts, no batch
        return {"bandwidth_gbs": bandwidth, "roofline_fraction": None}
    fraction = roofline_fraction(summary.tokens_per_s, summary.num_processes, bandwidth,
                                 measured["model_bytes"], summary.mean_batch_size)
    return {"bandwidth_gbs": bandwidth, "roofline_fraction": round(fraction, 4)}


def check_sweep(sweep: Sweep) -> list[tuple[RunConfig, int]]:
    """Every point of the sweep checked as one run is (check_run), before any process starts: each point's config
    and process count, its model resolved once for them all."""
    for name in ("modes", "num_processes", "tp_sizes", "batch_sizes", "max_new_tokens"):
        values = getattr(sweep, name)
        if not isinstance(values, (list, tuple)) or not values:
            raise TypeError(f"{name} must be a non-empty tuple, got {values!r}.")
        for value in values if name != "modes" else ():
            whole_number(name, value)
    whole_number("repeats", sweep.repeats)
    if sweep.peer_python is not None:
        check_peer(sweep.peer_python, sweep.model)
    if sweep.bandwidth_gbs is not None:
        positive_number("bandwidth_gbs", sweep.bandwidth_gbs)
    if not sweep.points():
        raise ValueError(f"No TP size of {sweep.tp_sizes} divides a process count of {sweep.num_processes}. "
                         "Fix: add 1 to --tp-sizes, or a process count that is a multiple of one of them.")
    model = resolve_model(sweep.model)
    return [check_run(mode, model, sweep.prompts, processes, tp, token_budget=sweep.token_budget,
                      max_new_tokens=new_tokens, batch_size=batch or defaults.BATCH_SIZE)
            for mode, processes, tp, batch, new_tokens in sweep.points()]


def run_sweep(sweep: Sweep, progress: bool = True, out_dir: Path | None = None) -> list[dict]:
    """Measure every point of the sweep, each in a fresh launch; save each record to `out_dir` as it is made.

    Without a given token budget, the first point that needs one measures it and every later point (with the
    same new tokens) reuses it, so the modes are compared at one budget.
    """
    records, budgets, peers = [], {}, {}
    for config, processes in tqdm(check_sweep(sweep), desc="bench", disable=not progress):
        config = replace(config, token_budget=sweep.token_budget or budgets.get(config.max_new_tokens))
        same_cores = (processes, config.max_new_tokens)
        if sweep.peer_python and same_cores not in peers:  # the peer first, on the same cores
            peers[same_cores] = measure_peer(Peer(sweep.peer_python, processes, sweep.repeats), config)
            records.append({**peers[same_cores].record, "prompt_set": sweep.prompt_set})
            if out_dir is not None:
                save_records(records[-1:], out_dir)
        measured = launch(measure_on_this_process, (config, sweep.repeats), num_processes=processes, verbose=False)
        if measured is None:  # a non-zero rank under torchrun: rank 0 keeps the records
            continue
        kit_ids = measured.pop("token_ids")
        records.append(make_record(sweep, measured))
        if same_cores in peers:
            records[-1]["vllm_agreement"] = agreement(kit_ids, *peers[same_cores].ids_and_stops)
        if out_dir is not None:
            save_records(records[-1:], out_dir)
        if records[-1]["token_budget"]:
            budgets.setdefault(config.max_new_tokens, records[-1]["token_budget"])
    return records


def save_records(records: list[dict], out_dir: Path) -> tuple[Path, Path]:
    """Append the records to records.jsonl in one write (no reader sees half a line); rebuild records.csv."""
    out_dir.mkdir(parents=True, exist_ok=True)
    jsonl, table = out_dir / RECORDS, out_dir / RECORDS_CSV
    data = "".join(json.dumps(r, allow_nan=False) + "\n" for r in records).encode()
    handle = os.open(jsonl, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        lock(handle)  # writers take turns, so the last csv holds every record
        if os.write(handle, data) != len(data):
            raise OSError(f"{jsonl}: the disk took only part of the records (is it full?)")
        _write_csv(load_records(jsonl), table)
    finally:
        os.close(handle)
    return jsonl, table


def check_records_folder(out_dir: Path) -> Path:
    """A folder bench may append to: any records.jsonl in it holds bench records, any records.csv has its .jsonl."""
    jsonl, table = out_dir / RECORDS, out_dir / RECORDS_CSV
    fix = "Fix: choose another --out (bench appends its records to records.jsonl and rebuilds records.csv)."
    if jsonl.exists():
        try:
            ours = all({"mode", "tokens_per_s"} <= record.keys() for record in load_records(jsonl))
        except (ValueError, AttributeError, UnicodeDecodeError):
            ours = False
        if not ours:
            raise ValueError(f"{jsonl} is not a records file that bench wrote, and bench would append to it. {fix}")
    elif table.exists():
        raise ValueError(f"{table} has no records.jsonl beside it (it is not bench's), and bench would replace it. {fix}")
    return out_dir


def _write_csv(everything: list[dict], table: Path) -> None:
    """Every record as a csv row, written aside and renamed in, so a reader never sees half a file."""
    columns = list(dict.fromkeys(key for r in everything for key in r))
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows({k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in r.items()}
                     for r in everything)
    write_whole(table, text.getvalue())


def load_records(path: Path) -> list[dict]:
    """Records written by save_records (the .jsonl file); a line still being written (no newline yet) is left out."""
    text = Path(path).read_text(encoding="utf-8")
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].split("\n") if line.strip()]


def against_input_order(records: list[dict]) -> list[dict]:
    """Each record's tokens/s over input-order batches (mode batched) on the same processes and new tokens,
    beside the padding-free limit (1 + padding of input order) / (1 + padding of the mode)."""
    runs = [RunSummary.from_record(r) for r in records]
    base = {(s.num_processes, s.tp_size, s.max_new_tokens): s for s in runs if s.mode == "batched"}
    rows = []
    for r, s in zip(records, runs):
        b = base.get((s.num_processes, s.tp_size, s.max_new_tokens))
        rows.append({**r, "x_input_order": round(s.tokens_per_s / b.tokens_per_s, 2) if b else None,
                     "padding_free_limit": round((1 + b.padding_ratio) / (1 + s.padding_ratio), 2) if b else None})
    return rows


def speedups(records: list[dict]) -> list[dict]:
    """Each record's tokens/s relative to the same mode and batch size on the fewest processes."""
    runs = [RunSummary.from_record(r) for r in records]
    base: dict = {}
    for s in sorted(runs, key=lambda s: s.num_processes):
        base.setdefault((s.mode, s.batch_size, s.max_new_tokens), s.tokens_per_s)
    return [{**r, "speedup": round(s.tokens_per_s / base[(s.mode, s.batch_size, s.max_new_tokens)], 2)}
            for r, s in zip(records, runs)]
