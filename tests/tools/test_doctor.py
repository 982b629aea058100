"""The doctor: passes on this setup, and each planted problem fails with the fix that names it."""

import argparse
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mgpu_lab.tools import doctor
from mgpu_lab.launcher.launch import free_port


def versions(monkeypatch, **found):
    """Make installed_version report `found` (None = not installed) and the real version otherwise."""
    real = doctor.installed_version
    monkeypatch.setattr(doctor, "installed_version", lambda package: found.get(package, real(package)))


@pytest.mark.multiprocess
def test_every_check_passes_here(capsys):
    parser = argparse.ArgumentParser()
    doctor.add_arguments(parser)
    assert doctor.run(parser.parse_args(["--port", str(free_port())])) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("PASS python 3.")
    assert "PASS launch of 2 process(es) returned 2 messages" in lines
    assert any(line.startswith("PASS model tiny loads on CPU") for line in lines)
    assert lines[-1] == "All checks passed." and not any(line.startswith("FAIL") for line in lines)


def test_old_python_fails():
    check = doctor.check_python((3, 9, 18))
    assert not check.ok and check.line().startswith("FAIL python 3.9.18") and "Python >= 3.10" in check.fix


def test_old_transformers_fails_with_the_upgrade(monkeypatch):
    versions(monkeypatch, transformers="4.56.0")
    check = doctor.check_package("transformers")
    assert not check.ok and check.line().endswith("Fix: pip install -U 'transformers>=5.4'")


def test_missing_package_fails(monkeypatch):
    versions(monkeypatch, accelerate=None)
    assert doctor.check_package("accelerate").line() == \
        "FAIL accelerate is not installed. Fix: pip install -U 'accelerate>=1.14'"


def test_accelerate_that_touches_cuda_before_forking_fails(monkeypatch):
    versions(monkeypatch, accelerate="1.13.0")
    assert not doctor.check_package("accelerate").ok


def test_a_local_torch_build_passes(monkeypatch):
    versions(monkeypatch, torch="2.13.0+cpu")
    assert doctor.check_package("torch").ok


def test_every_dependency_is_checked():
    assert {"torch", "accelerate", "transformers", "nbclient"} <= set(doctor.dependencies())


NO_TORCH = """
import importlib.metadata, runpy, sys

class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, NoTorch())
installed = importlib.metadata.version
def version(name):
    if name == "torch":
        raise importlib.metadata.PackageNotFoundError(name)
    return installed(name)
importlib.metadata.version = version
sys.argv = ["mgpu_lab", *sys.argv[1:]]
runpy.run_module("mgpu_lab", run_name="__main__", alter_sys=True)
"""


@pytest.mark.multiprocess
def test_doctor_without_torch_prints_its_checklist():
    done = subprocess.run([sys.executable, "-c", NO_TORCH, "doctor", "--port", str(free_port())],
                          capture_output=True, text=True, timeout=120)
    lines = done.stdout.splitlines()
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "FAIL torch is not installed. Fix: pip install torch --index-url https://download.pytorch.org/whl/cpu" \
        in done.stdout
    assert "FAIL launch cannot be checked: No module named 'torch'. Fix: fix the package lines above first." \
        in lines
    assert lines[0].startswith("PASS python") and lines[-1].endswith("fix the FAIL lines above.")


