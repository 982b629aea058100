"""Lesson 5's last section: the kit's modes beside vLLM, measured here when vLLM is installed, else the records.

`side_by_side` runs `bench --peer-python` on the article's workload with a venv's Python that has vLLM (the
MGPU_LAB_VLLM_PYTHON variable, or ~/vllm-venv/bin/python), and otherwise reads the records the kit's authors
committed (records/cpu/vllm-side-by-side/, made by its measure.sh). `format_versus` ties each thing vLLM does that
the kit's modes do not to a number in those records.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..engine.prompts import default_prompts
from ..paths import records_dir
from .bench import Sweep, load_records, run_sweep
from .peer import against_peer

COMMITTED = ("article", "varied")  # the workloads of records/cpu/vllm-side-by-side/, in that order
ARTICLE_NEW_TOKENS = 100


def peer_python() -> str | None:
    """A Python with vLLM, if this machine has one where the README says to make it (or MGPU_LAB_VLLM_PYTHON)."""
    found = os.environ.get("MGPU_LAB_VLLM_PYTHON") or str(Path.home() / "vllm-venv" / "bin" / "python")
    return found if Path(found).is_file() else None


def side_by_side(modes: tuple[str, ...] = ("sorted", "lean"), num_processes: int = 2) -> dict[str, list[dict]]:
    """{workload: records with x_vllm}: the article's workload measured here when vLLM is installed, else the
    committed records of every workload (empty when this install has none: a wheel ships no records)."""
    python = peer_python()
    if python:
        sweep = Sweep(modes=modes, num_processes=(num_processes,), max_new_tokens=(ARTICLE_NEW_TOKENS,),
                      model="tiny", prompts=tuple(default_prompts()), prompt_set="article", repeats=1,
                      peer_python=python)
        return {"article (measured here)": against_peer(run_sweep(sweep, progress=False))}
    folder = records_dir() / "cpu" / "vllm-side-by-side"
    return {name: against_peer(load_records(folder / name / "records.jsonl")) for name in COMMITTED
            if (folder / name / "records.jsonl").is_file()}


def best_kit(records: list[dict]) -> dict:
    """The kit's fastest record of a workload."""
    return max((r for r in records if r.get("x_vllm")), key=lambda r: r["tokens_per_s"])


def format_versus(workloads: dict[str, list[dict]]) -> str:
    """Per workload: vLLM's tokens/s, the kit's best mode and its ratio, the padding each computed, and agreement."""
    lines = []
    for name, records in workloads.items():
        peer = next(r for r in records if r.get("engine") == "vllm")
        best = best_kit(records)
        agreed = best.get("vllm_agreement") or {}
        lines.append(f"{name}: {peer['model']}, {peer['prompts']} prompts, {peer['max_new_tokens']} new tokens, "
                     f"{peer['num_processes']} cores")
        lines.append(f"  vLLM {peer['tokens_per_s']:.0f} tokens/s, padding 0 per real token")
        lines.append(f"  kit's best: {best['mode']} {best['tokens_per_s']:.0f} tokens/s = {best['x_vllm']:.2f}x vLLM, "
                     f"padding {best['padding_ratio']:.2f} per real token; token ids identical on "
                     f"{agreed.get('identical', '?')} of {agreed.get('prompts', '?')} prompts")
        others = [r for r in records if r.get("x_vllm") and r is not best]
        lines += [f"  {r['mode']:<9} {r['tokens_per_s']:.0f} tokens/s = {r['x_vllm']:.2f}x" for r in others]
    return "\n".join(lines) if lines else "No side-by-side records in this install (a wheel ships none)."
