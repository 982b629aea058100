"""The prompts the lessons run: the article's ten famous first lines x 10, or a learner's own file."""

from __future__ import annotations

import csv
import errno
import io
import itertools
import json
import math
import os
import random
import sys
from pathlib import Path

from ..paths import PROMPTS
from .validate import unique_keys

FIRST_LINES = [
    "The King is dead. Long live the Queen.",
    "Once there were four children whose names were Peter, Susan, Edmund, and Lucy.",
    "The story so far: in the beginning, the universe was created.",
    "It was a bright cold day in April, and the clocks were striking thirteen.",
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
    "must be in want of a wife.",
    "The sweat wis lashing oafay Sick Boy; he wis trembling.",
    "124 was spiteful. Full of Baby's venom.",
    "As Gregor Samsa awoke one morning from uneasy dreams he found himself transformed in his bed "
    "into a gigantic insect.",
    "I write this sitting in the kitchen sink.",
    "We were somewhere around Barstow on the edge of the desert when the drugs began to take hold.",
]


VARIED = PROMPTS / "varied.txt"


TEXT_SUFFIXES = ("", ".txt", ".text", ".prompts")
# The most a prompt file (or standard input) may hold: every process keeps all the prompts and their token ids,
# and `yes | ... --prompts -` must end in an error, not fill the memory. 64 MiB is ~16M tokens, far past any run.
MAX_BYTES = 64 * 2**20


class PromptFileError(ValueError):
    """A prompt file that cannot be used; the message names the file and the fix."""


def default_prompts(repeat: int = 10) -> list[str]:
    """The article's workload: ten first lines of novels, repeated `repeat` times (100 prompts)."""
    return FIRST_LINES * repeat


def build_varied(count: int = 200, seed: int = 0, shortest: int = 3, longest: int = 500) -> list[str]:
    """Prompts of very different lengths: runs of the first lines' words, log-uniform from 3 to 500 words."""
    rng = random.Random(seed)
    words = " ".join(FIRST_LINES).split()
    prompts = []
    for _ in range(count):
        length = round(math.exp(rng.uniform(math.log(shortest), math.log(longest))))
        start = rng.randrange(len(words))
        prompts.append(" ".join(itertools.islice(itertools.cycle(words), start, start + length)))
    return prompts


def varied_prompts() -> list[str]:
    """The varied prompt set committed in assets/prompts/varied.txt (made by build_varied)."""
    return load_prompts(VARIED)[0]


def load_prompts(path: str | Path) -> tuple[list[str], int]:
    """Prompts from a .txt, .jsonl or .csv file ("-": standard input, a line each), and how many empty ones it had."""
    suffix = "" if str(path) == "-" else Path(path).suffix.lower()
    if suffix not in (*TEXT_SUFFIXES, ".jsonl", ".csv"):
        raise PromptFileError(f"Prompt file {path} has an unknown type ({suffix}). Fix: use a .txt file (one "
                              'prompt a line), a .jsonl file (a "prompt" field a line) or a .csv file '
                              '(a "prompt" column).')
    lines = _read_lines(path)
    if suffix == ".csv":
        lines = _csv_prompts(Path(path), lines)
    elif suffix == ".jsonl":
        lines = [_jsonl_prompt(Path(path), number, line) if line.strip() else ""
                 for number, line in enumerate(lines, 1)]
    prompts = [p for p in lines if p.strip()]
    if not prompts:
        raise PromptFileError(f"Prompt file {path} holds no prompts (it is empty or blank).")
    return prompts, len(lines) - len(prompts)


def _read_lines(path: str | Path) -> list[str]:
    """The lines of a UTF-8 file (standard input for "-"): BOM dropped, split on \\n, \\r\\n and \\r only."""
    if str(path) == "-":
        data, path = _read_stdin(), "<standard input>"
    else:
        data = _read_bytes(Path(path))
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise PromptFileError(f"Prompt file {path} is UTF-16 text. Fix: save it as UTF-8.")
    if b"\0" in data:
        raise PromptFileError(f"Prompt file {path} is not a text file (byte {data.index(0)} is NUL: binary data). "
                              "Fix: pass a .txt, .jsonl or .csv file.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise PromptFileError(
            f"Prompt file {path} is not UTF-8 text (byte {error.start}). Fix: save it as UTF-8.") from None
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return lines[:-1] if lines[-1] == "" else lines


def _read_stdin() -> bytes:
    """Standard input's bytes, up to MAX_BYTES; closed standard input is named."""
    if sys.stdin is None or sys.stdin.closed:
        raise PromptFileError("--prompts - reads standard input, but it is closed. "
                              "Fix: pipe the prompts in (`... --prompts - < my.txt`), or pass --prompts my.txt.")
    return _bounded(sys.stdin.buffer, "<standard input>")


def _bounded(handle, name: object) -> bytes:
    """What `handle` holds, refused past MAX_BYTES (an endless stream, a huge file) without reading it all."""
    data = handle.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise PromptFileError(f"Prompt file {name} holds more than {MAX_BYTES // 2**20} MiB (endless input?). "
                              "Fix: pass a smaller prompt file, or split the prompts over several runs.")
    return data


def _read_bytes(path: Path) -> bytes:
    """A file's bytes, or an error that says why it cannot be read: missing, a folder, a link loop, not allowed."""
    try:
        with open(path, "rb") as handle:
            return _bounded(handle, path)
    except IsADirectoryError:
        raise PromptFileError(f"Prompt file {path} is a folder, not a file. Fix: pass a file inside it.") from None
    except FileNotFoundError:
        link = f" (a link to {os.readlink(path)}, which is missing)" if path.is_symlink() else ""
        raise PromptFileError(f"Prompt file {path} does not exist{link}. Fix: check the path.") from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise PromptFileError(f"Prompt file {path} is a loop of symbolic links (it never reaches a file). "
                                  "Fix: point the link at the real file.") from None
        raise PromptFileError(f"Prompt file {path} cannot be read ({error.strerror}). "
                              "Fix: check its permissions.") from None


def _csv_prompts(path: Path, lines: list[str]) -> list[str]:
    """The "prompt" column of a CSV file with a header row, or an error naming the columns it has."""
    reader = csv.DictReader(io.StringIO("\n".join(lines)))
    if reader.fieldnames is None:
        return []
    if reader.fieldnames.count("prompt") > 1:
        raise PromptFileError(f'{path} has {reader.fieldnames.count("prompt")} "prompt" columns (its header: '
                              f'{", ".join(reader.fieldnames)}). Fix: keep one column named "prompt".')
    if "prompt" not in reader.fieldnames:
        raise PromptFileError(f'{path} has no "prompt" column (its header: {", ".join(reader.fieldnames)}). '
                              'Fix: name the column of prompts "prompt" in the first row.')
    try:
        return [row["prompt"] or "" for row in reader]
    except csv.Error as error:
        raise PromptFileError(f"{path}, line {reader.line_num}: not valid CSV ({error}).") from None


def _jsonl_prompt(path: Path, number: int, line: str) -> str:
    """The "prompt" field of one JSON line, or an error naming the line."""
    try:
        record = json.loads(line, object_pairs_hook=unique_keys)
    except json.JSONDecodeError as error:
        raise PromptFileError(f"{path}, line {number}: not valid JSON ({error.msg}).") from None
    except ValueError as error:
        raise PromptFileError(f"{path}, line {number}: {error}. Fix: give each field once.") from None
    if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
        raise PromptFileError(f'{path}, line {number}: expected an object with a string "prompt" field.')
    return record["prompt"]
