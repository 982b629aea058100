"""Inputs checked before any process starts: each mistake is named, with its fix, as a TypeError or ValueError."""

import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from mgpu_lab.engine import validate as checks
from mgpu_lab.launcher import launch
from mgpu_lab.launcher.folder import LaunchFolder
from mgpu_lab.tools.bench import Sweep, run_sweep
from mgpu_lab.engine.runner import run

TORCHRUN = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29517"}


@pytest.fixture
def no_launch(monkeypatch):
    """Fail the test if anything reaches the launch: every check must come first."""
    def refuse(*args, **kwargs):
        raise AssertionError("a process was launched before the mistake was found")
    monkeypatch.setattr("mgpu_lab.engine.runner.launch", refuse)
    monkeypatch.setattr("mgpu_lab.tools.bench.launch", refuse)


@pytest.mark.parametrize("prompts, error, message", [
    ("Hello", TypeError, "got a str. Fix: wrap one prompt in a list"),
    ({"Hello": 1}, TypeError, "got a dict"),
    ((p for p in ["Hello"]), TypeError, "got a generator"),
    ([1, 2, 3], TypeError, r"prompts\[0\] is a int"),
    ([b"Hello"], TypeError, r"prompts\[0\] is a bytes"),
    (["Hello", None], TypeError, r"prompts\[1\] is a NoneType"),
    (["Hello", " \n"], ValueError, r"prompts\[1\] is empty"),
])
def test_bad_prompt_lists_are_named_before_the_launch(no_launch, prompts, error, message):
    with pytest.raises(error, match=message):
        run("batched", "tiny", prompts)


@pytest.mark.parametrize("name, value, error, message", [
    ("max_new_tokens", "3", TypeError, "max_new_tokens must be a whole number \\(int\\), got the str '3'"),
    ("batch_size", 1.5, TypeError, "got the float 1.5"),
    ("batch_size", True, TypeError, "got the bool True"),
    ("token_budget", 0, ValueError, "token_budget must be >= 1, got 0"),
    ("num_processes", 2.0, TypeError, "num_processes must be a whole number"),
])
def test_numbers_must_be_whole_numbers(no_launch, name, value, error, message):
    with pytest.raises(error, match=message):
        run("batched", "tiny", ["Hello"], **{name: value})


@pytest.mark.parametrize("kwargs, error, message", [
    ({"timeout": 0}, ValueError, "timeout must be a finite number above 0, got 0"),
    ({"timeout": math.nan}, ValueError, "timeout must be a finite number above 0, got nan"),
    ({"timeout": "60"}, TypeError, "timeout must be a number, got the str '60'"),
    ({"output": 5}, TypeError, "output must be a file path"),
    ({"output": ""}, ValueError, "output is an empty file name"),
    ({"output": "."}, ValueError, "output . is a folder"),
    ({"output": "/proc/mgpu_lab/out.jsonl"}, ValueError, "the folder of output /proc/mgpu_lab is not a writable"),
])
def test_timeout_and_output_are_checked_before_the_launch(no_launch, kwargs, error, message):
    with pytest.raises(error, match=message):
        run("batched", "tiny", ["Hello"], **kwargs)


def test_no_token_budget_means_measured_and_passes_the_checks(no_launch, tmp_path):
    with pytest.raises(AssertionError, match="a process was launched"):  # every check passed
        run("budget", "tiny", ["Hello"], token_budget=None, timeout=1.5, output=str(tmp_path / "new" / "o.jsonl"))


@pytest.mark.parametrize("value, error", [(-5, ValueError), (0, ValueError), (math.nan, ValueError),
                                          (math.inf, ValueError), ("900", TypeError), (True, TypeError)])
def test_bandwidth_must_be_finite_and_positive(no_launch, value, error):
    with pytest.raises(error, match="bandwidth_gbs must be"):
        run_sweep(Sweep(prompts=("Hello",), bandwidth_gbs=value), progress=False)


@pytest.mark.parametrize("field, value, message", [
    ("num_processes", (1, 0), "num_processes must be >= 1"),
    ("batch_sizes", 16, "batch_sizes must be a non-empty tuple"),
    ("repeats", 2.5, "repeats must be a whole number"),
    ("prompts", "Hello", "prompts must be a list of strings"),
    ("modes", ("batched", "fast"), "Unknown mode 'fast'"),
    ("model", "", "The model name is empty"),
])
def test_sweep_inputs_are_checked_before_the_first_launch(no_launch, field, value, message):
    with pytest.raises((TypeError, ValueError), match=message):
        run_sweep(Sweep(**{"prompts": ("Hello",), field: value}), progress=False)


@pytest.mark.parametrize("value, ok", [(1, True), (65535, True), (0, False), (70000, False), (-1, False)])
def test_ports(value, ok):
    if ok:
        assert checks.port("port", value) == value
    else:
        with pytest.raises(ValueError, match="1 to 65535|>= 1"):
            checks.port("port", value)


