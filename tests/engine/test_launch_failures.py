"""launch goes through accelerate's notebook_launcher, leaves the kernel as it found it, and names every failure."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback

import pytest

from mgpu_lab.course.demos import hello
from mgpu_lab.launcher.launch import LaunchError, launch

from test_launch import interrupt_when_ready, leftover_children, sleep_after_saying_ready


def under_notebook_launcher() -> list:
    """Whether accelerate's notebook_launcher is on this process's call stack, gathered from every rank."""
    from accelerate import PartialState
    from accelerate.utils import gather_object

    stack = "".join(traceback.format_stack())
    return gather_object([(PartialState().process_index, "accelerate/launchers.py" in stack)])


@pytest.mark.multiprocess
def test_every_process_runs_under_notebook_launcher():
    assert launch(under_notebook_launcher, num_processes=2, verbose=False) == [(0, True), (1, True)]


@pytest.mark.multiprocess
def test_one_process_is_forked_without_notebook_launcher():
    """notebook_launcher(num_processes=1) would run in the kernel itself; launch forks that one too."""
    assert launch(under_notebook_launcher, num_processes=1, verbose=False) == [(0, False)]


@pytest.mark.multiprocess
def test_two_then_one_then_three_in_one_process():
    assert [len(launch(hello, num_processes=n, verbose=False)) for n in (2, 1, 3)] == [2, 1, 3]


@pytest.mark.multiprocess
def test_no_torch_log_line_and_no_environment_left_behind(capfd):
    before = dict(os.environ)
    launch(hello, num_processes=2)
    with pytest.raises(LaunchError):
        launch(exits_early_on_rank_one, num_processes=2, verbose=False)
    out, err = capfd.readouterr()
    assert err == "" and "Launching training" not in out  # notebook_launcher's own line, and torch elastic's logs
    assert dict(os.environ) == before


def my_handler(signum, frame):
    """A SIGINT handler of the caller's own, which a launch must leave in place."""


@pytest.mark.multiprocess
def test_sigint_handler_is_kept_after_a_launch_and_a_failed_one():
    previous = signal.signal(signal.SIGINT, my_handler)
    try:
        launch(hello, num_processes=2, verbose=False)
        assert signal.getsignal(signal.SIGINT) is my_handler
        with pytest.raises(LaunchError):
            launch(raises_keyboard_interrupt_on_rank_one, num_processes=2, verbose=False)
        assert signal.getsignal(signal.SIGINT) is my_handler
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.multiprocess
def test_sigint_handler_is_kept_after_an_interrupted_launch(tmp_path):
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    threading.Thread(target=interrupt_when_ready, args=(tmp_path, 2), daemon=True).start()
    with pytest.raises(KeyboardInterrupt, match="^interrupted: stopped 2 processes$"):
        launch(sleep_after_saying_ready, (str(tmp_path),), num_processes=2, verbose=False)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert not leftover_children()


def unpicklable_result():
    """Return a lock: it cannot be pickled to come back to the caller."""
    return threading.Lock()


@pytest.mark.multiprocess
def test_a_result_that_cannot_be_sent_back_is_named():
    with pytest.raises(LaunchError) as caught:
        launch(unpicklable_result, num_processes=2, verbose=False)
    assert caught.value.message.startswith("Process 0 raised TypeError: cannot pickle '_thread.lock' object while "
                                           "sending its result back. Fix: return plain data")


def exits_early_on_rank_one() -> None:
    """Rank 1 leaves with os._exit(0) before the gather rank 0 waits in."""
    from accelerate import PartialState
    from accelerate.utils import gather_object

    if PartialState().process_index == 1:
        os._exit(0)
    gather_object([0])


@pytest.mark.multiprocess
def test_a_rank_that_exits_early_is_named_not_the_peer_that_lost_it():
    with pytest.raises(LaunchError) as caught:
        launch(exits_early_on_rank_one, num_processes=2, verbose=False)
    assert caught.value.message.startswith("process 1 exited (code 0) before its function returned, without an error")
    assert not leftover_children()


