"""The prompts the lessons run: the article's ten famous first lines x 10, or a learner's own file."""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import random
import sys
from pathlib import Path

from ..paths import PROMPTS

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
        data, path = sys.stdin.buffer.read(), "<standard input>"
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


def _read_bytes(path: Path) -> bytes:
    """A file's bytes, or an error that says why it cannot be read: missing, a folder, or not allowed."""
    if path.is_dir():
        raise PromptFileError(f"Prompt file {path} is a folder, not a file. Fix: pass a file inside it.")
    if not path.exists():
        raise PromptFileError(f"Prompt file {path} does not exist. Fix: check the path.")
    try:
        return path.read_bytes()
    except OSError as error:
        raise PromptFileError(f"Prompt file {path} cannot be read ({error.strerror}). "
                              "Fix: check its permissions.") from None


def _csv_prompts(path: Path, lines: list[str]) -> list[str]:
    """The "prompt" column of a CSV file with a header row, or an error naming the columns it has."""
    reader = csv.DictReader(io.StringIO("\n".join(lines)))
    if reader.fieldnames is None:
        return []
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
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise PromptFileError(f"{path}, line {number}: not valid JSON ({error.msg}).") from None
    if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
        raise PromptFileError(f'{path}, line {number}: expected an object with a string "prompt" field.')
    return record["prompt"]
