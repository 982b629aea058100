"""Checks on what a user passes in, made before any process starts: each names the input and the fix."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

# the number checks live with the launcher, which needs them too; the rest of the kit finds them here
from ..launcher.checks import MIN_TIMEOUT_S, launch_timeout, port, positive_number, whole_number  # noqa: F401

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


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
    out_folder(path.parent, f"the folder of {name}")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{name} {path} cannot be written (no permission). Fix: pass a file you can write to.")
    return path


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
    return path


def unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object's pairs as a dict, refusing a key given twice (json.loads would keep the last silently)."""
    keys = [key for key, _ in pairs]
    twice = sorted({key for key in keys if keys.count(key) > 1})
    if twice:
        raise ValueError(f"the key(s) {', '.join(map(repr, twice))} appear more than once")
    return dict(pairs)


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
                         f"Or, if you start every rank yourself, pass --num-processes {world}.")
    if asked is not None and tuple(asked) != (world,):
        raise ValueError(f"Under torchrun the process count is fixed by WORLD_SIZE={world}, but "
                         f"{', '.join(map(str, asked))} process(es) were asked for. "
                         f"Fix: pass --num-processes {world}, or leave it out.")


def _env_int(environ: dict, name: str) -> int:
    """An environment variable that must hold a whole number."""
    try:
        return int(environ[name])
    except ValueError:
        raise ValueError(f"{name}={environ[name]!r} is not a whole number. "
                         "Fix: unset it, or start under torchrun.") from None
