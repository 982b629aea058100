"""The launcher against a hostile caller (issue 31): wrong arguments, torchrun leftovers, a launch inside a launch,
two launches at once, and functions that fork. Each case says what happened before."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from mgpu_lab.course.demos import hello
from mgpu_lab.engine.runner import run
from mgpu_lab.launcher.bar import Progress
from mgpu_lab.launcher.checks import MAX_TIMEOUT_S
from mgpu_lab.launcher.launch import LaunchError, launch

pytestmark = pytest.mark.multiprocess

TORCHRUN = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29517"}
LAUNCH_STATE = ("ACCELERATE_USE_CPU", "OMP_NUM_THREADS", "MASTER_PORT", "TORCHELASTIC_SIGNALS_TO_HANDLE")


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-1, ValueError), ("2", TypeError), (2.5, TypeError),
                                        (True, TypeError)])
def test_a_bad_process_count_is_a_type_or_value_error(bad, error):
    # Before: LaunchError (a RuntimeError), where the README promises TypeError/ValueError for API mistakes.
    with pytest.raises(error, match="num_processes must be"):
        launch(hello, num_processes=bad)


@pytest.mark.parametrize("seconds", [1e10, 1e300])
def test_a_timeout_beyond_a_week_is_refused_at_once(seconds):
    # Before: 1e10 failed in 0.1 s with 34 lines of C++ frames and "raise the timeout"; 1e300 an OverflowError.
    with pytest.raises(ValueError, match=f"timeout must be at most {MAX_TIMEOUT_S} s \\(a week\\)"):
        launch(hello, num_processes=2, timeout=seconds)


def test_the_longest_timeout_allowed_works():
    assert len(launch(hello, num_processes=2, verbose=False, timeout=MAX_TIMEOUT_S)) == 2


def test_cli_refuses_a_huge_timeout_in_one_line():
    done = subprocess.run([sys.executable, "-m", "mgpu_lab", "naive", "--timeout", "1e10"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "at most 604800 s" in done.stderr


def test_torchrun_variables_left_in_the_shell_are_refused_at_once(monkeypatch):
    # Before: launch() waited the whole timeout, then said rank 1 did not join; run() refused the same shell at once.
    for name, value in TORCHRUN.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match="no torchrun started this process"):
        launch(hello, timeout=600)


def test_progress_true_is_refused_with_what_to_pass_and_false_means_no_bar():
    # Before: AttributeError: 'bool' object has no attribute 'done'.
    with pytest.raises(TypeError, match="progress must be a Progress .* Fix: pass progress=Progress\\(total=N\\)"):
        launch(hello, num_processes=2, progress=True)
    assert len(launch(hello, num_processes=2, verbose=False, progress=False)) == 2


def nested(num_processes):
    """A launched function that launches again."""
    return launch(hello, num_processes=num_processes, verbose=False)


def test_a_launch_inside_a_launched_function_asking_other_counts_is_refused():
    # Before: asked 3 inside a 2-process launch, it ran on 2, silently.
    with pytest.raises(LaunchError, match="raised ValueError: Under torchrun \\(or inside a launched function\\) the "
                                          "process count is fixed by WORLD_SIZE=2, but 3 process\\(es\\) were asked"):
        launch(nested, (3,), num_processes=2, verbose=False)
    with pytest.raises(LaunchError, match="already runs inside a launch, on its one process, but num_processes=2"):
        launch(nested, (2,), num_processes=1, verbose=False)
    assert len(launch(nested, (None,), num_processes=2, verbose=False)) == 2  # the processes that exist: as run()


UNDER_TORCHRUN = """
from mgpu_lab.course.demos import hello
from mgpu_lab.launcher.launch import launch
try:
    launch(hello, num_processes=4)
except ValueError as error:
    print("refused:", error)
