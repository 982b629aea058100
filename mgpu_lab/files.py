"""Two ways the kit writes files that several processes share: whole or not at all, and one writer at a time."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def write_whole(path: Path, data: str | bytes) -> None:
    """Write a file whole or not at all: written aside, then renamed over `path`, so no reader sees half of it."""
    staged = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staged.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(staged, path)


def lock(handle, wait: bool = True) -> bool:
    """An exclusive lock on an open file (object or descriptor), held until it is closed.

    wait=False: return False at once when another process holds it.
    """
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True
