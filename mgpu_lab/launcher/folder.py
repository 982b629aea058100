"""The launch folder: the temp folder through which a launch's processes talk to the process that launched them.

Every file name of that protocol lives here. Each process writes its PID when it starts, a mark when it finished,
a report when it failed, its progress counts; rank 0 writes its result and what it printed. The launching process
reads them all.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..files import write_whole

TEMP_PREFIX = "mgpu_lab-"  # then the launching process's PID: a folder whose process is gone is removed
RESULT = "result.pkl"
MAIN_OUTPUT = "stdout-rank0.txt"


class LaunchFolder:
    """One launch's folder, and the files each process writes in it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @staticmethod
    def create() -> tempfile.TemporaryDirectory:
        """A new temp folder named after this process; first remove those left by launches whose process is gone."""
        for old in Path(tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*-*"):
            pid = old.name.removeprefix(TEMP_PREFIX).partition("-")[0]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(old, ignore_errors=True)
        return tempfile.TemporaryDirectory(prefix=f"{TEMP_PREFIX}{os.getpid()}-")

    def started(self, rank: int) -> None:
        """In a process: record its PID, so the parent can find its exit status."""
        write_whole(self.path / f"pid-rank{rank}", str(os.getpid()))

    def pids(self) -> dict[int, int]:
        """The PID of each process that started, by rank."""
        return {int(p.name.removeprefix("pid-rank")): int(p.read_text()) for p in self.path.glob("pid-rank*")}

    def finish(self, rank: int) -> None:
        """In a process: mark that its function returned and it left the group."""
        (self.path / f"finished-rank{rank}").touch()

    def finished(self, rank: int) -> bool:
        """True when process `rank` marked itself finished."""
        return (self.path / f"finished-rank{rank}").exists()

    def report(self, rank: int, report: dict) -> None:
        """In a process: write what went wrong in it (error, step, traceback), whole or not at all."""
        write_whole(self.path / f"error-rank{rank}.json", json.dumps(report))

    def reports(self) -> dict[int, dict]:
        """Each failed process's report, by rank, with when it was written ("when", in ns)."""
        return {int(p.name.removeprefix("error-rank").removesuffix(".json")): {**json.loads(p.read_text()),
                                                                                "when": p.stat().st_mtime_ns}
                for p in self.path.glob("error-rank*.json")}

    def save_result(self, result: Any) -> None:
        """In rank 0: the function's return value, for the parent."""
        (self.path / RESULT).write_bytes(pickle.dumps(result))

    def result(self) -> tuple[bool, Any]:
        """(True, rank 0's return value), or (False, None) when it left none."""
        path = self.path / RESULT
        return (True, pickle.loads(path.read_bytes())) if path.exists() else (False, None)

    def save_output(self, text: str) -> None:
        """In rank 0: what it printed, for the parent to print after the launch."""
        (self.path / MAIN_OUTPUT).write_text(text)

    def output(self) -> str:
        """What rank 0 printed ("" when it printed nothing)."""
        path = self.path / MAIN_OUTPUT
        return path.read_text() if path.exists() else ""

    def count(self, rank: int, prompts: int, tokens: int) -> None:
        """In a process: its progress so far (prompts finished, tokens generated), whole or not at all."""
        write_whole(self.path / f"progress-rank{rank}", f"{prompts} {tokens}")

    def counts(self) -> list[tuple[int, int]]:
        """Every process's progress so far."""
        return [tuple(map(int, p.read_text().split())) for p in self.path.glob("progress-rank*")]


def _alive(pid: int) -> bool:
    """True while process `pid` exists (it may belong to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True
