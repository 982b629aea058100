"""The command line: stable JSON on stdout, errors as one readable line, torchrun without a second launch.

Mistakes found before any work run in-process (`cli_in_process`, tests/conftest.py: the same entry point as
`python -m mgpu_lab`); a real interpreter runs the smoke test and what only a process shows (its stdout, stdin)."""

import io
import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

LEFTOVER = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29517"}


def cli_env(*args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run the CLI with extra environment variables, never checking its exit code."""
    streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **kwargs}
    return subprocess.run([sys.executable, "-m", "mgpu_lab", *args], text=True, timeout=300,
                          env={**os.environ, **(env or {})}, **streams)


@pytest.mark.multiprocess
def test_batched_json_is_the_only_stdout(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("one prompt\n\nanother prompt\nthird\n", encoding="utf-8")
    done = cli_env("batched", "--json", "--prompts", str(prompts), "--max-new-tokens", "5", "--batch-size", "2")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    summary = record["summary"]
    assert isinstance(summary["tokens_per_s"], float) and summary["generated_tokens"] > 0
    assert [r["prompt"] for r in record["results"]] == ["one prompt", "another prompt", "third"]
    assert {"prompt", "text", "generated_tokens"} <= record["results"][0].keys()
    assert "Skipped 1 empty line" in done.stderr


@pytest.mark.multiprocess
def test_naive_human_output_shows_summary_and_split(cli_in_process):
    out = cli_in_process("naive", "--max-new-tokens", "3").stdout
    assert "tokens/s:" in out and "process 1: 50 prompts" in out


@pytest.mark.parametrize("args, message", [
    (["batched", "--model", "no/such/model"], "error: Model 'no/such/model' was not found"),
    (["batched", "--prompts", "missing.txt"], "error: Prompt file missing.txt does not exist"),
    (["batched", "--batch-size", "0"], "must be >= 1"),
    (["hello", "--num-processes", "0"], "must be >= 1"),
    (["batched", "--num-processes", "3", "--tp-size", "2"], "cannot form replicas of tp_size=2 ranks. Fix:"),
    (["batched", "--num-processes", "3", "--tp-size", "3"], "which tp_size=3 does not divide. Fix:"),
    (["batched", "--model", "shape:llama2-7b", "--tp-size", "2"], "is built whole in memory. Fix:"),
])
def test_mistakes_are_one_line_errors(cli_in_process, args, message):
    done = cli_in_process(*args)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_notebooks_copies_the_lessons_for_a_room_without_outputs_and_with_solutions_if_asked(cli_in_process, tmp_path):
    done = cli_in_process("notebooks", str(tmp_path / "room"), "--solutions")
    assert "outputs cleared" in done.stdout
    lesson = json.loads((tmp_path / "room" / "01_hello_processes.ipynb").read_text())
    assert not any(cell.get("outputs") or cell.get("execution_count") for cell in lesson["cells"])
    assert (tmp_path / "room" / "solutions" / "solutions.py").is_file()
    assert cli_in_process("notebooks", str(tmp_path / "bare")).returncode == 0
    assert (tmp_path / "bare" / "01_hello_processes.ipynb").is_file() and not (tmp_path / "bare" / "solutions").exists()


@pytest.mark.multiprocess
def test_torchrun_batched_json_prints_once_and_matches_one_process(cli_in_process):
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "mgpu_lab", "batched", "--json",
                           "--max-new-tokens", "4"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["summary"]["num_processes"] == 2 and len(record["results"]) == 100
    alone = json.loads(cli_in_process("batched", "--json", "--max-new-tokens", "4", "--num-processes", "1").stdout)
    assert [r["token_ids"] for r in record["results"]] == [r["token_ids"] for r in alone["results"]]


@pytest.mark.parametrize("args, env, message", [
    (["bench", "--out", "FILE"], {}, "--out FILE is a file, not a folder"),
    (["bench", "--out", "/proc/mgpu_lab"], {}, "--out /proc/mgpu_lab is not a writable folder"),
    (["bench", "--plot", "/proc/scaling.png"], {}, "the folder of --plot /proc is not a writable folder"),
    (["bench", "--plot", "scaling.txt"], {}, "does not end in a known image format"),
    (["bench", "--bandwidth-gbs", "-5"], {}, "--bandwidth-gbs: it must be a finite number above 0, got -5.0"),
    (["bench", "--bandwidth-gbs", "nan"], {}, "it must be a finite number above 0, got nan"),
    (["bench", "--num-processes", "1,2"], {**LEFTOVER, "TORCHELASTIC_RUN_ID": "x"}, "pass --num-processes 2"),
    (["doctor", "--port", "70000"], {}, "--port: it must be a TCP port from 1 to 65535, got 70000"),
    (["batched", "--model", ""], {}, "The model name is empty"),
    (["batched", "--prompts", "."], {}, "Prompt file . is a folder, not a file"),
    (["batched", "--max-new-tokens", "x"], {}, "expected a whole number, got 'x'"),
    (["batched", "--model", "small"], {"MGPU_LAB_CACHE": "/proc/mgpu_lab"},
     "the preset cache /proc/mgpu_lab is not a writable folder (No such file or directory). Fix: set MGPU_LAB_CACHE"),
    (["lessons", "--out", "FILE"], {}, "--out FILE is a file, not a folder. Fix:"),
    (["notebooks", "FILE"], {}, "the folder FILE is a file, not a folder. Fix:"),
    (["batched"], LEFTOVER, "no torchrun started this process"),
    (["hello"], {"RANK": "1"}, "Only some torchrun variables are set (RANK;"),
    (["naive", "--num-processes", "3"], {**LEFTOVER, "TORCHELASTIC_RUN_ID": "x"}, "WORLD_SIZE=2, but 3 process"),
])
def test_hostile_inputs_are_one_line_before_any_work(cli_in_process, tmp_path, args, env, message):
    (tmp_path / "FILE").write_text("x")
    done = cli_in_process(*args, env=env, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Launching" not in done.stdout and not (tmp_path / "records.jsonl").exists()


@pytest.mark.multiprocess
def test_prompts_from_standard_input(cli_in_process, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("\ufeffHello there\r\nSecond\u2028line\n".encode())))
    done = cli_in_process("batched", "--json", "--prompts", "-", "--max-new-tokens", "2", "--num-processes", "1")
    assert done.returncode == 0, done.stderr
    assert [r["prompt"] for r in json.loads(done.stdout)["results"]] == ["Hello there", "Second\u2028line"]


@pytest.mark.multiprocess
def test_a_full_disk_on_stdout_is_one_line():
    with open("/dev/full", "w") as full:
        done = cli_env("hello", "--num-processes", "1", stdout=full)
    assert done.returncode == 1
    assert done.stderr.strip() == "error: could not write the results (No space left on device)."


@pytest.mark.multiprocess
def test_a_closed_pipe_on_stdout_is_one_line():
    with subprocess.Popen([sys.executable, "-m", "mgpu_lab", "hello", "--num-processes", "1"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        process.stdout.close()
        stderr = process.stderr.read()
    assert process.returncode == 1
    assert stderr.strip() == "error: standard output was closed before the results were written."


def test_an_unwritable_plot_after_the_sweep_is_one_line_and_keeps_the_records(monkeypatch, tmp_path, capsys):
    from mgpu_lab.tools import cli as cli_main

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "s.png"))

    record = {"mode": "batched", "num_processes": 1, "max_new_tokens": 5, "tokens_per_s": 10.0, "padding_ratio": 0.5}
    monkeypatch.setattr(cli_main, "run_sweep", lambda sweep, progress, out_dir: [record])
    monkeypatch.setattr(cli_main, "plot_scaling", lambda records, mode: type("F", (), {"savefig": full_disk})())
    code = cli_main.main(["bench", "--out", str(tmp_path), "--plot", str(tmp_path / "s.png"), "--json"])
    out, err = capsys.readouterr()
    assert code == 1 and json.loads(out) == {**record, "x_input_order": 1.0, "padding_free_limit": 1.0}
    assert err == f"error: could not write {tmp_path / 's.png'} (No space left on device).\n"


@pytest.mark.multiprocess
def test_cli_starts_without_the_jupyter_packages():
    # a GPU box with a minimal stack: nbformat/nbclient/IPython missing must not stop `python -m mgpu_lab`
    blocked = "import sys; [sys.modules.__setitem__(m, None) for m in ('nbformat', 'nbclient', 'IPython')]; "
    done = subprocess.run([sys.executable, "-c", blocked + "from mgpu_lab.tools.cli import main; "
                           "sys.exit(main(['hello', '--num-processes', '1']))"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Hello from process 0 of 1" in done.stdout


def test_an_empty_mode_name_is_named():
    from argparse import ArgumentTypeError

    from mgpu_lab.tools.cli import mode_list

    with pytest.raises(ArgumentTypeError, match="'naive,,batched' holds an empty mode name"):
        mode_list("naive,,batched")


@pytest.mark.multiprocess
def test_torchrun_two_loopback_nodes_split_one_model_with_tp_size(cli_in_process, tmp_path):
    """Two "nodes" on loopback (one torchrun each, as on two machines); only global rank 0 prints. Splitting the
    model across them (TP 2) rather than the prompts checks the tokens against one process all the same."""
    from mgpu_lab.launcher.launch import free_port
    from mgpu_lab.engine.prompts import default_prompts

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(default_prompts()[:6]) + "\n")
    port, common = str(free_port()), ["--json", "--max-new-tokens", "5", "--tp-size", "2", "--prompts", str(prompts)]
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(rank), "--nproc_per_node", "1",
                               "--master_addr", "127.0.0.1", "--master_port", port, "-m", "mgpu_lab", "batched",
                               *common], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    outputs = [node.communicate(timeout=300) for node in nodes]
    assert all(node.returncode == 0 for node in nodes), outputs
    split = json.loads(outputs[0][0])
    assert outputs[1][0] == ""  # only global rank 0 prints: rank 1 is the first process of its own node
    alone = json.loads(cli_in_process("batched", "--json", "--max-new-tokens", "5", "--num-processes", "1",
                                      "--prompts", str(prompts)).stdout)
    assert len(split["results"]) == 6 and split["summary"]["num_processes"] == 2
    assert (split["summary"]["tp_size"], split["summary"]["replicas"]) == (2, 1)
    assert [r["token_ids"] for r in split["results"]] == [r["token_ids"] for r in alone["results"]]


def test_lessons_refuse_a_room_made_by_notebooks_and_name_force(cli_in_process, tmp_path):
    cli_in_process("notebooks", str(tmp_path / "room"))
    before = {p.name: p.read_bytes() for p in (tmp_path / "room").iterdir()}
    done = cli_in_process("lessons", "--out", str(tmp_path / "room"))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "not the copy `lessons` wrote there" in done.stderr and "--force" in done.stderr and done.stdout == ""
    assert {p.name: p.read_bytes() for p in (tmp_path / "room").iterdir()} == before


def session_processes(session: int) -> list[psutil.Process]:
    """Every live process of a session (what a terminal's Ctrl-C and its closing reach)."""
    found = []
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == session and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (OSError, psutil.Error):
            pass
    return found


@pytest.mark.parametrize("args, busy", [
    (["bench", "--modes", "naive", "--num-processes", "2", "--max-new-tokens", "100", "--repeats", "5"], 2),
    (["gpu-check", "--step", "lessons"], 1),  # on CPU too: its kernel, in a session of its own, and what it starts
    (["train-tiny", "--steps", "100000", "--max-docs", "300", "--no-quality"], 0),
])
def test_ctrl_c_ends_a_command_in_seconds_with_one_line_and_no_process_left(tmp_path, args, busy):
    if args[0] == "train-tiny":
        pytest.importorskip("rdata", reason="train-tiny's corpus needs the rdata package")
    out = ["--out", str(tmp_path / "out")] + (["--plot", str(tmp_path / "loss.png")] if args[0] == "train-tiny" else [])
    command = subprocess.Popen([sys.executable, "-m", "mgpu_lab", *args, *out], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline, started = time.monotonic() + 240, []
        while len(started) < busy or not busy and psutil.Process(command.pid).cpu_times().user < 5:
            assert command.poll() is None and time.monotonic() < deadline, command.communicate()
            started = psutil.Process(command.pid).children(recursive=True)
            time.sleep(0.2)
        time.sleep(1)  # what the processes just started starts too
        started = psutil.Process(command.pid).children(recursive=True)
        os.killpg(command.pid, signal.SIGINT)  # Ctrl-C at a terminal: the whole foreground group gets it
        _, err = command.communicate(timeout=10)
    finally:
        if command.poll() is None:
            os.killpg(command.pid, signal.SIGKILL)
    assert command.returncode == 130 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("interrupted") and "Traceback" not in err
    assert psutil.wait_procs(started, timeout=5)[1] == []