@pytest.mark.multiprocess
def test_a_bare_python_gets_the_checklist_and_one_line_not_a_traceback(tmp_path):
    """A fresh venv with nothing installed (not even `packaging`), running the checkout: the first thing a newcomer
    may try before installing anything."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", tmp_path / "bare"], check=True, timeout=60)
    python = tmp_path / "bare" / "bin" / "python"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    doctor_run = subprocess.run([python, "-m", "mgpu_lab", "doctor"], capture_output=True, text=True, env=env,
                                cwd=tmp_path, timeout=120)
    assert doctor_run.returncode == 1 and doctor_run.stderr == "", doctor_run.stderr
    assert doctor_run.stdout.startswith("PASS python") and "FAIL torch is not installed. Fix:" in doctor_run.stdout
    assert "FAIL packaging" not in doctor_run.stdout  # the kit does not need it
    hello_run = subprocess.run([python, "-m", "mgpu_lab", "hello"], capture_output=True, text=True, env=env,
                               cwd=tmp_path, timeout=120)
    assert hello_run.returncode == 2 and hello_run.stdout == ""
    assert hello_run.stderr.startswith("error: No module named 'torch'. The kit's dependencies are not all installed")
    assert len(hello_run.stderr.splitlines()) == 1 and "python -m mgpu_lab doctor" in hello_run.stderr


def test_versions_compare_by_their_release_numbers():
    assert doctor.release("2.13.0+cpu") == (2, 13, 0) and doctor.release("5.4.0rc1") == (5, 4, 0)
    assert doctor.release("1.9") < doctor.release("1.14") and doctor.release("5.10.0") > doctor.release("5.4")


def test_minimum_python_matches_pyproject():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=" + ".".join(map(str, doctor.MIN_PYTHON))


def test_initialised_cuda_fails_with_restart(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    check = doctor.check_cuda_not_initialised()
    assert not check.ok and check.fix.startswith("restart the kernel")


def test_busy_port_fails():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        check = doctor.check_port(port)
    assert not check.ok and check.line().startswith(f"FAIL port {port} is in use")


def test_missing_model_path_fails_with_its_fix(tmp_path):
    check = doctor.check_model_loads(str(tmp_path / "no-such-model"))
    assert not check.ok and "was not found" in check.detail and "hf download" in check.fix


def test_failing_check_makes_run_exit_nonzero(monkeypatch, capsys):
    monkeypatch.setattr(doctor, "checks", lambda model, port: [
        lambda: doctor.Check("good", True, "ok"), lambda: doctor.Check("bad", False, "is broken.", "mend it.")])
    assert doctor.run(argparse.Namespace(model="tiny", port=1)) == 1
    assert capsys.readouterr().out.splitlines() == [
        "PASS good ok", "FAIL bad is broken. Fix: mend it.", "1 check(s) failed: fix the FAIL lines above."]


@pytest.mark.multiprocess
def test_command_line_reports_a_missing_model(cli_in_process):
    done = cli_in_process("doctor", "--model", "no/such/model", "--port", str(free_port()))
    assert done.returncode == 1 and "FAIL model no/such/model" in done.stdout
    assert "PASS launch of 2 process(es)" in done.stdout and "Traceback" not in done.stderr



@pytest.mark.parametrize("make", ["a file", "a folder no one can make"])
def test_a_preset_cache_that_cannot_be_written_fails_with_one_fix(tmp_path, monkeypatch, make):
    # Before: "All checks passed" with MGPU_LAB_CACHE at a file or an unwritable folder (lesson 6 then failed on
    # small), and `doctor --model small` added an unrelated second "Fix:".
    cache = tmp_path / "cache" if make == "a file" else Path("/proc/mgpu_lab-cache")  # not even root makes it
    if make == "a file":
        cache.write_text("not a folder")
    monkeypatch.setenv("MGPU_LAB_CACHE", str(cache))
    assert doctor.check_cache in doctor.checks("tiny", free_port())
    for check in (doctor.check_cache(), doctor.check_model_loads("small")):
        assert not check.ok and check.line().count("Fix:") == 1 and str(cache) in check.line(), check.line()
        assert check.line().endswith("Fix: set MGPU_LAB_CACHE to a folder you can write to, or unset it "
                                     "(then ~/.cache/mgpu_lab).")


def test_a_writable_preset_cache_passes(tmp_path, monkeypatch):
    monkeypatch.setenv("MGPU_LAB_CACHE", str(tmp_path / "new"))
    check = doctor.check_cache()
    assert check.ok and check.line() == f"PASS preset cache {tmp_path / 'new'} is writable"
