"""Run a function on N processes (from a notebook, a script or torchrun) and bring rank 0's result back."""

from __future__ import annotations

import ctypes
import datetime
import io
import os
import pickle
import shutil
import signal
import socket
import sys
import tempfile
import traceback
from dataclasses import dataclass
from multiprocessing import connection
from pathlib import Path
from typing import Any, Callable

import torch
from accelerate.state import PartialState
from accelerate.utils import PrepareForLaunch, parse_flag_from_env, patch_environment

from .validate import port as port_number
from .progress import CHANNEL, Bar, Progress

RESULT_FILE = "result.pkl"
MAIN_OUTPUT = "stdout-rank0.txt"
TEMP_PREFIX = "mgpu_lab-"  # then the launching process's PID: a folder whose process is gone is removed
# How long a process waits for its peers (to join, or in a collective) before the launch fails; torch's is 30 min.
DEFAULT_TIMEOUT_S = 300
STOP_GRACE_S = 3  # after SIGTERM, how long a process gets before SIGKILL


class LaunchError(RuntimeError):
    """A launch that could not start or whose processes failed; the message says what to do."""

    def __init__(self, message: str, details: str = ""):
        super().__init__(message + (f"\n\n{details}" if details else ""))
        self.message = message


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


CUDA_IN_PARENT = ("This kernel touched the GPU before the launch, so processes forked from it cannot use it. "
                  "Fix: restart the kernel, import mgpu_lab first, and launch before anything touches the GPU "
                  "(no model.to('cuda'), no torch.cuda calls outside the launched function).")


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
    """Run `fn(*args)` on every process and return what rank 0's call returned.

    `progress` draws one bar over every process (they report through progress.tell); `timeout` is how many
    seconds a process waits for a peer that does not arrive (to join, or in a collective) before the launch fails;
    `cpu=True` uses CPU processes even on a GPU machine.
    """
    if already_launched():
        return _run_in_this_process(fn, args, timeout)
    check_parent_is_clean()
    if timeout <= 0:
        raise LaunchError(f"timeout must be > 0 seconds, got {timeout}.")
    plan = plan_launch(num_processes, port, cpu)
    if verbose:
        print(plan.describe(), flush=True)  # flushed before the fork, so no child inherits it unprinted
    with launch_folder() as tmp:
        folder = Path(tmp)
        bar = Bar(folder, progress) if progress else None
        try:
            processes = _start(plan, (fn, args, folder, plan.threads_per_process, timeout, sys.stdout, sys.stderr),
                               {CHANNEL: tmp} if bar else {})
            _watch(processes, folder, bar, timeout)
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


def _run_in_this_process(fn: Callable[..., Any], args: tuple, timeout: float) -> Any:
    """Under torchrun each rank is already a process: run here, on CPU when there is no GPU."""
    if not count_gpus():
        os.environ.setdefault("ACCELERATE_USE_CPU", "yes")
        os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per CPU process, as launch() gives its children
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    _join_group(timeout)
    result = fn(*args)
    _leave_process_group()
    return result


def _join_group(timeout: float) -> None:
    """Make the process group now, with our timeout, so a peer that never arrives ends the run in bounded time."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # The Accelerator that fn makes reuses this state (and its process group).
        PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"), timeout=datetime.timedelta(seconds=timeout))


def _leave_process_group() -> None:
    """Wait for every rank, then close the process group, so no rank exits while a peer still needs it."""
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def _start(plan: LaunchPlan, child_args: tuple, extra_env: dict) -> list:
    """Fork one process per rank, each told its rank by accelerate's PrepareForLaunch; return them running."""
    n = plan.num_processes
    env = dict(ACCELERATE_USE_CPU="yes" if plan.device == "cpu" else "no",
               OMP_NUM_THREADS=str(plan.threads_per_process), TOKENIZERS_PARALLELISM="false",
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(plan.port), WORLD_SIZE=str(n), NPROC=str(n), NODE_RANK="0",
               **extra_env)
    # One process runs without a process group, as rank 0; several need torch.distributed's environment.
    kind = "NO" if n == 1 else "MULTI_GPU" if plan.device == "cuda" else "MULTI_CPU"
    with patch_environment(**env):
        context = torch.multiprocessing.start_processes(PrepareForLaunch(_child, distributed_type=kind),
                                                        args=child_args, nprocs=n, join=False, start_method="fork")
    return context.processes


def _watch(processes: list, tmp: Path, bar: Bar | None, timeout: float) -> None:
    """Wait for every process, redrawing the bar; on a failure or an interrupt stop them all and say why."""
    try:
        while any(p.exitcode is None for p in processes):
            connection.wait([p.sentinel for p in processes if p.exitcode is None], timeout=0.5)
            if bar:
                bar.refresh()
            if any(p.exitcode not in (None, 0) for p in processes):
                error = _failure(processes, tmp, timeout)
                _stop(processes)
                raise error
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"interrupted: stopped {_stop(processes)} processes") from None


