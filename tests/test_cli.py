"""The command line: stable JSON on stdout, errors as one readable line, torchrun without a second launch."""

import json
import subprocess
import sys

import pytest


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run `python -m mgpu_lab ARGS` and capture its output."""
    return subprocess.run([sys.executable, "-m", "mgpu_lab", *args], capture_output=True, text=True,
                          check=check, timeout=300)


def test_batched_json_is_the_only_stdout(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("one prompt\n\nanother prompt\nthird\n", encoding="utf-8")
    done = cli("batched", "--json", "--prompts", str(prompts), "--max-new-tokens", "5", "--batch-size", "2")
    record = json.loads(done.stdout)
    summary = record["summary"]
    assert isinstance(summary["tokens_per_s"], float) and summary["generated_tokens"] > 0
    assert [r["prompt"] for r in record["results"]] == ["one prompt", "another prompt", "third"]
    assert {"prompt", "text", "generated_tokens"} <= record["results"][0].keys()
    assert "Skipped 1 empty line" in done.stderr


def test_naive_human_output_shows_summary_and_split():
    out = cli("naive", "--max-new-tokens", "3").stdout
    assert "tokens/s:" in out and "process 1: 50 prompts" in out


@pytest.mark.parametrize("args, message", [
    (["batched", "--model", "no/such/model"], "error: Model 'no/such/model' was not found"),
    (["batched", "--prompts", "missing.txt"], "error: Prompt file missing.txt does not exist"),
    (["batched", "--batch-size", "0"], "must be >= 1"),
    (["hello", "--num-processes", "0"], "must be >= 1"),
])
def test_mistakes_are_one_line_errors(args, message):
    done = cli(*args, check=False)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_torchrun_batched_json_prints_once():
    done = subprocess.run(["torchrun", "--nproc_per_node", "2", "-m", "mgpu_lab", "batched", "--json",
                           "--max-new-tokens", "4"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["summary"]["num_processes"] == 2 and len(record["results"]) == 100
