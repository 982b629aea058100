"""Shared fixtures (the tiny model, one build of small, the command line in-process) and the tiers' markers."""

import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SLOWER_TIERS = ("slow", "multiprocess", "notebook", "browser")


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(items: list) -> None:
    """nbval's cells are `notebook` tests; a test with none of the slower tiers' marks is a `unit` test."""
    for item in items:
        if type(item).__module__.startswith("nbval"):
            item.add_marker("notebook")
        if not any(item.get_closest_marker(name) for name in SLOWER_TIERS):
            item.add_marker("unit")


@pytest.fixture(scope="session", autouse=True)
def preset_cache(tmp_path_factory) -> Path:
    """One preset cache for the whole session (MGPU_LAB_CACHE), so `small` is built once and ~/.cache is left alone.

    Set before any kernel or process starts, so nbval's kernels, launched processes and subprocesses share it."""
    folder = tmp_path_factory.mktemp("preset_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MGPU_LAB_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer) of the bundled tiny preset, fp32 on CPU."""
    from mgpu_lab.engine.models import load_model

    return load_model("tiny")


@pytest.fixture(scope="session")
def small(preset_cache) -> Path:
    """The `small` preset's folder, built once per session in the session's preset cache."""
    from mgpu_lab.engine.models import small_checkpoint

    return small_checkpoint()


@pytest.fixture
def small_copy(small, tmp_path, monkeypatch) -> Path:
    """A copy of the session's built `small` in a cache of this test's own (MGPU_LAB_CACHE), to damage."""
    cache = tmp_path / "cache"
    shutil.copytree(small, cache / small.name)
    monkeypatch.setenv("MGPU_LAB_CACHE", str(cache))
    return cache / small.name


@pytest.fixture
def cli_in_process(monkeypatch, capfd):
    """`python -m mgpu_lab ARGS` run in this process (same entry point, no interpreter to start): a CompletedProcess.

    Extra environment variables and the working folder apply until the test ends."""
    def cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        if cwd is not None:
            monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "argv", ["mgpu_lab", *args])
        monkeypatch.delitem(sys.modules, "ipykernel", raising=False)  # as in a terminal: no kernel to draw bars in
        capfd.readouterr()  # only this command's output
        with pytest.raises(SystemExit) as exited:
            runpy.run_module("mgpu_lab", run_name="__main__", alter_sys=True)
        out, err = capfd.readouterr()
        return subprocess.CompletedProcess(["mgpu_lab", *args], exited.value.code, out, err)

    return cli


# Started with Python in each process (a sitecustomize), it registers first, so it runs last as Python exits: how many
# gloo threads run then. One left running can still be freeing a collective's tensors when the interpreter goes, and
# aborts the process ("terminate called without an active exception", exit -6), about one run in 50.
EXIT_WATCH = '''
import atexit, contextlib, os

def _gloo_threads_at_exit():
    count = 0
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError), open(f"/proc/self/task/{task}/comm") as name:
            count += "gloo" in name.read()
    if "RANK" in os.environ:
        with open(os.path.join(os.environ["EXIT_WATCH"], f"rank{os.environ['RANK']}"), "w") as record:
            record.write(str(count))

atexit.register(_gloo_threads_at_exit)
'''


class ExitWatch:
    """The environment that makes every rank of a subprocess record its gloo threads at exit, and the records."""

    def __init__(self, folder: Path):
        self.folder, self.records = folder, folder / "records"
        self.records.mkdir()
        (folder / "sitecustomize.py").write_text(EXIT_WATCH)
        self.env = {"PYTHONPATH": str(folder), "EXIT_WATCH": str(self.records)}

    def threads_left(self) -> dict[int, int]:
        """Gloo threads still running as each rank's Python exited, by rank (then forgotten, for the next run)."""
        found = {int(p.name.removeprefix("rank")): int(p.read_text()) for p in self.records.iterdir()}
        for record in self.records.iterdir():
            record.unlink()
        return found


@pytest.fixture
def exit_watch(tmp_path_factory) -> ExitWatch:
    """Run a torchrun subprocess with `env=exit_watch.env` (Linux: /proc), then check `exit_watch.threads_left()`."""
    if not Path("/proc/self/task").is_dir():
        pytest.skip("counts threads through /proc (Linux)")
    return ExitWatch(tmp_path_factory.mktemp("exit_watch"))