def exits_early_everywhere() -> None:
    """Every rank leaves with os._exit(0): torch elastic alone would wait for their results for ever."""
    os._exit(0)


@pytest.mark.multiprocess
def test_every_rank_exiting_early_ends_the_launch():
    with pytest.raises(LaunchError) as caught:
        launch(exits_early_everywhere, num_processes=2, verbose=False)
    assert caught.value.message.startswith("process 0 exited (code 0) before its function returned")
    assert not leftover_children()
    assert not [t for t in threading.enumerate() if t.name == "mgpu_lab-launch"]  # the helper thread ended
    assert len(launch(hello, num_processes=2, verbose=False)) == 2


def sleeps_on_rank_one() -> int:
    """Rank 1 never returns; rank 0 returns at once and waits for it when leaving the group (no collective)."""
    from accelerate import PartialState

    if PartialState().process_index == 1:
        time.sleep(3600)
    return 0


@pytest.mark.multiprocess
def test_a_hang_without_a_collective_names_the_missing_process():
    with pytest.raises(LaunchError) as caught:
        launch(sleeps_on_rank_one, num_processes=2, verbose=False, timeout=3)
    assert caught.value.message.startswith("process(es) 1 did not arrive within the 3 s timeout")
    assert not leftover_children()


def raises_keyboard_interrupt_on_rank_one() -> None:
    """Rank 1 raises KeyboardInterrupt itself, which is not an Exception."""
    from accelerate import PartialState

    if PartialState().process_index == 1:
        raise KeyboardInterrupt


def calls_sys_exit() -> None:
    """Every rank calls sys.exit(3)."""
    sys.exit(3)


@pytest.mark.parametrize("fn, message", [
    (raises_keyboard_interrupt_on_rank_one, "Process 1 raised KeyboardInterrupt inside the launched function."),
    (calls_sys_exit, "Process 0 raised SystemExit: 3 inside the launched function."),
])
@pytest.mark.multiprocess
def test_keyboard_interrupt_and_system_exit_from_the_function_are_named(fn, message):
    with pytest.raises(LaunchError) as caught:
        launch(fn, num_processes=2, verbose=False)
    assert caught.value.message.startswith(message)
    assert "Fix: return from the function" in caught.value.message


@pytest.mark.parametrize("kwargs, error, text", [
    (dict(timeout="5"), TypeError, "timeout must be a number, got the str '5'"),
    (dict(timeout=float("nan")), ValueError, "timeout must be a finite number above 0"),
    (dict(timeout=0.001), ValueError, "timeout must be at least 1 s"),
])
def test_launch_checks_its_own_arguments_like_run(kwargs, error, text):
    with pytest.raises(error, match=text):
        launch(hello, num_processes=2, **kwargs)


def test_something_that_is_not_a_function_is_refused():
    with pytest.raises(TypeError, match="launch\\(\\) needs a function to run, got the str 'hello'"):
        launch("hello", num_processes=2)


def test_cli_refuses_a_timeout_too_small_to_work(cli_in_process):
    done = cli_in_process("naive", "--timeout", "0.001")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]  # one line, no C++ frames
    assert "timeout must be at least 1 s" in done.stderr


def free_port() -> int:
    """A port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.multiprocess
def test_a_rank_started_by_hand_that_never_comes_is_one_line():
    env = dict(os.environ, RANK="0", WORLD_SIZE="2", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(free_port()))
    done = subprocess.run([sys.executable, "-m", "mgpu_lab", "naive", "--num-processes", "2", "--timeout", "2",
                           "--quiet"], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: This is rank 0 of 2; rank(s) 1 did not all join within the 2 s timeout. Fix: start every rank with "
        "the same MASTER_ADDR, MASTER_PORT and WORLD_SIZE=2 (or use torchrun), or raise the timeout "
        "(--timeout, timeout=).")
