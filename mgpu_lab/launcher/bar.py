"""Live progress: each process writes what it has finished to a file; the launching process draws one bar."""

from __future__ import annotations

import io
import os
import sys
from dataclasses import dataclass

from tqdm import tqdm

from .folder import LaunchFolder

CHANNEL = "MGPU_LAB_PROGRESS"  # the folder each launched process writes its counts to
_finished: dict[str, list[int]] = {}


@dataclass(frozen=True)
class Progress:
    """What the bar counts: `total` prompts, `done` of them finished before the launch (a resumed run)."""

    total: int
    done: int = 0


def wanted(progress: bool | None) -> bool:
    """progress=None means: show it where someone watches, a terminal (stderr) or a Jupyter kernel."""
    if progress is not None:
        return progress
    return sys.stderr.isatty() or "ipykernel" in sys.modules


def tell(prompts: int, tokens: int) -> None:
    """In a launched process: add `prompts` finished and `tokens` generated; nothing when no bar is drawn."""
    folder = os.environ.get(CHANNEL)
    if not folder:
        return
    counts = _finished.setdefault(folder, [0, 0])
    counts[0] += prompts
    counts[1] += tokens
    LaunchFolder(folder).count(int(os.environ.get("RANK", "0")), *counts)  # the parent never reads half a file


class Bar:
    """The parent's bar over every process: prompts done / total, tokens generated, refreshed on demand.

    In a terminal it is tqdm on stderr. In a notebook it is the same line in one display that ends empty: the
    saved notebook then holds the same (empty) output on every run, and the summary printed after it says the rest.
    """

    def __init__(self, folder: LaunchFolder, progress: Progress):
        self.folder, self.done = folder, progress.done
        self.cell = _notebook_display()
        self.bar = tqdm(total=progress.total, initial=progress.done, desc="prompts", unit="prompt", leave=False,
                        dynamic_ncols=True, file=io.StringIO() if self.cell else sys.stderr)

    def refresh(self) -> None:
        """Sum the counts every process wrote so far and redraw."""
        counts = self.folder.counts()
        self.bar.n = self.done + sum(prompts for prompts, _ in counts)
        self.bar.set_postfix_str(f"{sum(tokens for _, tokens in counts)} tokens generated", refresh=False)
        self.bar.refresh()
        if self.cell:
            self.cell.update(_text(str(self.bar)))

    def close(self) -> None:
        """Remove the bar: the run's summary says the rest."""
        self.bar.close()
        if self.cell:
            self.cell.update(_text(""))


def _notebook_display():
    """An empty display in the running notebook cell, to update in place; None outside a Jupyter kernel."""
    if "ipykernel" not in sys.modules:
        return None
    from IPython.display import display

    return display(_text(""), display_id=True)


def _text(line: str):
    """A line of monospace text for a notebook display."""
    from IPython.display import Pretty

    return Pretty(line)
