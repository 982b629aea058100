"""The main job: execute every lesson notebook top to bottom on the bundled model and keep the executed copies."""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import nbformat
import psutil  # ipykernel's own dependency, so present wherever a kernel can run
from nbclient import NotebookClient
from traitlets.config import Config

from ..engine.validate import out_folder
from ..paths import NOTEBOOKS

MANIFEST = ".mgpu_lab-lessons.json"  # in the output folder: the sha256 of each notebook `lessons` wrote there


def lesson_notebooks(folder: Path = NOTEBOOKS) -> list[Path]:
    """The numbered lessons, in order (appendices such as A1_* come after them)."""
    return sorted(folder.glob("[0-9][0-9]_*.ipynb")) + sorted(folder.glob("A[0-9]_*.ipynb"))


def copy_lessons(out_dir: Path, solutions: bool = False, overwrite: bool = False) -> list[Path]:
    """Copy the lessons, outputs cleared (and, if asked, the solutions), into `out_dir` for a room; return the copies.

    A learner then predicts before running: the repository's saved outputs would show the real values first.
    """
    sources = lesson_notebooks() + (sorted((NOTEBOOKS / "solutions").glob("*.py")) if solutions else [])
    out_folder(out_dir, "the folder")
    targets = [out_dir / source.relative_to(NOTEBOOKS) for source in sources]
    existing = [str(target) for target in targets if target.exists()]
    if existing and not overwrite:
        raise ValueError(f"{existing[0]} already exists (a learner's work?). Fix: pick an empty folder.")
    for source, target in zip(sources, targets):
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.suffix == ".ipynb":
            nbformat.write(without_outputs(nbformat.read(source, as_version=4)), target)
        else:
            shutil.copyfile(source, target)
    return targets


def with_model(path: Path, out_dir: Path, model: str, new_tokens: int | None = None) -> Path:
    """A copy of a lesson in `out_dir` whose MODEL (and, if given, NEW_TOKENS) line is replaced; return its path."""
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.source = re.sub(r'^MODEL = "tiny"', f"MODEL = {model!r}", cell.source, flags=re.M)
            if new_tokens is not None:
                cell.source = re.sub(r"^NEW_TOKENS = \d+", f"NEW_TOKENS = {new_tokens}", cell.source, flags=re.M)
    out_dir.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, out_dir / path.name)
    return out_dir / path.name


def without_outputs(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook with every output, execution count, cell timing and saved widget state cleared, for a room."""
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cell.metadata.pop("execution", None)
    notebook.metadata.pop("widgets", None)
    return notebook


def run_lesson(path: Path, out_dir: Path, timeout: int, allow_errors: bool = False) -> float:
    """Execute one notebook in a fresh kernel started in `out_dir`, write the executed copy there, return the seconds."""
    notebook = nbformat.read(path, as_version=4)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as sockets:
        # Kernel and runner talk over IPC sockets in a private folder, not TCP on localhost: nothing travels in
        # plain text through a port, so ipykernel has no "running over TCP without encryption" warning to print.
        ipc = Config({"KernelManager": {"transport": "ipc", "ip": str(Path(sockets) / "kernel")}})
        client = NotebookClient(notebook, timeout=timeout, kernel_name="python3", allow_errors=allow_errors,
                                config=ipc, resources={"metadata": {"path": str(out_dir)}})
        with _stopped_on_interrupt(client):
            _execute(client)
    nbformat.write(notebook, out_dir / path.name)
    return time.perf_counter() - start


def _execute(client: NotebookClient) -> None:
    """client.execute() in a helper thread, raising here what it raised. In the main thread nbclient would take
    SIGINT for its own kernel cleanup, which then fails twice over and lets the next lesson start."""
    errors: list[BaseException] = []
    done = threading.Event()

    def work() -> None:
        try:
            client.execute()
        except BaseException as error:  # noqa: B036 - raised again in the calling thread
            errors.append(error)
        finally:
            done.set()

    threading.Thread(target=work, name="mgpu_lab-lesson", daemon=True).start()
    done.wait()
    if errors:
        raise errors[0]


class Interrupted:
    """Ctrl-C while lessons run kills the running kernel and everything it started; the runner then stops.

    The runner's own SIGINT handler does this, not a KeyboardInterrupt: raised inside nbclient's event loop, that
    became an unrelated AttributeError, and the next lesson started."""

    client: NotebookClient | None = None
    seen = threading.Event()


@contextlib.contextmanager
def _stopped_on_interrupt(client: NotebookClient) -> Iterator[None]:
    """While `client` runs, a Ctrl-C kills its kernel's whole tree; so does any way out of the block."""
    Interrupted.client = client
    try:
        yield
    finally:
        Interrupted.client = None
        _kill_kernel(client)
        # nbclient unregisters its exit-time kernel cleanup when execute() returns; after a Ctrl-C the helper thread
        # never returns, and that cleanup, run as Python exits, printed a traceback over the kernel killed above.
        atexit.unregister(client._cleanup_kernel)


def _kernel_pid(client: NotebookClient) -> int | None:
    """The PID of the client's kernel, once it started."""
    provisioner = getattr(getattr(client, "km", None), "provisioner", None)
    return getattr(provisioner, "pid", None)


def _kill_kernel(client: NotebookClient) -> None:
    """SIGKILL the kernel, every process it started, and the process group of each (a launched rank has its own)."""
    pid = _kernel_pid(client)
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid) if pid else None
        tree = [root, *root.children(recursive=True)] if root and root.is_running() else []
        for process in tree:
            with contextlib.suppress(OSError):
                group = os.getpgid(process.pid)
                if group != os.getpgrp():  # never our own group: the runner reports, then exits 130
                    os.killpg(group, signal.SIGKILL)
                else:
                    os.kill(process.pid, signal.SIGKILL)


