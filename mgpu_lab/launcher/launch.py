"""Run a function on N processes (from a notebook, a script or torchrun) and bring rank 0's result back."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from accelerate.state import PartialState
from accelerate.utils import patch_environment
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.multiprocessing.spawn import ProcessException

from .bar import CHANNEL, Bar, Progress
from .checks import launch_timeout, torchrun_env, whole_number
from .checks import port as port_number
from .child import THREADS, ChildArgs, error_line, join_group, leave_group
from .failures import CUDA_IN_PARENT, Ended, LaunchError, failure
from .folder import LaunchFolder
from .processes import Abandoned, forked_alone, start_and_watch, through_notebook_launcher

# How long a process waits for its peers (to join, or in a collective) before the launch fails; torch's is 30 min.
DEFAULT_TIMEOUT_S = 300
ELASTIC_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT"  # torch elastic sets this variable; the launch unsets it


@dataclass(frozen=True)
class LaunchPlan:
    """What a launch will run: how many processes, on which device, which port rank 0 listens on."""

    num_processes: int
    device: str
    port: int

    def describe(self) -> str:
        """One truthful line about the launch, for the learner."""
        if self.device == "cuda":
            return f"Launching {self.num_processes} process(es), one per GPU (NCCL backend)."
        return f"Launching {self.num_processes} CPU process(es) (gloo backend, {THREADS} thread(s) each)."


def count_gpus() -> int:
    """Number of CUDA GPUs, found through NVML so CUDA is not initialised in this process."""
    with patch_environment(PYTORCH_NVML_BASED_CUDA_CHECK="1"):
        return torch.cuda.device_count() if torch.cuda.is_available() else 0


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    """True when `port` can be bound on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def already_launched() -> bool:
    """True inside a process started by torchrun / accelerate launch (one process per rank exists)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def is_main_rank() -> bool:
    """True in the process that launches (or runs alone), and on rank 0 under torchrun; False on its other ranks."""
    return os.environ.get("RANK", "0") == "0"


def check_parent_is_clean() -> None:
    """Refuse to fork when this process already holds CUDA or accelerate state the children would inherit."""
    if torch.cuda.is_initialized():
        raise LaunchError(f"CUDA was already initialised in this kernel before the launch. {CUDA_IN_PARENT}")
    if PartialState._shared_state:
        raise LaunchError(
            "An Accelerator (or PartialState) was created in this kernel, outside the launched function; "
            "every forked process would inherit it and think it is rank 0. "
            "Fix: restart the kernel and create the Accelerator only inside the function you launch."
        )


def default_processes(cpu: bool = False) -> int:
    """How many processes a launch starts when not told: one per GPU, else 2 CPU processes."""
    return (0 if cpu else count_gpus()) or 2


def plan_launch(num_processes: int | None = None, port: int | str | None = None, cpu: bool = False) -> LaunchPlan:
    """Choose device, process count and port for a launch, checking each choice.

    `cpu=True` runs CPU processes (gloo) even where GPUs exist: for cells about processes rather than GPUs,
    which then show the same thing on every machine.
    """
    gpus = 0 if cpu else count_gpus()
    device = "cuda" if gpus else "cpu"
    if num_processes is None:
        num_processes = default_processes(cpu)
    whole_number("num_processes", num_processes)
    if gpus and num_processes > gpus:
        raise LaunchError(
            f"Asked for {num_processes} processes but this machine has {gpus} GPU(s); data parallelism "
            f"runs one process per GPU. Fix: use num_processes <= {gpus} (or leave it out: one per GPU), "
            "or cpu=True for CPU processes."
        )
    if port is None:
        return LaunchPlan(num_processes, device, free_port())
    port = port_number("use_port", int(port) if isinstance(port, str) and port.isdigit() else port)  # "29500" too
    if not port_is_free(port):
        raise LaunchError(
            f"Port {port} is already in use (another launch or notebook?). "
            "Fix: pass another use_port, or leave use_port=None to pick a free one."
        )
    return LaunchPlan(num_processes, device, port)


def launch(function: Callable[..., Any], args: tuple = (), num_processes: int | None = None,
           mixed_precision: str = "no", use_port: str | int | None = None, master_addr: str = "127.0.0.1",
           node_rank: int = 0, num_nodes: int = 1, rdzv_backend: str = "static", rdzv_endpoint: str = "",
           rdzv_conf: dict | None = None, rdzv_id: str = "none", max_restarts: int = 0, monitor_interval: float = 0.1,
           log_line_prefix_template: str | None = None, *, timeout: float = DEFAULT_TIMEOUT_S, cpu: bool = False,
           progress: Progress | None = None, verbose: bool = True) -> Any:
    """Run `function(*args)` on every process through accelerate's notebook_launcher; return rank 0's result.

    The same call as `notebook_launcher`, with the same parameters (`use_port=None`, the default here, picks a free
    port), plus the kit's keywords: `timeout` is how many seconds a process waits for a peer that does not arrive
    (to join, or in a collective) before the launch fails; `cpu=True` uses CPU processes even on a GPU machine;
    `progress` draws one bar over every process (they report through bar.tell); `verbose` prints one line
    about the launch.
    """
    if not callable(function):
        raise TypeError(f"launch() needs a function to run, got the {type(function).__name__} {function!r:.40}.")
    args = tuple(args)
    launch_timeout(timeout)
    if num_processes is not None:
        whole_number("num_processes", num_processes)
    progress = bar_counts(progress)
    options = dict(mixed_precision=mixed_precision, master_addr=master_addr, node_rank=node_rank, num_nodes=num_nodes,
                   rdzv_backend=rdzv_backend, rdzv_endpoint=rdzv_endpoint, rdzv_conf=rdzv_conf, rdzv_id=rdzv_id,
                   max_restarts=max_restarts, monitor_interval=monitor_interval,
                   log_line_prefix_template=log_line_prefix_template)
    if Running.pid not in (None, os.getpid()):  # a process this process's launch forked: the function calls again
        return _inside_a_launch(function, args, num_processes, timeout)
    with one_at_a_time(function):  # first: a running launch has torch's variables in os.environ for its processes
        torchrun_env(num_processes)  # left over in a shell, or a count other than WORLD_SIZE: refused, as run() does
        if already_launched():
            return _run_in_this_process(function, args, timeout)
        check_parent_is_clean()
        plan = plan_launch(num_processes, use_port, cpu)
        if verbose:
            print(plan.describe(), flush=True)  # flushed before the fork, so no child inherits it unprinted
        options = dict(options, num_processes=plan.num_processes, use_port=str(plan.port))
        return _run_processes(plan, function, args, options, timeout, progress)


def _inside_a_launch(function: Callable[..., Any], args: tuple, num_processes: int | None, timeout: float) -> Any:
    """launch() in a launched function: run on the processes that exist (as run() does), or refuse another count."""
    if already_launched():
        torchrun_env(num_processes)
        return _run_in_this_process(function, args, timeout)
    if num_processes not in (None, 1):
        raise ValueError(f"This function already runs inside a launch, on its one process, but "
                         f"num_processes={num_processes} were asked for. Fix: leave num_processes out (or 1), "
                         "or launch from the notebook or script, not from inside a launched function.")
    return function(*args)


class Running:
    """The launch running in this process, if any: launches swap sys.stdout and os.environ, so one runs at a time."""

    lock = threading.Lock()
    what: str = ""
    pid: int | None = None  # the launching process; a process forked by the launch sees another PID


@contextlib.contextmanager
def one_at_a_time(function: Callable[..., Any]) -> Iterator[None]:
    """Hold the process's one launch for the block; a second launch meanwhile (another thread) is refused at once."""
    if not Running.lock.acquire(blocking=False):
        raise LaunchError(f"Another launch is running in this process ({Running.what}); a launch replaces "
                          "sys.stdout and os.environ while it runs, so one runs at a time. Fix: wait for it to "
                          "return, or launch one function that does both jobs.")
    name = getattr(function, "__qualname__", type(function).__name__)
    Running.what = (f"launch({name}) from thread {threading.current_thread().name!r}, started "
                    f"{time.strftime('%H:%M:%S')}")
    Running.pid = os.getpid()
    try:
        yield
    finally:
        Running.what, Running.pid = "", None
        Running.lock.release()