"""


def test_a_launch_under_torchrun_asking_another_count_is_refused(tmp_path):
    # Before: asked 4 under a 2-process torchrun, it ran on 2, rc 0.
    script = tmp_path / "four.py"
    script.write_text(UNDER_TORCHRUN)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script)],
                          capture_output=True, text=True, timeout=300)
    assert done.stdout.count("refused: Under torchrun (or inside a launched function) the process count is fixed "
                             "by WORLD_SIZE=2, but 4 process(es) were asked for.") == 2, done.stdout + done.stderr


def wait_for(path: str) -> str:
    """Say this launch runs, then wait until `path` exists."""
    Path(path + ".running").touch()
    while not Path(path).exists():
        time.sleep(0.05)
    return "done"


def test_a_second_launch_while_one_runs_is_refused_naming_it_and_nothing_is_left_changed(tmp_path):
    # Before: two launches from two threads both ran, and left sys.stdout replaced for good (every later print
    # vanished) and ACCELERATE_USE_CPU, OMP_NUM_THREADS, MASTER_PORT, TORCHELASTIC_SIGNALS_TO_HANDLE set.
    stdout, environ = sys.stdout, {name: os.environ.get(name) for name in LAUNCH_STATE}
    gate, results = str(tmp_path / "go"), []
    first = threading.Thread(target=lambda: results.append(launch(wait_for, (gate,), num_processes=2,
                                                                  verbose=False)), name="first")
    first.start()
    while not Path(gate + ".running").exists():
        time.sleep(0.05)
    with pytest.raises(LaunchError, match="Another launch is running in this process \\(launch\\(wait_for\\) from "
                                          "thread 'first', started [0-9:]{8}\\).*Fix: wait for it"):
        launch(hello, num_processes=2, verbose=False)
    with pytest.raises(LaunchError, match="Another launch is running in this process"):  # run() names it too
        run("batched", "tiny", ["one prompt"], num_processes=2, max_new_tokens=1, verbose=False)
    Path(gate).touch()
    first.join(timeout=120)
    assert results == ["done"] and sys.stdout is stdout
    assert {name: os.environ.get(name) for name in LAUNCH_STATE} == environ
    assert len(launch(hello, num_processes=2, verbose=False)) == 2


def start_sleeper(folder: str, new_session: bool) -> int:
    """Start a long `sleep` the function does not wait for, note its PID, and return."""
    from accelerate import PartialState

    sleeper = subprocess.Popen(["sleep", "300"], start_new_session=new_session)
    Path(folder, f"sleeper{PartialState().process_index}").write_text(str(sleeper.pid))
    return sleeper.pid


def fork_and_return(folder: str) -> int:
    """Fork; the copy returns from the function too, as a careless worker would."""
    pid = os.fork()
    if pid == 0:
        Path(folder, f"copy{os.getpid()}").touch()
        return -1  # the copy leaves through the kit's code: it must not act as the rank
    return pid


def gone(pid: int) -> bool:
    """True when `pid` no longer runs (a zombie is gone too)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("new_session", [False, True])
def test_what_a_function_starts_and_leaves_is_ended_with_it(tmp_path, new_session):
    # Before: a subprocess that outlived the function held the launch past its timeout (timeout=5 returned after
    # 150 s, when the subprocess ended).
    result = subprocess.run([sys.executable, "-c", f"""
from mgpu_lab.launcher.launch import launch
from tests.engine.test_launch_hostile import start_sleeper
print(launch(start_sleeper, ({str(tmp_path)!r}, {new_session}), num_processes=2, verbose=False, timeout=5))
"""], capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2])  # bounded: it used to take 150 s
    assert result.returncode == 0, result.stderr
    sleepers = [int(path.read_text()) for path in tmp_path.glob("sleeper*")]
    assert len(sleepers) == 2 and all(gone(pid) for pid in sleepers)


def test_a_forked_copy_that_returns_from_the_function_neither_hangs_nor_stays(tmp_path):
    # Before: the copy went on as if it were the rank, deadlocked in the group's last barrier, and was orphaned.
    pid = launch(fork_and_return, (str(tmp_path),), num_processes=2, verbose=False, timeout=30)
    copies = [int(path.name.removeprefix("copy")) for path in tmp_path.glob("copy*")]
    assert len(copies) == 2 and pid in copies and all(gone(copy) for copy in copies)


def start_sleeper_then_wait(folder: str) -> None:
    """Start a `sleep` in its own group, say so, and wait to be stopped."""
    start_sleeper(folder, True)
    time.sleep(3600)


def test_ctrl_c_ends_what_the_function_started_too(tmp_path):
    # Before: Ctrl-C waited for the grandchild to end.
    def interrupt_when_both_started():
        while len(list(tmp_path.glob("sleeper*"))) < 2:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_when_both_started, daemon=True).start()
    with pytest.raises(KeyboardInterrupt, match="^interrupted: stopped 2 processes$"):
        launch(start_sleeper_then_wait, (str(tmp_path),), num_processes=2, verbose=False)
    sleepers = [int(path.read_text()) for path in tmp_path.glob("sleeper*")]
    assert psutil.wait_procs([psutil.Process(p) for p in sleepers if not gone(p)], timeout=5)[1] == []


def _exit_with_three() -> None:
    os._exit(3)


def test_the_watch_never_reaps_a_process_torch_waits_for():
    """The launch's watch sees a rank has exited without taking its exit status: torch's thread must read it.

    When the watch reaped it (process.exitcode calls waitpid), torch's own waitpid raced it, read no status and
    failed a launch whose every process had succeeded (1 launch in about 100, under load).
    """
    import multiprocessing

    from mgpu_lab.launcher.processes import _end_groups_of_ended, has_exited

    process = multiprocessing.get_context("fork").Process(target=_exit_with_three)
    process.start()
    deadline = time.monotonic() + 30
    while not has_exited(process):
        assert time.monotonic() < deadline, "has_exited never saw the process exit"
        time.sleep(0.01)
    _end_groups_of_ended({process.pid: process})
    assert os.waitpid(process.pid, 0) == (process.pid, 3 << 8)  # its status is still there for its owner
