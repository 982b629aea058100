"""Run a function on N processes (from a notebook, a script or torchrun) and bring rank 0's result back."""

from __future__ import annotations

import os
import pickle
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from accelerate.state import PartialState
from accelerate.utils import patch_environment
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.multiprocessing.spawn import ProcessException

from .child import MAIN_OUTPUT, RESULT_FILE, error_line, join_group, leave_group
from .failures import CUDA_IN_PARENT, Ended, LaunchError, failure
from .processes import Abandoned, forked_alone, start_and_watch, through_notebook_launcher
from .progress import CHANNEL, Bar, Progress
from .validate import launch_timeout
from .validate import port as port_number

TEMP_PREFIX = "mgpu_lab-"  # then the launching process's PID: a folder whose process is gone is removed
# How long a process waits for its peers (to join, or in a collective) before the launch fails; torch's is 30 min.
DEFAULT_TIMEOUT_S = 300
ELASTIC_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT"  # torch elastic sets this variable; the launch unsets it


@dataclass(frozen=True)
class LaunchPlan:
    """What a launch will run: how many processes, on which device, with how many threads each."""

    num_processes: int
    device: str
    threads_per_process: int
    port: int

    def describe(self) -> str:
        """One truthful line about the launch, for the learner."""
        if self.device == "cuda":
            return f"Launching {self.num_processes} process(es), one per GPU (NCCL backend)."
        return (
            f"Launching {self.num_processes} CPU process(es) (gloo backend, "
            f"{self.threads_per_process} thread(s) each)."
        )


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


def plan_launch(num_processes: int | None = None, port: int | None = None, cpu: bool = False) -> LaunchPlan:
    """Choose device, process count, threads and port for a launch, checking each choice.

    `cpu=True` runs CPU processes (gloo) even where GPUs exist: for cells about processes rather than GPUs,
    which then show the same thing on every machine.
    """
    gpus = 0 if cpu else count_gpus()
    device = "cuda" if gpus else "cpu"
    if num_processes is None:
        num_processes = default_processes(cpu)
    if not isinstance(num_processes, int) or isinstance(num_processes, bool) or num_processes < 1:
        raise LaunchError(f"num_processes must be a whole number >= 1, got {num_processes!r}.")
    if gpus and num_processes > gpus:
        raise LaunchError(
            f"Asked for {num_processes} processes but this machine has {gpus} GPU(s); data parallelism "
            f"runs one process per GPU. Fix: use num_processes <= {gpus} (or leave it out: one per GPU), "
            "or cpu=True for CPU processes."
        )
    if port is None:
        port = free_port()
    elif not port_is_free(port_number("port", port)):
        raise LaunchError(
            f"Port {port} is already in use (another launch or notebook?). "
            "Fix: pass another port, or leave port=None to pick a free one."
        )
    # One thread per process: a CPU process stands in for one GPU, and a forked child that starts an
    # OpenMP team after its parent already ran one (say, a generate() in the kernel) hangs for ever.
    return LaunchPlan(num_processes, device, 1, port)


def launch(fn: Callable[..., Any], *args: Any, num_processes: int | None = None, port: int | None = None,
           verbose: bool = True, progress: Progress | None = None, timeout: float = DEFAULT_TIMEOUT_S,
           cpu: bool = False) -> Any:
    """Run `fn(*args)` on every process through accelerate's notebook_launcher; return rank 0's result.

    `progress` draws one bar over every process (they report through progress.tell); `timeout` is how many
    seconds a process waits for a peer that does not arrive (to join, or in a collective) before the launch fails;
    `cpu=True` uses CPU processes even on a GPU machine.
    """
    if not callable(fn):
        raise TypeError(f"launch() needs a function to run, got the {type(fn).__name__} {fn!r:.40}.")
    launch_timeout(timeout)
    if already_launched():
        return _run_in_this_process(fn, args, timeout)
    check_parent_is_clean()
    plan = plan_launch(num_processes, port, cpu)
    if verbose:
        print(plan.describe(), flush=True)  # flushed before the fork, so no child inherits it unprinted
    with launch_folder() as tmp:
        folder = Path(tmp)
        bar = Bar(folder, progress) if progress else None
        try:
            _start_and_watch(plan, (fn, args, folder, plan.threads_per_process, timeout, sys.stdout, sys.stderr),
                             {CHANNEL: tmp} if bar else {}, bar, timeout)
        finally:
            if bar:
                bar.close()
            _replay_main_output(folder)
        return _read_result(folder)


def launch_folder() -> tempfile.TemporaryDirectory:
    """A temp folder named after this process; first remove those left by launches whose process is gone."""
    for old in Path(tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*-*"):
        pid = old.name.removeprefix(TEMP_PREFIX).partition("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return tempfile.TemporaryDirectory(prefix=f"{TEMP_PREFIX}{os.getpid()}-")


def _alive(pid: int) -> bool:
    """True while process `pid` exists (it may belong to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _replay_main_output(tmp: Path) -> None:
    """Print what rank 0 printed, here, after it finished: its lines then always come in the same order."""
    captured = tmp / MAIN_OUTPUT
    if captured.exists():
        sys.stdout.write(captured.read_text())
        sys.stdout.flush()




def _start_and_watch(plan: LaunchPlan, child_args: tuple, extra_env: dict, bar: Bar | None, timeout: float) -> None:
    """Start every process (notebook_launcher for two or more), wait for them, and name the one that failed."""
    n = plan.num_processes
    env = dict(ACCELERATE_USE_CPU="yes" if plan.device == "cpu" else "no", OMP_NUM_THREADS=plan.threads_per_process,
               TOKENIZERS_PARALLELISM="false", TORCHELASTIC_SIGNALS_TO_HANDLE=ELASTIC_SIGNALS,
               PYTORCH_NVML_BASED_CUDA_CHECK="1", **extra_env)  # notebook_launcher's GPU count must not start CUDA
    start = forked_alone(child_args) if n == 1 else through_notebook_launcher(n, plan.port, child_args)
    processes, starter = start_and_watch(start, env, n, bar)
    folder = child_args[2]
    pids = {int(path.stem.removeprefix("pid-rank")): int(path.read_text()) for path in folder.glob("pid-rank*")}
    if starter.error is None and all((folder / f"finished-rank{rank}").exists() for rank in range(n)):
        return
    if not pids and not isinstance(starter.error, Abandoned):
        raise LaunchError(f"The launch failed before any process started: {error_line(starter.error)}")
    statuses = {rank: processes[pid].exitcode if pid in processes else None for rank, pid in pids.items()}
    raise failure(_ended(statuses, starter.error), folder, timeout)


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
        os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per CPU process, as launch() gives its children
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


def _read_result(tmp: Path) -> Any:
    """Rank 0's return value, as pickled by the child."""
    path = tmp / RESULT_FILE
    if not path.exists():
        raise LaunchError("The processes finished but rank 0 left no result.")
    return pickle.loads(path.read_bytes())
