"""The output file: a header saying what made its completions, then one JSON line per completion, appended as it
is produced, so a stopped run can resume; a resume reuses a line only when this run would have made the same one.

What makes a completion, and so must match for a resume (the header's "made_by"): the model (the checkpoint's
resolved folder, or the preset and a digest of what it is built from), its dtype, max_new_tokens and the decoding
(greedy). What does not: the mode, batch size, token budget and process count only schedule the same greedy
decoding (in fp32 they give identical tokens; in bf16 a different batch can round differently, as any rerun can).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterator

from ..files import lock
from ..launcher.launch import is_main_rank
from .results import Completion
from .validate import unique_keys

KIND = "completions"
FORMAT = 1
HEADER_START = b'{"mgpu_lab": '  # every file the kit writes starts so; any other file is not its output
DECODING = "greedy"
TYPES = {"int": int, "str": str, "list[int]": list}  # Completion's field annotations, as JSON gives them back
FIELD_TYPES = {f.name: TYPES[f.type] for f in fields(Completion)}
DAMAGED = "Fix: delete that line (a resume generates it again), or pass a new --output file."


class OutputFileError(ValueError):
    """An output file a run cannot use as it is; the message names the file (and line) and the fix."""


@dataclass(frozen=True)
class OutputFile:
    """An output file checked for a run: this run's settings, the file's, and what to fix before appending."""

    path: str
    settings: dict  # what makes this run's completions, but the dtype (known once a process has loaded the model)
    recorded: dict | None  # the header's "made_by"; None for a new file, whose header rank 0 writes
    keep: int  # bytes of whole lines; beyond them lies a partial last line, dropped before appending
    end_line: bool  # the last record is whole but lacks its newline: one is added before appending
    dropped: int  # partial last lines dropped (0 or 1), for the summary


def made_by(model: str, max_new_tokens: int) -> dict:
    """The settings that make a completion, as the header records them (the dtype is added by rank 0)."""
    return {"model": model, "max_new_tokens": max_new_tokens, "decoding": DECODING}


@contextlib.contextmanager
def claimed(path: str | None, prompts: list[str], settings: dict,
            resume: bool) -> Iterator[tuple[OutputFile | None, dict[int, Completion]]]:
    """Hold `path` for the run's whole length and yield it checked, with the completions a resume reuses."""
    if path is None:
        yield None, {}
        return
    with held(Path(path)):
        yield read_output(Path(path), prompts, settings, resume)


