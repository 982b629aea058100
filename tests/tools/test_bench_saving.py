"""Benchmark records are never lost: --out is checked first, each record is saved as measured, atomically, NaN-free."""

import json
import math
import multiprocessing
from pathlib import Path

import pytest

from mgpu_lab.tools import bench
from mgpu_lab.tools.bench import Sweep, load_records, run_sweep, save_records

RECORD = {"mode": "batched", "num_processes": 2, "token_budget": None, "tokens_per_s": 123.4, "text": "x" * 200}


def test_each_record_is_on_disk_before_the_next_point_runs(tmp_path, monkeypatch):
    calls = []

    def launch(*args, **kwargs):
        calls.append(args)
        if len(calls) == 3:
            raise RuntimeError("the third point failed")
        return {"n": len(calls), "token_ids": [[len(calls)]]}  # what measure_on_this_process returns

    monkeypatch.setattr(bench, "launch", launch)
    monkeypatch.setattr(bench, "make_record", lambda sweep, measured: {**RECORD, **measured})
    with pytest.raises(RuntimeError, match="third point"):
        run_sweep(Sweep(modes=("naive",), num_processes=(1, 2, 3), prompts=("Hello",)), False, tmp_path)
    assert [r["n"] for r in load_records(tmp_path / "records.jsonl")] == [1, 2]
    assert len((tmp_path / "records.csv").read_text().splitlines()) == 3


def test_nan_never_reaches_the_json(tmp_path):
    with pytest.raises(ValueError, match="Out of range float"):
        save_records([{**RECORD, "tokens_per_s": math.nan}], tmp_path)
    assert not (tmp_path / "records.jsonl").exists() or load_records(tmp_path / "records.jsonl") == []


def test_a_line_still_being_written_is_not_read(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps(RECORD) + "\n" + json.dumps(RECORD)[:30])
    assert load_records(path) == [RECORD]


def write_many(folder: str, writer: int) -> None:
    """One of several processes appending records to the same folder at once."""
    for batch in range(10):
        save_records([{**RECORD, "writer": writer, "batch": batch, "i": i} for i in range(60)], Path(folder))


def read_while_written(folder: str, stop) -> int:
    """Read the records again and again while writers append; every read must parse. Returns the reads made."""
    reads = 0
    while not stop.is_set():
        if (Path(folder) / "records.jsonl").exists():
            load_records(Path(folder) / "records.jsonl")
            reads += 1
    return reads


@pytest.mark.multiprocess
def test_several_processes_writing_at_once_lose_and_split_nothing(tmp_path):
    context = multiprocessing.get_context("spawn")
    stop = context.Manager().Event()
    with context.Pool(5) as pool:
        reader = pool.apply_async(read_while_written, (str(tmp_path), stop))
        writers = [pool.apply_async(write_many, (str(tmp_path), w)) for w in range(4)]
        for w in writers:
            w.get(timeout=300)
        stop.set()
        assert reader.get(timeout=300) > 0
    records = load_records(tmp_path / "records.jsonl")
    assert len(records) == 4 * 10 * 60
    assert sorted((r["writer"], r["batch"], r["i"]) for r in records) == [
        (w, b, i) for w in range(4) for b in range(10) for i in range(60)]
    assert len((tmp_path / "records.csv").read_text().splitlines()) == 1 + len(records)


@pytest.mark.parametrize("name, text, says", [
    ("records.jsonl", '{"prompt": "my own file"}\n', "is not a records file that bench wrote"),
    ("records.jsonl", "not json at all\n", "is not a records file that bench wrote"),
    ("records.csv", "a,b\n1,2\n", "has no records.jsonl beside it"),
])
def test_bench_never_appends_to_or_replaces_a_file_of_the_users(cli_in_process, tmp_path, name, text, says):
    (tmp_path / name).write_text(text)
    done = cli_in_process("bench", "--modes", "batched", "--num-processes", "1", "--max-new-tokens", "1",
                          "--out", str(tmp_path))
    assert done.returncode == 2 and says in done.stderr and "choose another --out" in done.stderr, done.stderr
    assert (tmp_path / name).read_text() == text and [p.name for p in tmp_path.iterdir()] == [name]


def test_a_folder_of_bench_records_is_accepted(tmp_path):
    from mgpu_lab.tools.bench import check_records_folder

    save_records([{"mode": "batched", "tokens_per_s": 1.0}], tmp_path)
    assert check_records_folder(tmp_path) == tmp_path
