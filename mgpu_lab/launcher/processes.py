"""Start a launch's processes through accelerate's notebook_launcher, in a helper thread, and watch them.

notebook_launcher blocks until its processes end and, run in the main thread, replaces the process's SIGINT handler
with torch elastic's for good. In a helper thread it installs no handler (torch logs that it cannot, and we keep
that quiet), and the main thread stays free to draw the bar, take Ctrl-C and stop the processes.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import multiprocessing.process
import os
import signal
import sys
import threading
import time
from multiprocessing import connection
from typing import Callable, Iterator

import torch
from accelerate import notebook_launcher
from accelerate.utils import PrepareForLaunch, patch_environment

from .bar import Bar
from .child import ChildArgs, run_child
from .tree import descendants, end_group, end_processes

POLL_S = 0.05  # how often the parent looks for its new processes (before torch elastic reaps an early exit)
BAR_S = 0.5  # how often it redraws the bar
STOP_GRACE_S = 3  # after SIGTERM, how long a process gets before SIGKILL
STUCK_GRACE_S = 3  # torch elastic waits for ever when every process exits 0 early (os._exit); we stop waiting
TORCH_LOGGERS = ("torch.distributed", "torch.multiprocessing")


class Abandoned(BaseException):
    """Raised in the helper thread to end a torch elastic agent that waits for processes that are gone."""


class Starter(threading.Thread):
    """The helper thread: runs `start` (a blocking launch) and keeps what it raised."""

    def __init__(self, start: Callable[[], None]):
        super().__init__(name="mgpu_lab-launch", daemon=True)
        self.start_processes, self.error, self.done = start, None, threading.Event()

    def run(self) -> None:
        """Run the launch; keep its exception for the main thread."""
        try:
            self.start_processes()
        except BaseException as error:  # noqa: B036 - handed to the main thread, which decides
            self.error = error
        finally:
            self.done.set()

    def abandon(self) -> None:
        """Make the launch raise Abandoned in this thread, at its next Python line."""
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.ident), ctypes.py_object(Abandoned))


def through_notebook_launcher(child: ChildArgs, options: dict) -> Callable[[], None]:
    """The launch of two or more processes: accelerate's notebook_launcher, with the kit's child as the function.

    `options`: notebook_launcher's own keywords (num_processes, use_port, ...), as launch() was given them.
    """
    return lambda: notebook_launcher(run_child, args=(child,), **options)


def forked_alone(child: ChildArgs) -> Callable[[], None]:
    """A one-process launch, forked through the same accelerate piece (notebook_launcher would run it right here)."""
    launcher = PrepareForLaunch(run_child, distributed_type="NO")
    return lambda: torch.multiprocessing.start_processes(launcher, args=(child,), nprocs=1, start_method="fork")


def start_and_watch(start: Callable[[], None], env: dict, count: int, bar: Bar | None) -> tuple[dict, Starter]:
    """Start the launch in a helper thread and wait for it, redrawing the bar; on Ctrl-C stop every process.

    Returns the launch's processes by PID (their exit statuses are final) and the finished thread.
    """
    before = set(multiprocessing.process._children)  # noqa: SLF001 - see _new_processes
    processes: dict[int, multiprocessing.process.BaseProcess] = {}
    starter = Starter(start)
    with patch_environment(**env), quiet():
        try:
            starter.start()
            ended_since, drawn = None, 0.0
            # Event.wait, not Thread.join: a Ctrl-C inside Thread.join(timeout) marks a running thread as ended
            # (Python 3.11, bpo-45274's fix), and the launch would then not wait for its processes to stop.
            while not starter.done.wait(POLL_S):
                processes.update(_new_processes(before))
                _end_groups_of_ended(processes)  # what an ended rank left holds its pipe: torch would wait for it
                if bar and time.monotonic() - drawn > BAR_S:
                    bar.refresh()
                    drawn = time.monotonic()
                ended_since = _stuck_since(processes, count, ended_since)
                if ended_since and time.monotonic() - ended_since > STUCK_GRACE_S:
                    starter.abandon()
            starter.join()
            processes.update(_new_processes(before))
            if bar:
                bar.refresh()  # the final counts
        except KeyboardInterrupt:
            processes.update(_new_processes(before))
            stopped = stop(processes.values())
            starter.done.wait()  # torch elastic sees its processes gone, and returns
            raise KeyboardInterrupt(f"interrupted: stopped {stopped} processes") from None
        finally:
            for pid in processes:
                end_group(pid)  # whatever a rank's function started and left, however the rank ended
    return processes, starter


def _end_groups_of_ended(processes: dict) -> None:
    """End the process group of each rank that has exited (what its function forked and left running)."""
    for pid, process in processes.items():
        if has_exited(process):
            end_group(pid)


def has_exited(process: multiprocessing.process.BaseProcess) -> bool:
    """True once a launched process has exited, without reaping it: torch's thread does, and must see its status.

    Reaping it here (`process.exitcode` calls waitpid) races torch's own waitpid, which then reads no status,
    counts the rank as failed and fails a launch whose every process succeeded (seen about once in 100 launches).
    """
    if not hasattr(os, "waitid"):  # macOS: no way to look without reaping
        return process.exitcode is not None
    try:
        return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # not ours to wait for (reaped already, or by someone else): never signal it here
        return False


def _new_processes(before: set) -> dict:
    """The processes forked since the launch began, by PID.

    multiprocessing keeps every process it started in `_children` until someone joins it, and its exit status
    stays on the object torch elastic also holds: reading it after the launch cannot race torch's own waiting.
    """
    return {p.pid: p for p in multiprocessing.process._children - before if p.pid}  # noqa: SLF001


def _stuck_since(processes: dict, count: int, since: float | None) -> float | None:
    """When every process had ended while the launch still waited (None while one runs)."""
    ended = connection.wait([p.sentinel for p in processes.values()], timeout=0) if processes else []
    if len(processes) < count or len(ended) < len(processes):
        return None
    return since or time.monotonic()


def stop(processes) -> int:
    """SIGTERM every running process, SIGKILL those still there after a grace period; how many were running."""
    sentinels = {p.sentinel: p for p in processes}
    running = [sentinels[s] for s in set(sentinels) - set(connection.wait(list(sentinels), timeout=0))]
    started = [pid for p in running for pid in descendants(p.pid)]  # before the ranks go: some left their group
    for p in running:
        end_group(p.pid, signal.SIGTERM)  # the rank and what its function started
    still = set(p.sentinel for p in running) - set(connection.wait([p.sentinel for p in running], STOP_GRACE_S))
    for sentinel in still:
        end_group(sentinels[sentinel].pid, signal.SIGKILL)
    end_processes(started)
    return len(running)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Keep torch elastic's log lines and notebook_launcher's "Launching training on N CUDAs/CPUs" line out of sight.

    The kit prints its own truthful line, and names any failure itself; the children write to the streams they
    were given, not to sys.stdout, so nothing of theirs is lost.
    """
    loggers = [logging.getLogger(name) for name in TORCH_LOGGERS]
    levels = [logger.level for logger in loggers]
    stdout, sys.stdout = sys.stdout, io.StringIO()
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        sys.stdout = stdout
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
