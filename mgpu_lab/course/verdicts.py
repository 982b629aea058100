"""How an exercise check answers the learner: one line, ✓ or a hint, and never a traceback from their code."""

from __future__ import annotations

from typing import Any, Callable

from ..launcher.launch import LaunchError


def verdict(ok: bool, success: str, hint: str) -> bool:
    """Print a one-line verdict for the learner and return it."""
    print(f"✓ {success}" if ok else f"✗ not yet: {hint}")
    return ok


def attempt(fn: Callable, *args, **kwargs) -> tuple[Any, str | None]:
    """Call the learner's function; an exception becomes a hint instead of a traceback."""
    try:
        return fn(*args, **kwargs), None
    except LaunchError as error:
        return None, error.message
    except Exception as error:  # the learner's code may raise anything: report it, do not crash the lesson
        return None, f"your function raised {type(error).__name__}: {error}"