def test_launch_names_a_port_out_of_range():
    with pytest.raises(ValueError, match="port must be a TCP port from 1 to 65535, got 70000"):
        launch.plan_launch(1, 70000)


@pytest.mark.parametrize("env, asked, message", [
    ({"RANK": "0"}, None, "Only some torchrun variables are set \\(RANK; missing WORLD_SIZE, LOCAL_RANK"),
    ({k: v for k, v in TORCHRUN.items() if not k.startswith("MASTER")}, None, "missing MASTER_ADDR, MASTER_PORT"),
    ({**TORCHRUN, "RANK": "2"}, None, "disagree: RANK=2, WORLD_SIZE=2"),
    ({**TORCHRUN, "WORLD_SIZE": "two"}, None, "WORLD_SIZE='two' is not a whole number"),
    ({**TORCHRUN, "MASTER_PORT": "99999"}, None, "MASTER_PORT must be a TCP port"),
    (TORCHRUN, None, "no torchrun started this process"),
    ({**TORCHRUN, "TORCHELASTIC_RUN_ID": "x"}, 4, "WORLD_SIZE=2, but 4 process\\(es\\) were asked for"),
    ({**TORCHRUN, "TORCHELASTIC_RUN_ID": "x"}, (1, 2), "pass --num-processes 2"),
])
def test_torchrun_variables_partial_inconsistent_or_not_matching(env, asked, message):
    with pytest.raises(ValueError, match=message):
        checks.torchrun_env(asked, env)


@pytest.mark.parametrize("env, asked", [({}, None), ({**TORCHRUN, "TORCHELASTIC_RUN_ID": "x"}, None),
                                        ({**TORCHRUN, "TORCHELASTIC_RUN_ID": "x"}, 2), (TORCHRUN, 2)])
def test_torchrun_variables_that_are_fine(env, asked):
    checks.torchrun_env(asked, env)


def test_leftover_torchrun_variables_stop_a_run_before_it_hangs(no_launch, monkeypatch):
    for name, value in TORCHRUN.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match="unset RANK WORLD_SIZE LOCAL_RANK MASTER_ADDR MASTER_PORT"):
        run("batched", "tiny", ["Hello"])


def test_out_folder_is_created_and_must_be_a_writable_folder(tmp_path):
    assert checks.out_folder(tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        checks.out_folder(tmp_path / "file")
    with pytest.raises(ValueError, match="is not a writable folder"):
        checks.out_folder(tmp_path / "file" / "below")
    with pytest.raises(ValueError, match="is not a writable folder"):
        checks.out_folder("/proc/mgpu_lab_out")  # read-only even for root


def test_image_path_needs_a_known_format_and_a_writable_folder(tmp_path):
    assert checks.image_path(tmp_path / "new" / "s.svg") == tmp_path / "new" / "s.svg"
    for bad, message in [(tmp_path / "s.txt", "known image format"), (tmp_path / "s", "known image format"),
                         (Path("/proc/s.png"), "not a writable folder")]:
        with pytest.raises(ValueError, match=message):
            checks.image_path(bad)


def test_folders_of_dead_launches_are_removed(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True)  # a process that has ended
    dead, alive = tmp_path / f"mgpu_lab-{gone.stdout.strip()}-abc", tmp_path / f"mgpu_lab-{os.getpid()}-abc"
    dead.mkdir(), alive.mkdir()
    with LaunchFolder.create() as folder:
        assert Path(folder).name.startswith(f"mgpu_lab-{os.getpid()}-")
    assert not dead.exists() and alive.exists()


STREAM_CHECK = """
import sys
from mgpu_lab.engine.validate import output_file
for path in sys.argv[1:]:
    try:
        output_file(path)
        print("accepted", path, file=sys.stderr)
    except ValueError as error:
        print(error, file=sys.stderr)
"""


def test_standard_output_redirected_to_a_file_is_no_output_file(tmp_path):
    # Before: `--output /dev/stdout > out` passed (/dev/stdout was the regular file `out`), and the printed report
    # overwrote the header and the completions, rc 0.
    out, link = tmp_path / "out", tmp_path / "link.jsonl"
    link.symlink_to("/dev/stdout")
    paths = ["/dev/stdout", "/dev/fd/1", "/proc/self/fd/1", str(link), str(out)]
    with out.open("w") as stdout:
        done = subprocess.run([sys.executable, "-c", STREAM_CHECK, *paths], stdout=stdout, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    lines = done.stderr.splitlines()
    assert len(lines) == len(paths) and all(f"output {p} is standard input, output or error" in line
                                            for p, line in zip(paths, lines)), done.stderr
    assert out.read_text() == ""


def test_a_plot_to_standard_output_is_refused(tmp_path):
    link = tmp_path / "plot.png"
    link.symlink_to("/dev/stdout")
    with pytest.raises(ValueError, match="plot.png is standard input, output or error, or a device. Fix:"):
        checks.image_path(link)
