"""The main job: execute every lesson notebook top to bottom on the bundled model and keep the executed copies."""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from traitlets.config import Config

from ..paths import NOTEBOOKS


def lesson_notebooks(folder: Path = NOTEBOOKS) -> list[Path]:
    """The numbered lessons, in order (appendices such as A1_* come after them)."""
    return sorted(folder.glob("[0-9][0-9]_*.ipynb")) + sorted(folder.glob("A[0-9]_*.ipynb"))


def copy_lessons(out_dir: Path, solutions: bool = False, overwrite: bool = False) -> list[Path]:
    """Copy the lessons, outputs cleared (and, if asked, the solutions), into `out_dir` for a room; return the copies.

    A learner then predicts before running: the repository's saved outputs would show the real values first.
    """
    sources = lesson_notebooks() + (sorted((NOTEBOOKS / "solutions").glob("*.py")) if solutions else [])
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
        NotebookClient(notebook, timeout=timeout, kernel_name="python3", allow_errors=allow_errors, config=ipc,
                       resources={"metadata": {"path": str(out_dir)}}).execute()
    nbformat.write(notebook, out_dir / path.name)
    return time.perf_counter() - start


def run_lessons(out_dir: Path, timeout: int = 600) -> int:
    """Run every lesson, each in a kernel started in `out_dir`; print one line per lesson; return 0 when all ran."""
    failed = 0
    for path in lesson_notebooks():
        try:
            seconds = run_lesson(path, out_dir, timeout)
            print(f"ok    {path.name}  ({seconds:.0f} s)", flush=True)
        except Exception as error:  # a failing lesson is reported and the others still run
            failed += 1
            last_line = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip().splitlines()[-1]  # without colour codes
            print(f"FAIL  {path.name}: {last_line}", flush=True)
    print(f"Executed notebooks are in {out_dir}/ ; open them with `jupyter lab {out_dir}`.")
    return 1 if failed else 0