def _stop(processes: list) -> int:
    """SIGTERM every running process, SIGKILL those still there after a grace period; how many were running."""
    running = [p for p in processes if p.exitcode is None]
    for p in running:
        p.terminate()
    for p in running:
        p.join(STOP_GRACE_S)
        if p.exitcode is None:
            p.kill()
            p.join()
    return len(running)


def _die_with_parent() -> None:
    """On Linux, have the kernel SIGKILL this process if its parent dies (a killed notebook or terminal)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def _child(fn: Callable[..., Any], args: tuple, tmp: Path, threads: int, timeout: float, stdout, stderr) -> None:
    """Runs in each forked process: call fn, save rank 0's result and output, record any error for the parent.

    Rank 0's prints are captured and printed by the parent when the launch ends: streamed from a forked process
    into a Jupyter kernel, they could arrive after the kernel's own next line.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches every process; the parent stops them all
    _die_with_parent()
    _no_library_bars()
    rank = int(os.environ.get("RANK", "0"))
    sys.stdout, sys.stderr = io.StringIO() if rank == 0 else stdout, stderr
    torch.set_num_threads(threads)
    try:
        _join_group(timeout)
        result = fn(*args)
    except BaseException as error:
        (tmp / f"error-rank{rank}.txt").write_text(
            f"{type(error).__name__}: {error}\n\n{traceback.format_exc()}"
        )
        raise
    finally:
        if rank == 0:
            (tmp / MAIN_OUTPUT).write_text(sys.stdout.getvalue())
        sys.stderr.flush()
    if rank == 0:
        (tmp / RESULT_FILE).write_bytes(pickle.dumps(result))
    _leave_process_group()


def _no_library_bars() -> None:
    """No transformers progress bar (from_pretrained's) in a child process.

    A forked process cannot draw in a notebook, and ipykernel logs every attempt; the kit's own bar is the parent's.
    """
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read by transformers when a child imports it
    if "transformers" in sys.modules:  # imported before the fork: switch it off there too
        sys.modules["transformers"].utils.logging.disable_progress_bar()


def _failure(processes: list, tmp: Path, timeout: float) -> LaunchError:
    """Why the launch failed: a process killed by a signal, else the first error a process recorded."""
    for rank, p in enumerate(processes):
        if p.exitcode is not None and p.exitcode < 0:
            return LaunchError(_killed(rank, signal.Signals(-p.exitcode).name))
    # The first rank to fail holds the cause; the others fail after it, when their peer disappears.
    reports = sorted(tmp.glob("error-rank*.txt"), key=lambda path: path.stat().st_mtime_ns)
    if not reports:
        codes = {rank: p.exitcode for rank, p in enumerate(processes) if p.exitcode}
        return LaunchError(f"The launch failed: process(es) exited with code(s) {codes} without an error message.")
    message, _, child_traceback = reports[0].read_text().partition("\n\n")
    if "timed out" in message.lower() or "timeout" in message.lower():
        return LaunchError(_not_arrived(processes, tmp, timeout), child_traceback)
    if "CUDA error: initialization error" in message:
        return LaunchError(f"The launched processes could not start CUDA. {CUDA_IN_PARENT}", child_traceback)
    # When several ranks raised the same error, name the lowest one, so the message is the same on every run.
    rank = min(int(path.stem.removeprefix("error-rank")) for path in reports
               if path.read_text().partition("\n\n")[0] == message)
    return LaunchError(f"Process {rank} raised {message}", f"(traceback in that process)\n{child_traceback}")


def _killed(rank: int, name: str) -> str:
    """One line for a process that a signal ended."""
    hint = (" - on Linux this is usually the out-of-memory killer: lower the batch size or the number of processes"
            if name == "SIGKILL" else "")
    return f"process {rank} was killed by {name}{hint}."


def _not_arrived(processes: list, tmp: Path, timeout: float) -> str:
    """One line naming the processes that left their peers waiting longer than `timeout`."""
    late = [str(rank) for rank, p in enumerate(processes)
            if p.exitcode is None and not (tmp / f"error-rank{rank}.txt").exists()]
    who = f"process(es) {', '.join(late)}" if late else "a process"
    return (f"{who} did not arrive within the {timeout:g} s timeout (to join the group, or in a collective), so the "
            "others gave up. Fix: if it hangs, look for a rank that skips a collective (gather, barrier); if it is "
            "only slower (a long, uneven share), raise the timeout (--timeout, timeout=).")


def _read_result(tmp: Path) -> Any:
    """Rank 0's return value, as pickled by the child."""
    path = tmp / RESULT_FILE
    if not path.exists():
        raise LaunchError("The processes finished but rank 0 left no result.")
    return pickle.loads(path.read_bytes())
