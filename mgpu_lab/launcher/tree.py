"""What a launched function starts (a data-loader worker, a subprocess): found and ended with the rank that started it.

Each rank leads its own process group, which whatever it forks joins, and is a "child subreaper": a process it
started whose parent ends is handed to the rank, not to init, so the rank still finds it when it ends.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

PR_SET_CHILD_SUBREAPER = 36


def lead_own_group() -> None:
    """In a launched rank: a process group of its own (the parent ends it whole), and orphans handed to it (Linux)."""
    os.setpgid(0, 0)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1)


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (its children, theirs, ...), read from /proc; [] where there is none."""
    parents: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    with open(f"/proc/{entry.name}/stat") as stat:
                        parent = int(stat.read().rpartition(")")[2].split()[1])
                    parents.setdefault(parent, []).append(int(entry.name))
    found, todo = [], list(parents.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo += parents.get(child, [])
    return found


def end_descendants() -> None:
    """SIGKILL everything this process started that still runs (a rank calls it on every way out)."""
    end_processes(descendants(os.getpid()))


def end_processes(pids: list[int]) -> None:
    """SIGKILL each of these processes that still runs."""
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def end_group(leader: int, number: int = signal.SIGKILL) -> None:
    """Signal a rank's whole process group (the rank and what it started), which may already be gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(leader, number)
