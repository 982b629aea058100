"""Name the process that made a launch fail, and why, in one line: from its exit status and its own report."""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass

from .folder import LaunchFolder

CUDA_IN_PARENT = ("This kernel touched the GPU before the launch, so processes forked from it cannot use it. "
                  "Fix: restart the kernel, import mgpu_lab first, and launch before anything touches the GPU "
                  "(no model.to('cuda'), no torch.cuda calls outside the launched function).")
_PEER_LOST = re.compile(r"connection (reset|closed)|read error|broken pipe", re.IGNORECASE)
_CXX_FRAME = re.compile(r"^(frame #\d+:|Exception raised from )")


class LaunchError(RuntimeError):
    """A launch that could not start or whose processes failed; the message says what to do."""

    def __init__(self, message: str, details: str = ""):
        super().__init__(message + (f"\n\n{details}" if details else ""))
        self.message = message


@dataclass(frozen=True)
class Ended:
    """How a launch's processes ended: exit status by rank (None: unknown), and the rank torch saw fail first."""

    statuses: dict[int, int | None]
    first: int | None = None


def failure(ended: Ended, folder: LaunchFolder, timeout: float) -> LaunchError:
    """Why the launch failed: a process killed by a signal, one that left early, else the first error reported."""
    reports = folder.reports()
    finished = {rank for rank in ended.statuses if folder.finished(rank)}
    for rank, status in sorted(ended.statuses.items()):
        if status is not None and status < 0 and (status != -signal.SIGTERM or rank == ended.first):
            return LaunchError(_killed(rank, signal.Signals(-status).name))
    for rank, status in sorted(ended.statuses.items()):
        if status is not None and status >= 0 and rank not in reports and rank not in finished:
            return LaunchError(_left_early(rank, status))
    if not reports:
        codes = {rank: status for rank, status in ended.statuses.items() if status}
        return LaunchError(f"The launch failed: process(es) exited with code(s) {codes} without an error message.")
    # The first rank to fail holds the cause; the others fail after it, when their peer disappears.
    first = min(reports, key=lambda rank: reports[rank]["when"])
    message, details = reports[first]["error"], _without_cxx_frames(reports[first]["traceback"])
    silent = [rank for rank, status in sorted(ended.statuses.items())
              if status is None and rank not in reports and rank not in finished]
    if silent and _PEER_LOST.search(message):  # it ended before the others noticed; its exit status was not seen
        return LaunchError(_left_early(silent[0], None), details)
    if "timed out" in message.lower() or "timeout" in message.lower():
        late = [rank for rank in sorted(ended.statuses) if rank not in reports and rank not in finished]
        return LaunchError(not_arrived(late, timeout), details)
    if "CUDA error: initialization error" in message:
        return LaunchError(f"The launched processes could not start CUDA. {CUDA_IN_PARENT}", details)
    # When several ranks raised the same error, name the lowest one, so the message is the same on every run.
    step = reports[first]["step"]
    rank = min(r for r, report in reports.items() if (report["error"], report["step"]) == (message, step))
    return LaunchError(_raised(rank, message, step), f"(traceback in that process)\n{details}")


def _raised(rank: int, message: str, step: str) -> str:
    """One line for an error a process raised, in the function or in what the kit does around it."""
    if step == "sending its result back":
        return (f"Process {rank} raised {message} while sending its result back. Fix: return plain data "
                "(numbers, strings, lists, dicts, tensors), not a lock, a generator or an open file.")
    if step:
        return f"Process {rank} raised {message} while {step}."
    if message.startswith(("SystemExit", "KeyboardInterrupt")):
        return (f"Process {rank} raised {message} inside the launched function. Fix: return from the function "
                "instead of calling exit() or sys.exit(), or raising KeyboardInterrupt.")
    return f"Process {rank} raised {message}"


def _killed(rank: int, name: str) -> str:
    """One line for a process that a signal ended."""
    hint = (" - on Linux this is usually the out-of-memory killer: lower the batch size or the number of processes"
            if name == "SIGKILL" else "")
    return f"process {rank} was killed by {name}{hint}."


def _left_early(rank: int, code: int | None) -> str:
    """One line for a process that ended, without an error, before its function returned (code None: not seen)."""
    how = f"exited (code {code})" if code is not None else "ended (killed, or os._exit())"
    return (f"process {rank} {how} before its function returned, without an error, so its peers lost their "
            "connection to it. Fix: let the function return on every rank (no os._exit() inside it).")


def not_arrived(late: list[int], timeout: float) -> str:
    """One line naming the processes that left their peers waiting longer than `timeout`."""
    who = f"process(es) {', '.join(map(str, late))}" if late else "a process"
    return (f"{who} did not arrive within the {timeout:g} s timeout (to join the group, or in a collective), so the "
            "others gave up. Fix: if it hangs, look for a rank that skips a collective (gather, barrier); if it is "
            "only slower (a long, uneven share), raise the timeout (--timeout, timeout=).")


def _without_cxx_frames(text: str) -> str:
    """A child traceback without the C++ stack frames torch.distributed appends to its messages."""
    return "\n".join(line for line in text.splitlines() if not _CXX_FRAME.match(line.strip()))
