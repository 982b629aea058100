"""What runs in each launched process: join the group, call the function, send rank 0's result back, leave."""

from __future__ import annotations

import ctypes
import datetime
import gc
import io
import os
import signal
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Callable, TextIO

import torch
import torch.distributed.nn  # noqa: F401 - see below
from accelerate.state import PartialState
from accelerate.utils import parse_flag_from_env

from .folder import LaunchFolder
from .tree import end_descendants, lead_own_group

# torch.distributed.nn's functions take `group=group.WORLD` as a default, read when it is imported: imported after
# a group exists (transformers imports it while loading a model), they keep that group alive for good, so
# destroy_process_group() cannot stop its gloo threads, and one still freeing the last collective when Python
# exits aborts the process (SIGABRT, "terminate called without an active exception"). Imported here, first.

# One thread per process: a CPU process stands in for one GPU, and a forked child that starts an
# OpenMP team after its parent already ran one (say, a generate() in the kernel) hangs for ever.
THREADS = 1


@dataclass(frozen=True)
class ChildArgs:
    """What each launched process is handed: the function and its arguments, and how to talk back to the parent."""

    function: Callable[..., Any]
    args: tuple
    folder: LaunchFolder
    timeout: float  # seconds to wait for a peer (to join, or in a collective)
    stdout: TextIO  # the parent's streams, as they were when it launched
    stderr: TextIO


def run_child(child: ChildArgs) -> None:
    """Runs in each forked process: call the function, save rank 0's result and output, record any failure.

    Rank 0's prints are captured and printed by the parent when the launch ends: streamed from a forked process
    into a Jupyter kernel, they could arrive after the kernel's own next line. Whatever fails here (the function,
    sending the result back, leaving the group; any exception, KeyboardInterrupt and SystemExit included) is written
    to a report the parent reads, and the process exits with code 1.
    """
    # Never collect what was inherited from the parent: a stale torch TCPStore from an earlier launch's agent,
    # freed here, joins a thread that does not exist in this process and hangs for ever (seen inside a gather).
    gc.freeze()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches every process; the parent stops them all
    _die_with_parent()
    lead_own_group()  # what the function forks is ended with this rank, by the rank or by the parent
    me = os.getpid()
    _no_library_bars()
    rank, folder = int(os.environ.get("RANK", "0")), child.folder
    folder.started(rank)
    sys.stdout, sys.stderr = io.StringIO() if rank == 0 else child.stdout, child.stderr
    torch.set_num_threads(THREADS)
    step = "joining the process group"
    try:
        join_group(child.timeout)
        step = ""
        result = child.function(*child.args)
        _only_the_rank(me)
        step = "sending its result back"
        if rank == 0:
            folder.save_result(result)
        step = "leaving the process group"
        leave_group()
    except BaseException as error:  # noqa: B036 - every way out of the function is reported, then exit code 1
        _only_the_rank(me, 1)
        folder.report(rank, {"error": error_line(error), "step": step, "traceback": traceback.format_exc()})
        raise SystemExit(1) from None
    finally:
        if rank == 0:
            folder.save_output(sys.stdout.getvalue())
        sys.stderr.flush()
        end_descendants()  # a worker or subprocess the function left running
    folder.finish(rank)


def join_group(timeout: float) -> None:
    """Make the process group now, with our timeout, so a peer that never arrives ends the run in bounded time."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # The Accelerator that the function makes reuses this state (and its process group).
        PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"), timeout=datetime.timedelta(seconds=timeout))


def leave_group() -> None:
    """Wait for every rank, then close the process group, so no rank exits while a peer still needs it."""
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def error_line(error: BaseException) -> str:
    """`Name: message`, or just the name when the message is empty (a bare KeyboardInterrupt)."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _only_the_rank(rank_pid: int, code: int = 0) -> None:
    """In a process the function forked that returned (or raised) out of it: leave now, as the rank it is not."""
    if os.getpid() != rank_pid:
        os._exit(code)


def _die_with_parent() -> None:
    """On Linux, have the kernel SIGKILL this process if its parent dies (a killed notebook or terminal)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def _no_library_bars() -> None:
    """No transformers progress bar (from_pretrained's) in a child process.

    A forked process cannot draw in a notebook, and ipykernel logs every attempt; the kit's own bar is the parent's.
    """
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read by transformers when a child imports it
    if "transformers" in sys.modules:  # imported before the fork: switch it off there too
        sys.modules["transformers"].utils.logging.disable_progress_bar()