def bar_counts(progress: object) -> Progress | None:
    """What the bar counts (a Progress), None for no bar (False too); anything else is a TypeError naming the fix."""
    if progress is None or progress is False or isinstance(progress, Progress):
        return progress or None
    raise TypeError(f"progress must be a Progress (what the bar counts, e.g. Progress(total=len(prompts))), got the "
                    f"{type(progress).__name__} {progress!r:.40}. Fix: pass progress=Progress(total=N) and call "
                    "tell(prompts, tokens) in the function, or leave it out; run(..., progress=True) makes its own.")


def _run_processes(plan: LaunchPlan, function: Callable[..., Any], args: tuple, options: dict, timeout: float,
                   progress: Progress | None) -> Any:
    """Fork the planned processes in a fresh temp folder, wait for them, replay rank 0's prints, return its result."""
    with LaunchFolder.create() as tmp:
        folder = LaunchFolder(tmp)
        child = ChildArgs(function, args, folder, timeout, sys.stdout, sys.stderr)
        bar = Bar(folder, progress) if progress else None
        try:
            _start_and_watch(plan, child, options, bar)
        finally:
            if bar:
                bar.close()
            sys.stdout.write(folder.output())  # rank 0's prints, here, after it finished: always in the same order
            sys.stdout.flush()
        found, result = folder.result()
        if not found:
            raise LaunchError("The processes finished but rank 0 left no result.")
        return result


