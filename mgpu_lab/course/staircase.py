"""A scaling model for data-parallel inference: time follows the number of generate calls the busiest rank makes."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..paths import ASSETS

ARTICLE = ASSETS / "article_results.json"


def article_results(path: Path = ARTICLE) -> dict:
    """The article's two tables (naive and batched, 1-5 GPUs) as data."""
    return json.loads(path.read_text())


def calls_on_busiest_rank(prompts: int, processes: int, batch_size: int) -> int:
    """Sequential generate calls on the rank with the most prompts: ceil(ceil(prompts / N) / batch)."""
    return math.ceil(math.ceil(prompts / processes) / batch_size)


def predict_wall(one_process_wall: float, prompts: int, processes: list[int], batch_size: int) -> list[float]:
    """Predicted wall time for each process count, from one measurement on one process."""
    per_call = one_process_wall / calls_on_busiest_rank(prompts, 1, batch_size)
    return [per_call * calls_on_busiest_rank(prompts, n, batch_size) for n in processes]


def compare_with_article(mode: str, article: dict | None = None) -> list[dict]:
    """Per GPU count: the article's wall time, the model's prediction from its 1-GPU time, and the error."""
    article = article or article_results()
    table = article[mode]
    batch = table.get("batch_size", 1)
    predicted = predict_wall(table["wall_s"][0], article["prompts"], table["num_processes"], batch)
    return [{"num_processes": n, "calls": calls_on_busiest_rank(article["prompts"], n, batch),
             "measured_s": measured, "predicted_s": round(guess, 1),
             "error": round((guess - measured) / measured, 3)}
            for n, measured, guess in zip(table["num_processes"], table["wall_s"], predicted)]
