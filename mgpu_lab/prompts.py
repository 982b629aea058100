"""The prompts the lessons run: the article's ten famous first lines x 10, or a learner's own file."""

from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path

from .paths import PROMPTS

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
    """Prompts from a .txt (one per line) or .jsonl ("prompt" field) file, and how many empty ones were skipped."""
    path = Path(path)
    if not path.is_file():
        raise PromptFileError(f"Prompt file {path} does not exist. Fix: check the path.")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise PromptFileError(
            f"Prompt file {path} is not UTF-8 text (byte {error.start}). Fix: save it as UTF-8."
        ) from None
    raw = [_jsonl_prompt(path, number, line) for number, line in enumerate(lines, 1)
           if line.strip()] if path.suffix == ".jsonl" else lines
    prompts = [p for p in raw if p.strip()]
    if not prompts:
        raise PromptFileError(f"Prompt file {path} holds no prompts (it is empty or blank).")
    return prompts, len(lines) - len(prompts)


def _jsonl_prompt(path: Path, number: int, line: str) -> str:
    """The "prompt" field of one JSON line, or an error naming the line."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise PromptFileError(f"{path}, line {number}: not valid JSON ({error.msg}).") from None
    if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
        raise PromptFileError(f'{path}, line {number}: expected an object with a string "prompt" field.')
    return record["prompt"]
