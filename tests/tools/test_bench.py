"""The benchmark, the scaling model and the roofline (two loopback nodes: tests/tools/test_cli.py)."""

import json
import re
import subprocess
import sys

import pytest

from mgpu_lab.tools.bench import (Sweep, against_input_order, load_records, make_record, run_sweep, save_records,
                            speedups)
from mgpu_lab.engine.modes import MODES
from mgpu_lab.engine.prompts import default_prompts
from mgpu_lab.course.roofline import bandwidth_for, roofline_fraction, tokens_per_s_bound
from mgpu_lab.course.staircase import calls_on_busiest_rank, compare_with_article, predict_wall
from mgpu_lab.engine.results import RunSummary

PROMPTS = tuple(default_prompts(repeat=1))
REQUIRED = {"mode", "num_processes", "batch_size", "model", "tokens_per_s", "generated_tokens", "wall_s"}


def test_points_skip_batch_sizes_where_a_mode_has_none():
    sweep = Sweep(modes=("naive", "batched"), num_processes=(1, 2), batch_sizes=(4, 8))
    assert sweep.points() == [("naive", 1, 1, None, 100), ("naive", 2, 1, None, 100), ("batched", 1, 1, 4, 100),
                              ("batched", 1, 1, 8, 100), ("batched", 2, 1, 4, 100), ("batched", 2, 1, 8, 100)]


def test_a_tp_size_runs_only_with_the_process_counts_it_divides():
    sweep = Sweep(modes=("batched",), num_processes=(1, 2, 3), tp_sizes=(1, 2), batch_sizes=(4,))
    assert [(n, t) for _, n, t, _, _ in sweep.points()] == [(1, 1), (2, 1), (2, 2), (3, 1)]


@pytest.mark.multiprocess
def test_bench_cli_records_tp_size_and_bytes_per_process(cli_in_process, tmp_path):
    done = cli_in_process("bench", "--modes", "batched", "--tp-sizes", "1,2", "--num-processes", "2",
                          "--max-new-tokens", "3", "--repeats", "1", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    records = load_records(tmp_path / "records.jsonl")
    assert [(r["tp_size"], r["replicas"]) for r in records] == [(1, 2), (2, 1)]
    assert records[1]["parameter_bytes"] < 0.65 * records[0]["parameter_bytes"]
    assert "2 DP" in done.stdout and "TP 2" in done.stdout and "MB/proc" in done.stdout


@pytest.fixture(scope="module")
def records():
    sweep = Sweep(modes=("naive", "batched"), num_processes=(1, 2), batch_sizes=(4,), max_new_tokens=(5,),
                  prompts=PROMPTS, repeats=2)
    return run_sweep(sweep, progress=False)


@pytest.mark.multiprocess
def test_sweep_records_every_point_with_honest_counts(records):
    assert [(r["mode"], r["num_processes"]) for r in records] == [
        ("naive", 1), ("naive", 2), ("batched", 1), ("batched", 2)]
    assert len({r["generated_tokens"] for r in records}) == 1  # same work, whatever the layout
    for r in records:
        assert REQUIRED <= r.keys() and r["repeats"] == 2 and len(r["wall_s_all"]) == 2
        assert r["tokens_per_s"] > 0 and r["prompts"] == len(PROMPTS)
        assert r["versions"]["mgpu_lab"] and r["device_name"].startswith("cpu")
        assert r["roofline_fraction"] is None  # no bandwidth is known for a CPU


@pytest.mark.multiprocess
def test_records_are_saved_as_jsonl_and_csv(records, tmp_path):
    save_records(records, tmp_path)
    save_records(records[:1], tmp_path)
    assert load_records(tmp_path / "records.jsonl") == records + records[:1]
    lines = (tmp_path / "records.csv").read_text().splitlines()
    assert len(lines) == 1 + len(records) + 1 and lines[0].startswith("mode,model,")


@pytest.mark.multiprocess
def test_speedups_are_relative_to_one_process(records):
    for r in speedups(records):
        base = next(b for b in records if b["mode"] == r["mode"] and b["num_processes"] == 1)
        assert r["speedup"] == round(r["tokens_per_s"] / base["tokens_per_s"], 2)


def test_roofline_fraction_in_records_when_bandwidth_is_given():
    measured = {"runs": [RunSummary.from_record({"mode": "batched", "model": "m", "dtype": "bfloat16", "device": "cuda",
                          "num_processes": 1, "knob": "batch_size", "batch_size": 16, "token_budget": None,
                          "mean_batch_size": 16.0, "max_new_tokens": 100,
                          "prompts": 100, "prompt_tokens": 1, "generated_tokens": 10000, "padded_tokens": 0,
                          "padding_ratio": 0.0, "wall_s": 19.2, "tokens_per_s": 520.0})],
                "device_name": "NVIDIA GeForce RTX 3090", "model_params": 6.74e9, "model_bytes": int(13.5e9)}
    record = make_record(Sweep(model="m"), measured)
    assert record["bandwidth_gbs"] == 936
    assert record["roofline_fraction"] == pytest.approx(520 / (16 * 936e9 / 13.5e9), rel=1e-3)


def test_scaling_model_reproduces_the_article_batched_table():
    rows = compare_with_article("batched")
    assert [r["calls"] for r in rows] == [7, 4, 3, 2, 2]
    assert all(abs(r["error"]) <= 0.10 for r in rows)


def test_article_naive_table_departs_from_the_model_at_4_and_5_gpus():
    rows = compare_with_article("naive")
    assert all(abs(r["error"]) <= 0.02 for r in rows[:3])
    assert all(abs(r["error"]) > 0.2 for r in rows[3:])


def test_calls_and_predictions():
    assert calls_on_busiest_rank(100, 3, 16) == 3 and calls_on_busiest_rank(10, 4, 1) == 3
    assert predict_wall(14.0, 100, [1, 2], 16) == [14.0, 8.0]


def test_roofline_numbers():
    assert tokens_per_s_bound(936, int(13.5e9)) == pytest.approx(69.3, abs=0.1)
    assert bandwidth_for("NVIDIA GeForce RTX 3090") == 936 and bandwidth_for("Tesla T4") == 320
    assert bandwidth_for("NVIDIA H100 PCIe") == 2000 and bandwidth_for("NVIDIA A100-SXM4-80GB") == 2039
    assert bandwidth_for("cpu (x86_64)") is None
    assert roofline_fraction(44, 1, 936, int(13.5e9)) == pytest.approx(0.635, abs=0.001)


@pytest.mark.multiprocess
def test_bench_cli_prints_json_lines(cli_in_process, tmp_path):
    done = cli_in_process("bench", "--modes", "batched", "--num-processes", "1,2", "--max-new-tokens", "3",
                          "--repeats", "1", "--out", str(tmp_path), "--json")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["num_processes"] for r in lines] == [1, 2] and all(REQUIRED <= r.keys() for r in lines)
    assert len(load_records(tmp_path / "records.jsonl")) == 2
    assert "bench:" not in done.stderr and "it/s" not in done.stderr  # before: tqdm drew on a stderr that was a pipe


