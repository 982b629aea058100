"""Checks on numbers a user passes in (counts, seconds, ports): each names the input and the fix."""

from __future__ import annotations

import math
import numbers

MIN_TIMEOUT_S = 1  # below this a launch's processes cannot even join their group in time


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
    return seconds
