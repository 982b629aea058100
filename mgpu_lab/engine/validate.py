"""Checks on what a user passes in, made before any process starts: each names the input and the fix."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from ..paths import cache_dir
from ..launcher.checks import (MIN_TIMEOUT_S, TORCHRUN_VARIABLES, launch_timeout, port, positive_number,  # noqa: F401
                               torchrun_env, whole_number)



def prompt_list(prompts: object) -> tuple[str, ...]:
    """A list or tuple of non-empty strings, as a tuple; anything else is a TypeError/ValueError naming it."""
    if not isinstance(prompts, (list, tuple)):
        hint = " Fix: wrap one prompt in a list: ['Hello']." if isinstance(prompts, str) else ""
        raise TypeError(f"prompts must be a list of strings, got a {type(prompts).__name__}.{hint}")
    for number, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise TypeError(f"prompts[{number}] is a {type(prompt).__name__} ({prompt!r:.40}), not a str. "
                            "Fix: pass text (decode bytes, drop None).")
        if not prompt.strip():
            raise ValueError(f"prompts[{number}] is empty. Fix: remove it, or give it some text.")
    return tuple(prompts)


def out_folder(path: str | Path, name: str = "--out") -> Path:
    """Create `path` as a folder and prove a file can be written in it, before any work is done."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{name} {path} is a file, not a folder. Fix: pass a folder (it is created if missing).")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise ValueError(f"{name} {path} is not a writable folder ({error.strerror}). "
                         "Fix: pass a folder you can write to.") from None
    return path


def preset_cache() -> Path:
    """The folder presets are built into, created if missing and proven writable; else one error naming the fix."""
    try:
        return out_folder(cache_dir(), "the preset cache")
    except ValueError as error:
        raise ValueError(f"{str(error).partition(' Fix: ')[0]} Fix: set MGPU_LAB_CACHE to a folder you can write "
                         "to, or unset it (then ~/.cache/mgpu_lab).") from None


def output_file(path: object, name: str = "output") -> Path:
    """A file path (not a folder) that can be written, in a folder that is created if missing."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a file path (str or Path), got the {type(path).__name__} {path!r}.")
    if not str(path).strip():
        raise ValueError(f"{name} is an empty file name. Fix: pass a file such as completions.jsonl, or None.")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{name} {path} is a folder. Fix: pass a file name such as {path / 'completions.jsonl'}.")
    if is_link_loop(path) or path.exists() and not path.is_file():
        what = "a loop of symbolic links" if is_link_loop(path) else "not a regular file (a device, a pipe)"
        raise ValueError(f"{name} {path} is {what}, which cannot hold completions to resume. "
                         "Fix: pass a file such as completions.jsonl.")
    if path.exists() and is_stream(path):  # named before its folder (/dev/fd is no folder to write in)
        raise _stream_error(name, path)
    out_folder(path.parent, f"the folder of {name}")
    if is_stream(path):
        raise _stream_error(name, path)
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{name} {path} cannot be written (no permission). Fix: pass a file you can write to.")
    return path


def _stream_error(name: str, path: Path) -> ValueError:
    """The error for an output file that is a standard stream or a device."""
    return ValueError(f"{name} {path} is standard input, output or error, or a device, which cannot hold "
                      "completions to resume. Fix: pass a file such as completions.jsonl.")


def is_stream(path: Path) -> bool:
    """True for a path under /dev or /proc (/dev/stdout, /proc/self/fd/1), or one that is the file behind standard
    input, output or error: when they are redirected to a file, /dev/stdout is that regular file."""
    if Path(os.path.abspath(path)).parts[1:2] in (("dev",), ("proc",)):
        return True
    try:
        target = os.stat(path)
    except OSError:
        return False
    return any(os.path.samestat(target, os.fstat(fd)) for fd in (0, 1, 2) if _is_open(fd))


def _is_open(fd: int) -> bool:
    """True when file descriptor `fd` is open in this process."""
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def is_link_loop(path: Path) -> bool:
    """True when `path` is a loop of symbolic links (Path.exists() only says False, as for a missing file)."""
    try:
        os.stat(path)
    except OSError as error:
        return error.errno == errno.ELOOP
    return False


def image_path(path: str | Path, name: str = "--plot") -> Path:
    """A file name with a format matplotlib can save, in a folder that can be written to."""
    from matplotlib.backend_bases import FigureCanvasBase

    path = Path(path)
    formats = sorted(FigureCanvasBase.get_supported_filetypes())
    if path.suffix.lower().removeprefix(".") not in formats:
        raise ValueError(f"{name} {path} does not end in a known image format. "
                         f"Fix: end it in one of .{', .'.join(formats)} (e.g. scaling.png).")
    if path.is_dir():
        raise ValueError(f"{name} {path} is a folder. Fix: pass a file name such as {path / 'scaling.png'}.")
    out_folder(path.parent, f"the folder of {name}")
    if is_stream(path):
        raise ValueError(f"{name} {path} is standard input, output or error, or a device. "
                         "Fix: pass a file name such as scaling.png.")
    return path


def unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object's pairs as a dict, refusing a key given twice (json.loads would keep the last silently)."""
    keys = [key for key, _ in pairs]
    twice = sorted({key for key in keys if keys.count(key) > 1})
    if twice:
        raise ValueError(f"the key(s) {', '.join(map(repr, twice))} appear more than once")
    return dict(pairs)
