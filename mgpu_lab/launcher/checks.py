"""Checks on numbers a user passes in (counts, seconds, ports): each names the input and the fix."""

from __future__ import annotations

import math
import numbers
import os

MIN_TIMEOUT_S = 1  # below this a launch's processes cannot even join their group in time
MAX_TIMEOUT_S = 7 * 24 * 3600  # a week: torch's process group failed in C++ on 1e10 s, and 1e300 overflowed
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def whole_number(name: str, value: object, minimum: int = 1) -> int:
    """An int (not a bool, float or str) that is at least `minimum`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a whole number (int), got the {type(value).__name__} {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    return int(value)


def positive_number(name: str, value: object) -> float:
    """A finite number above zero (not a bool, a str, NaN or infinity)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got the {type(value).__name__} {value!r}.")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number above 0, got {value}.")
    return float(value)


def port(name: str, value: object) -> int:
    """A TCP port number, 1 to 65535."""
    value = whole_number(name, value)
    if value > 65535:
        raise ValueError(f"{name} must be a TCP port from 1 to 65535, got {value}.")
    return value


def launch_timeout(value: object) -> float:
    """A launch's timeout: a number of seconds long enough for the processes to start and join their group."""
    seconds = positive_number("timeout", value)
    if seconds < MIN_TIMEOUT_S:
        raise ValueError(f"timeout must be at least {MIN_TIMEOUT_S} s (the processes need about that long to start "
                         f"and join their group), got {value}. Fix: leave it out (300 s) or pass a larger one.")
    if seconds > MAX_TIMEOUT_S:
        raise ValueError(f"timeout must be at most {MAX_TIMEOUT_S} s (a week), got {value:g}. Fix: pass a smaller "
                         "one: it bounds how long a process waits for a peer, not how long the run may take.")
    return seconds


def torchrun_env(num_processes: int | tuple[int, ...] | None, environ: dict | None = None) -> None:
    """Refuse torchrun variables that are partial, inconsistent, left over in a shell, or not the asked-for count."""
    environ = os.environ if environ is None else environ
    present = [v for v in TORCHRUN_VARIABLES if v in environ]
    if not present:
        return
    unset = (f"Fix: unset {' '.join(TORCHRUN_VARIABLES)} (left over from an earlier torchrun?), "
             "or start under torchrun.")
    if len(present) < len(TORCHRUN_VARIABLES):
        missing = [v for v in TORCHRUN_VARIABLES if v not in environ]
        raise ValueError(f"Only some torchrun variables are set ({', '.join(present)}; missing "
                         f"{', '.join(missing)}). {unset}")
    rank, world, local = (_env_int(environ, v) for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    port("MASTER_PORT", _env_int(environ, "MASTER_PORT"))
    if world < 1 or not 0 <= rank < world or not 0 <= local <= rank:
        raise ValueError(f"The torchrun variables disagree: RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local} "
                         f"(need 0 <= LOCAL_RANK <= RANK < WORLD_SIZE). {unset}")
    asked = (num_processes,) if isinstance(num_processes, int) else num_processes
    if asked is None and "TORCHELASTIC_RUN_ID" not in environ:
        raise ValueError(f"RANK, WORLD_SIZE and MASTER_* are set (WORLD_SIZE={world}) but no torchrun started this "
                         f"process, so it would wait for the other ranks for ever. {unset} "
                         f"Or, if you start every rank yourself, pass --num-processes {world} (num_processes={world}).")
    if asked is not None and tuple(asked) != (world,):
        raise ValueError(f"Under torchrun (or inside a launched function) the process count is fixed by "
                         f"WORLD_SIZE={world}, but {', '.join(map(str, asked))} process(es) were asked for. "
                         f"Fix: pass --num-processes {world} (num_processes={world}), or leave it out.")


def _env_int(environ: dict, name: str) -> int:
    """An environment variable that must hold a whole number."""
    try:
        return int(environ[name])
    except ValueError:
        raise ValueError(f"{name}={environ[name]!r} is not a whole number. "
                         "Fix: unset it, or start under torchrun.") from None