def _start_and_watch(plan: LaunchPlan, child: ChildArgs, options: dict, bar: Bar | None) -> None:
    """Start every process (notebook_launcher for two or more), wait for them, and name the one that failed."""
    n, folder = plan.num_processes, child.folder
    env = dict(ACCELERATE_USE_CPU="yes" if plan.device == "cpu" else "no", OMP_NUM_THREADS=THREADS,
               ACCELERATE_MIXED_PRECISION=options["mixed_precision"], TOKENIZERS_PARALLELISM="false",
               TORCHELASTIC_SIGNALS_TO_HANDLE=ELASTIC_SIGNALS, PYTORCH_NVML_BASED_CUDA_CHECK="1",
               **{CHANNEL: str(folder.path)} if bar else {})  # notebook_launcher's GPU count must not start CUDA
    start = forked_alone(child) if n == 1 else through_notebook_launcher(child, options)
    processes, starter = start_and_watch(start, env, n, bar)
    pids = folder.pids()
    if starter.error is None and all(folder.finished(rank) for rank in range(n)):
        return
    if not pids and not isinstance(starter.error, Abandoned):
        raise LaunchError(f"The launch failed before any process started: {error_line(starter.error)}")
    statuses = {rank: processes[pid].exitcode if pid in processes else None for rank, pid in pids.items()}
    raise failure(_ended(statuses, starter.error), folder, child.timeout)


def _ended(statuses: dict, error: BaseException | None) -> Ended:
    """The exit statuses, completed with the failure torch elastic (or torch.multiprocessing) saw first."""
    if isinstance(error, ChildFailedError):
        first, seen = next(iter(error.failures.items()))
        return Ended({**statuses, first: statuses.get(first) or seen.exitcode}, first)
    if isinstance(error, ProcessException):
        return Ended(statuses, error.error_index)
    return Ended(statuses)


def _run_in_this_process(fn: Callable[..., Any], args: tuple, timeout: float) -> Any:
    """Under torchrun each rank is already a process: run here, on CPU when there is no GPU."""
    if not count_gpus():
        os.environ.setdefault("ACCELERATE_USE_CPU", "yes")
        os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))  # as launch() gives its children
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    _join_started_ranks(timeout)
    result = fn(*args)
    leave_group()
    return result


def _join_started_ranks(timeout: float) -> None:
    """Join the ranks started by torchrun or by hand; one that never comes is named in one line, not 40."""
    try:
        join_group(timeout)
    except Exception as error:  # torch's DistStoreError and its C++ frames, or gloo's timeout
        if "timed out" not in str(error).lower() and "timeout" not in str(error).lower():
            raise
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        others = [other for other in range(world) if other != rank]
        raise LaunchError(
            f"This is rank {rank} of {world}; rank(s) {', '.join(map(str, others))} did not all join within the "
            f"{timeout:g} s timeout. Fix: start every rank with the same MASTER_ADDR, MASTER_PORT and "
            f"WORLD_SIZE={world} (or use torchrun), or raise the timeout (--timeout, timeout=)."
        ) from None