def test_bench_quiet_draws_no_bar_even_at_a_terminal(monkeypatch, tmp_path):
    from mgpu_lab.tools import cli

    seen = []
    monkeypatch.setattr(cli, "run_sweep", lambda sweep, progress, out_dir: seen.append(progress) or [])
    monkeypatch.setattr(cli.sys.stderr, "isatty", lambda: True)
    for quiet in ([], ["--quiet"]):
        cli.main(["bench", "--modes", "batched", "--num-processes", "1", "--out", str(tmp_path), "--json", *quiet])
    assert seen == [True, False]


def test_help_names_only_files_that_exist():
    from mgpu_lab.paths import checkout
    from mgpu_lab.tools.cli import build_parser

    if checkout() is None:
        pytest.skip("an installed wheel: the help's paths are the repository's")
    parser, named = build_parser(), []
    for command in parser._subparsers._group_actions[0].choices.values():  # noqa: SLF001 - every subcommand
        named += re.findall(r"mgpu_lab/[\w/]+\.py", command.format_help())
    assert named and all((checkout() / path).is_file() for path in named), named  # before: mgpu_lab/budget.py


def test_bench_help_lists_the_modes(cli_in_process):
    out = cli_in_process("bench", "--help").stdout
    assert "naive" in out and "batched" in out


@pytest.mark.multiprocess
def test_every_mode_records_its_knob_and_mean_batch_size():
    prompts = tuple(default_prompts(repeat=1)[:8])  # 4 per process: 2 batches of 2 each
    modes = tuple(m for m in MODES if m != "compiled")  # its compile takes a minute; tests/engine/test_lean.py
    sweep = Sweep(modes=modes, num_processes=(2,), batch_sizes=(2,), max_new_tokens=(2,), prompts=prompts,
                  repeats=1, token_budget=64)
    records = {r["mode"]: r for r in run_sweep(sweep, progress=False)}
    assert set(records) == set(modes)
    for name, r in records.items():
        knob = MODES[name].knob
        assert r["knob"] == knob
        values = {"batch_size": 2, "token_budget": 64}
        assert all(r[k] == (values[k] if k == knob else None) for k in values)
        assert 1 <= r["mean_batch_size"] <= len(prompts)
    assert records["naive"]["mean_batch_size"] == 1 and records["batched"]["mean_batch_size"] == 2
    assert records["continuous"]["token_budget"] == 64  # it uses one, so it records it


def test_roofline_uses_the_mean_batch_size():
    run = {"mode": "budget", "model": "m", "dtype": "bfloat16", "device": "cuda", "num_processes": 2,
           "knob": "token_budget", "batch_size": None, "token_budget": 4096, "mean_batch_size": 12.5,
           "max_new_tokens": 100, "prompts": 100, "prompt_tokens": 1, "generated_tokens": 10000, "padded_tokens": 0,
           "padding_ratio": 0.0, "wall_s": 10.0, "tokens_per_s": 1000.0}
    record = make_record(Sweep(model="m"), {"runs": [RunSummary.from_record(run)], "device_name": "NVIDIA GeForce RTX 3090",
                                            "model_params": 6.74e9, "model_bytes": int(13.5e9)})
    assert record["roofline_fraction"] == pytest.approx(1000 / (2 * 12.5 * 936e9 / 13.5e9), rel=1e-3)


def test_ratios_against_input_order_carry_the_padding_free_limit():
    rows = [{"mode": "batched", "num_processes": 2, "max_new_tokens": 20, "tokens_per_s": 100.0, "padding_ratio": 2.0},
            {"mode": "budget", "num_processes": 2, "max_new_tokens": 20, "tokens_per_s": 250.0, "padding_ratio": 0.5}]
    budget = against_input_order(rows)[1]
    assert budget["x_input_order"] == 2.5 and budget["padding_free_limit"] == 2.0


@pytest.mark.multiprocess
def test_a_sweep_compares_every_budget_mode_at_one_measured_budget():
    sweep = Sweep(modes=("budget", "balanced", "continuous"), num_processes=(2,), max_new_tokens=(2,),
                  prompts=tuple(default_prompts(repeat=1)[:4]), repeats=1)
    assert len({r["token_budget"] for r in run_sweep(sweep, progress=False)}) == 1
