"""Long runs: a live bar over every process, completions saved as they come, and a killed run resumed."""

import fcntl
import json
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import psutil
import pytest

from mgpu_lab.engine import progress
from mgpu_lab.engine.runner import run
from mgpu_lab.engine.launch import launch
from mgpu_lab.engine.progress import Progress, tell
from mgpu_lab.engine.prompts import default_prompts

pytestmark = pytest.mark.multiprocess


def tell_twice(seen: str) -> None:
    """Each rank finishes one prompt, waits until the parent's bar has shown some progress, then finishes one more."""
    tell(1, 5)
    deadline = time.monotonic() + 120
    while not Path(seen).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    tell(1, 5)


def test_the_bar_counts_every_process_while_they_run(tmp_path, monkeypatch):
    shown = []
    seen = tmp_path / "seen"
    refresh = progress.Bar.refresh

    def recording(bar):
        refresh(bar)
        shown.append((bar.bar.n, bar.bar.postfix))
        if 0 < bar.bar.n < 4:
            seen.touch()

    monkeypatch.setattr(progress.Bar, "refresh", recording)
    launch(tell_twice, str(seen), num_processes=2, verbose=False, progress=Progress(total=4))
    assert any(0 < n < 4 for n, _ in shown)  # seen while the processes were still running
    assert shown[-1] == (4, "20 tokens generated")


def test_terminal_bar_goes_to_stderr_and_json_stdout_stays_one_object():
    controller, terminal = pty.openpty()  # stderr is a terminal, as in a shell; stdout is piped
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns wide
    cli = subprocess.Popen([sys.executable, "-m", "mgpu_lab", "naive", "--json", "--max-new-tokens", "2"],
                           stdout=subprocess.PIPE, stderr=terminal, text=True)
    os.close(terminal)
    out, _ = cli.communicate(timeout=300)
    seen = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    assert cli.returncode == 0
    assert len(json.loads(out)["results"]) == 100
    assert b"prompts:" in seen and b"/100" in seen


PROMPTS = default_prompts(repeat=3)  # 30 prompts


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_output_file_gets_every_completion_and_refuses_to_mix_runs(tmp_path):
    path = tmp_path / "out.jsonl"
    result = run("batched", "tiny", PROMPTS[:6], num_processes=2, max_new_tokens=3, batch_size=2, verbose=False,
                 output=str(path))
    lines = read_lines(path)
    assert sorted(r["index"] for r in lines) == list(range(6))
    assert {"index", "prompt", "text", "prompt_tokens", "generated_tokens", "stop_reason"} <= lines[0].keys()
    assert [c.text for c in result.results] == [r["text"] for r in sorted(lines, key=lambda r: r["index"])]
    try:
        run("batched", "tiny", PROMPTS[:6], num_processes=2, max_new_tokens=3, verbose=False, output=str(path))
    except ValueError as error:
        assert "pass --resume" in str(error)
    else:
        raise AssertionError("a second run into the same file must ask for --resume")


def test_a_killed_run_resumed_gives_every_prompt_exactly_once(tmp_path):
    path, prompts = tmp_path / "out.jsonl", tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    args = [sys.executable, "-m", "mgpu_lab", "batched", "--prompts", str(prompts), "--max-new-tokens", "30",
            "--batch-size", "1", "--output", str(path), "--quiet"]
    cli = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    while not path.exists() or len(path.read_text().splitlines()) < 4:  # killed part-way through
        assert cli.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    children = psutil.Process(cli.pid).children()
    os.killpg(cli.pid, signal.SIGKILL)
    cli.wait()
    psutil.wait_procs(children, timeout=30)
    before = {r["index"] for r in read_lines(path)}
    assert 0 < len(before) < len(PROMPTS)
    done = subprocess.run(args[:-1] + ["--resume", "--json"], capture_output=True, text=True, timeout=300, check=True)
    record = json.loads(done.stdout)
    assert [r["prompt"] for r in record["results"]] == PROMPTS
    assert record["summary"]["reused"] == len(before) and record["summary"]["prompts"] == len(PROMPTS)
    assert sorted(r["index"] for r in read_lines(path)) == list(range(len(PROMPTS)))  # each exactly once