def _on_interrupt(signum: int, frame) -> None:
    """The runner's SIGINT handler: note it, and kill the running kernel's tree (the lesson then fails at once)."""
    Interrupted.seen.set()
    if Interrupted.client is not None:
        _kill_kernel(Interrupted.client)


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """The runner's SIGINT handler inside the block (in the main thread), the previous one after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    Interrupted.seen.clear()
    previous = signal.signal(signal.SIGINT, _on_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _digest(path: Path) -> str:
    """A file's sha256, in hex."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _written(out_dir: Path) -> dict[str, str]:
    """The notebooks `lessons` wrote in `out_dir`, each with the sha256 it had then."""
    try:
        written = json.loads((out_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return written if isinstance(written, dict) else {}


def check_targets(out_dir: Path, paths: list[Path], force: bool = False) -> None:
    """Refuse, before any lesson runs, to overwrite a notebook in `out_dir` that `lessons` did not write as it is."""
    out_folder(out_dir, "--out")
    written = _written(out_dir)
    for path in paths:
        target = out_dir / path.name
        if target.exists() and not force and written.get(path.name) != _digest(target):
            raise ValueError(f"{target} is not the copy `lessons` wrote there (a learner's notebook, or one edited "
                             "since), and running the lessons would overwrite it. Fix: pass another --out folder, "
                             "or --force to overwrite it.")


def _remember(out_dir: Path, name: str) -> None:
    """Record the sha256 of the notebook just written, so the next run may replace it (and only it, unchanged)."""
    written = {**_written(out_dir), name: _digest(out_dir / name)}
    staged = out_dir / f".{MANIFEST}.tmp"
    staged.write_text(json.dumps(written, indent=1) + "\n")
    os.replace(staged, out_dir / MANIFEST)


def _last_line(error: Exception) -> str:
    """The last line of an error, without colour codes (the error's name when it has no message)."""
    lines = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip().splitlines()
    return lines[-1] if lines else type(error).__name__


def run_lessons(out_dir: Path, timeout: int = 600, force: bool = False) -> int:
    """Run every lesson, each in a kernel started in `out_dir`; print one line per lesson; return 0 when all ran.

    A notebook already in `out_dir` is replaced only when it is the one an earlier run wrote, unchanged (or `force`).
    Ctrl-C stops the running lesson's kernel and everything it started, and raises KeyboardInterrupt with one line.
    """
    paths = lesson_notebooks()
    check_targets(out_dir, paths, force)
    failed = 0
    with _interruptible():
        for path in paths:
            try:
                seconds = run_lesson(path, out_dir, timeout)
                _remember(out_dir, path.name)
                print(f"ok    {path.name}  ({seconds:.0f} s)", flush=True)
            except Exception as error:  # a failing lesson is reported and the others still run
                if not Interrupted.seen.is_set():  # a lesson stopped by Ctrl-C did not fail
                    failed += 1
                    print(f"FAIL  {path.name}: {_last_line(error)}", flush=True)
            if Interrupted.seen.is_set():
                raise KeyboardInterrupt(f"interrupted: stopped {path.name}, its kernel and every process it "
                                        f"started; the lessons run before it are in {out_dir}/.")
    print(f"Executed notebooks are in {out_dir}/ ; open them with `jupyter lab {out_dir}`.")
    return 1 if failed else 0