@contextlib.contextmanager
def held(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` for the block, through a lock file beside it; a second run is refused at once.

    The lock is not on the file itself: the run's processes lock the file for each append, and under torchrun
    rank 0 both holds the run and appends. The lock file is removed at the end (a killed run's is reused).
    """
    if not is_main_rank():  # under torchrun, rank 0 holds it for the run
        yield
        return
    lock_path = path.with_name(f".{path.name}.lock")
    while True:
        held_file = open(lock_path, "a")
        if not lock(held_file, wait=False):
            held_file.close()
            raise OutputFileError(f"Output file {path} is being written by another run (it holds {lock_path}). "
                                  "Fix: wait for that run to end, or pass another --output file.")
        if lock_path.exists() and os.path.samestat(os.fstat(held_file.fileno()), lock_path.stat()):
            break
        held_file.close()  # the run before ours removed it as we opened it: take the new one
    try:
        yield
    finally:
        lock_path.unlink(missing_ok=True)
        held_file.close()


def read_output(path: Path, prompts: list[str], settings: dict, resume: bool) -> tuple[OutputFile, dict]:
    """Read and check the whole file, changing nothing: the plan for rank 0 and the completions to reuse."""
    data = path.read_bytes() if path.exists() else b""
    if not data:
        return OutputFile(str(path), settings, None, 0, False, 0), {}
    if not data.startswith(HEADER_START):  # said first: --resume would not help
        raise OutputFileError(f"{path} is not an output file of this kit (it does not start with its header), so "
                              "the run leaves it untouched. Fix: pass a new --output file.")
    if not resume:
        raise OutputFileError(f"Output file {path} already holds completions. Fix: pass --resume (resume=True) to "
                              "generate only the prompts it lacks, or choose another file.")
    *lines, tail = data.split(b"\n")  # tail: what follows the last newline (b"" when the file ends in one)
    partial = bool(tail) and not _is_json(tail)  # a run stopped in the middle of a line; a whole record is kept
    lines += [tail] if tail and not partial else []
    if not lines:  # nothing but a partial header: a new file
        return OutputFile(str(path), settings, None, 0, False, 1), {}
    recorded = _header(path, lines[0])
    check_settings(path, recorded, settings)
    found = _completions(path, lines[1:], prompts, recorded)
    keep = len(data) - len(tail) if partial else len(data)
    return OutputFile(str(path), settings, recorded, keep, bool(tail) and not partial, int(partial)), found


def _is_json(line: bytes) -> bool:
    """True when `line` parses as JSON (a truncated record never does)."""
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def _record(path: Path, number: int, line: bytes) -> dict:
    """One line as a JSON object (no key twice), or an error naming the file and line."""
    try:
        record = json.loads(line, object_pairs_hook=unique_keys)
    except ValueError as error:
        raise OutputFileError(f"{path}, line {number}: not a JSON line ({error}). {DAMAGED}") from None
    if not isinstance(record, dict):
        raise OutputFileError(f"{path}, line {number}: not a JSON object. {DAMAGED}")
    return record


def _header(path: Path, line: bytes) -> dict:
    """The settings the header says made the file's completions."""
    header = _record(path, 1, line)
    if header.get("mgpu_lab") != KIND or header.get("format") != FORMAT or not isinstance(header.get("made_by"), dict):
        raise OutputFileError(f"{path}, line 1: not the header of a format-{FORMAT} output file of this kit. "
                              "Fix: pass a new --output file.")
    return header["made_by"]


def check_settings(path: str | Path, recorded: dict, settings: dict) -> None:
    """Refuse a resume whose settings (those not None) differ from the ones that made the file, naming them."""
    differ = [f"{key} {recorded.get(key)!r}{_as_option(key, recorded.get(key))} (this run: {value!r})"
              for key, value in settings.items() if value is not None and recorded.get(key) != value]
    if differ:
        raise OutputFileError(f"{path} was made with {'; '.join(differ)}, and a resume reuses only completions "
                              "these settings make. Fix: resume with the file's settings, or pass a new --output file.")


def _as_option(key: str, value: object) -> str:
    """For a preset's recorded identity (tiny-<digest>), the --model value that names it; else nothing."""
    if key != "model" or not isinstance(value, str):
        return ""
    preset = re.fullmatch(r"(tiny|small|shape:.+)-[0-9a-f]{12}", value)
    return f", that is --model {preset[1]}" if preset else ""


def _completions(path: Path, lines: list[bytes], prompts: list[str], recorded: dict) -> dict[int, Completion]:
    """Every completion line checked (fields, types, index, prompt, no repeat, its header's length), by index."""
    found: dict[int, Completion] = {}
    for number, line in enumerate(lines, 2):
        completion = _completion(path, number, _record(path, number, line))
        index, where = completion.index, f"{path}, line {number}"
        _check_length(where, completion, recorded.get("max_new_tokens"))
        if index >= len(prompts) or prompts[index] != completion.prompt:
            raise OutputFileError(f"{where} holds prompt {index} of another prompt list ({completion.prompt!r:.40}). "
                                  "Fix: resume with the same prompts, or pass a new --output file.")
        if index in found:
            raise OutputFileError(f"{where} repeats the completion of prompt {index}. {DAMAGED}")
        found[index] = completion
    return found


def _check_length(where: str, completion: Completion, max_new_tokens: object) -> None:
    """Refuse a completion its header's max_new_tokens cannot have made (a header edited by hand, lines pasted in)."""
    length = completion.generated_tokens
    cut = completion.stop_reason == "length"
    if (completion.stop_reason not in ("eos", "length") or length != len(completion.token_ids)
            or not isinstance(max_new_tokens, int) or length > max_new_tokens or cut and length != max_new_tokens):
        raise OutputFileError(f"{where} holds {length} generated token(s) stopped by {completion.stop_reason!r}, "
                              f"which the header's max_new_tokens {max_new_tokens!r} does not make (was the header "
                              "edited?). Fix: pass a new --output file.")


def _completion(path: Path, number: int, record: dict) -> Completion:
    """A record with exactly Completion's fields, each of its type, as a Completion."""
    missing, extra = sorted(FIELD_TYPES.keys() - record.keys()), sorted(record.keys() - FIELD_TYPES.keys())
    wrong = [k for k, kind in FIELD_TYPES.items()
             if k in record and (not isinstance(record[k], kind) or isinstance(record[k], bool))]
    if missing or extra or wrong or record["index"] < 0:
        what = "; ".join(f"{label}: {', '.join(keys)}" for label, keys in
                         (("missing", missing), ("unexpected", extra), ("wrong type", wrong)) if keys)
        raise OutputFileError(f"{path}, line {number}: not a completion ({what or 'a negative index'}). {DAMAGED}")
    return Completion(**record)


def begin_output(output: OutputFile, dtype: str, owner: bool) -> None:
    """In each process once the model is loaded: check the file's dtype; rank 0 then makes the file ready to append."""
    if output.recorded is not None:
        check_settings(output.path, output.recorded, {"dtype": dtype})
    if not owner:
        return
    try:
        if output.recorded is None:
            header = {"mgpu_lab": KIND, "format": FORMAT, "made_by": {**output.settings, "dtype": dtype}}
            Path(output.path).write_text(json.dumps(header) + "\n", encoding="utf-8")
            return
        with open(output.path, "r+b") as handle:
            handle.truncate(output.keep)
            if output.end_line:
                handle.seek(0, os.SEEK_END)
                handle.write(b"\n")
    except OSError as error:
        raise OSError(error.errno, error.strerror, output.path) from None


def append_completions(path: str | Path, completions: list[Completion]) -> None:
    """Append completions as JSON lines in one locked write, flushed to disk before returning."""
    lines = "".join(json.dumps(asdict(c)) + "\n" for c in completions)
    try:
        with open(path, "a", encoding="utf-8") as handle:
            lock(handle)  # processes append to the same file; whole lines never interleave
            handle.write(lines)
            handle.flush()
    except OSError as error:  # a full disk says only "No space left on device": name the file
        raise OSError(error.errno, error.strerror, str(path)) from None
