"""The main job: execute every lesson notebook top to bottom on the bundled model and keep the executed copies."""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def lesson_notebooks() -> list[Path]:
    """The numbered lessons, in order (appendices such as A1_* come after them)."""
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")) + sorted(NOTEBOOKS.glob("A[0-9]_*.ipynb"))


def run_lesson(path: Path, out_dir: Path, timeout: int, allow_errors: bool = False) -> float:
    """Execute one notebook in a fresh kernel, write the executed copy to `out_dir`, return the seconds it took."""
    notebook = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(notebook, timeout=timeout, kernel_name="python3", allow_errors=allow_errors,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    nbformat.write(notebook, out_dir / path.name)
    return time.perf_counter() - start


def run_lessons(out_dir: Path, timeout: int = 600) -> int:
    """Run every lesson; print one line per lesson; return 0 when all of them ran, 1 otherwise."""
    out_dir.mkdir(parents=True, exist_ok=True)
    failed = 0
    for path in lesson_notebooks():
        try:
            seconds = run_lesson(path, out_dir, timeout)
            print(f"ok    {path.name}  ({seconds:.0f} s)", flush=True)
        except Exception as error:  # a failing lesson is reported and the others still run
            failed += 1
            print(f"FAIL  {path.name}: {str(error).strip().splitlines()[-1]}", flush=True)
    print(f"Executed notebooks are in {out_dir}/ ; open them with `jupyter lab {out_dir}`.")
    return 1 if failed else 0
