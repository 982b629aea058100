"""Four quick figures that tell a model writing English from one writing noise or looping.

- `real_words`: share of generated words found in a dictionary (SCOWL's American list, as Debian's `wamerican`,
  shipped with the kit in assets/words/);
- `stopped_at_eos`: share of completions that ended with EOS before the token limit;
- `under_5_tokens`: share of completions that are empty or shorter than 5 tokens;
- `distinct_3grams`: distinct word 3-grams over all word 3-grams of the distinct completions.

Greedy decoding gives identical completions for repeated prompts (the default workload repeats ten
prompts ten times), so `distinct_3grams` counts each distinct (prompt, completion) pair once: it
measures loops and stock phrases, not how often the prompt list repeats itself.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Protocol

from ..paths import WORD_LIST

_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")


class CompletionLike(Protocol):
    """What the figures read from a completion (mgpu_lab.generate.Completion has these fields)."""

    prompt: str
    text: str
    generated_tokens: int
    stop_reason: str


@dataclass(frozen=True)
class Quality:
    """The four figures, each a share between 0 and 1."""

    real_words: float
    stopped_at_eos: float
    under_5_tokens: float
    distinct_3grams: float

    def as_dict(self) -> dict[str, float]:
        """The figures rounded to three decimals."""
        return {k: round(v, 3) for k, v in asdict(self).items()}


@lru_cache(maxsize=1)
def dictionary(path: Path = WORD_LIST) -> frozenset[str]:
    """The lower-cased word list the kit ships (a gzipped file, one word a line)."""
    return frozenset(line.strip().lower() for line in gzip.decompress(path.read_bytes()).decode("utf-8").splitlines())


def words(text: str) -> list[str]:
    """Lower-cased words of `text`: letters with inner apostrophes; hyphens and punctuation split."""
    return [w.lower() for w in _WORD.findall(text)]


def is_real_word(word: str, known: frozenset[str]) -> bool:
    """True if `word`, its possessive stem or its US spelling (honour -> honor) is in `known`."""
    stem = re.sub(r"'s$|s'$", "", word)
    return any(w in known for w in {word, stem, stem.replace("our", "or")})


def real_word_share(texts: Iterable[str]) -> float:
    """Share of the words in `texts` that are real words."""
    known = dictionary()
    found = [is_real_word(w, known) for text in texts for w in words(text)]
    return sum(found) / len(found) if found else 0.0


def distinct_ngrams(texts: Iterable[str], n: int = 3) -> float:
    """Distinct word n-grams over all word n-grams (0 when there are none)."""
    grams = [tuple(ws[i : i + n]) for ws in map(words, texts) for i in range(len(ws) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def quality(completions: list[CompletionLike]) -> Quality:
    """The four figures over a list of completions."""
    total = len(completions)
    distinct = {(c.prompt, c.text): c.text for c in completions}.values()
    return Quality(
        real_words=real_word_share(c.text for c in completions),
        stopped_at_eos=sum(c.stop_reason == "eos" for c in completions) / total,
        under_5_tokens=sum(c.generated_tokens < 5 for c in completions) / total,
        distinct_3grams=distinct_ngrams(distinct),
    )


def measure_model(name_or_path: str = "tiny", max_new_tokens: int = 100, batch_size: int = 16) -> Quality:
    """The four figures for a model on the 100 default prompts: greedy, batched, left-padded, on CPU."""
    from ..engine.generate import generate_batched
    from ..engine.models import load_model
    from ..engine.prompts import default_prompts

    model, tokenizer = load_model(name_or_path, device="cpu")
    return quality(generate_batched(model, tokenizer, default_prompts(), max_new_tokens, batch_size=batch_size))
