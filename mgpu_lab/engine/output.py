"""The output file: one JSON line per completion, appended as it is produced, so a stopped run can resume."""

from __future__ import annotations

import fcntl
import json
from dataclasses import asdict
from pathlib import Path

from .results import Completion


def append_completions(path: str | Path, completions: list[Completion]) -> None:
    """Append completions as JSON lines in one locked write, flushed to disk before returning."""
    lines = "".join(json.dumps(asdict(c)) + "\n" for c in completions)
    with open(path, "a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # processes append to the same file; whole lines never interleave
        handle.write(lines)
        handle.flush()


def prepare_output(path: str | Path, prompts: list[str], resume: bool) -> dict[int, Completion]:
    """Get `path` ready for a run and return the completions it already holds for these prompts (resume)."""
    path = Path(path)
    if not path.exists() or not path.stat().st_size:
        path.parent.mkdir(parents=True, exist_ok=True)
        return {}
    if not resume:
        raise ValueError(f"Output file {path} already holds completions. Fix: pass --resume (resume=True) to "
                         "generate only the prompts it lacks, or choose another file.")
    text = path.read_text(encoding="utf-8")
    if not text.endswith("\n"):  # a run stopped in the middle of a line: drop the partial line
        text = text[: text.rfind("\n") + 1]
        path.write_text(text, encoding="utf-8")
    return reusable(text, prompts)


def reusable(text: str, prompts: list[str]) -> dict[int, Completion]:
    """The completions in `text` whose index and prompt match this run's prompts (the first of any repeat)."""
    found: dict[int, Completion] = {}
    for line in text.splitlines():
        completion = Completion(**json.loads(line))
        index = completion.index
        if 0 <= index < len(prompts) and prompts[index] == completion.prompt:
            found.setdefault(index, completion)
    return found
