"""The token budget: how many padded tokens one batch may hold, chosen for this model on this device.

Decoding one step multiplies a few rows (one per sequence) by every weight matrix. With few rows the device waits
for the weights to arrive from memory, so each extra row is nearly free; past some number of rows it is busy
computing and an extra row costs as much as the last. A short probe times one of the model's own matrix products
with 1, 2, 4, ... 1024 rows and keeps the fewest rows whose time per row is within 10% of the cheapest. The
budget is that many rows of a typical prompt of the run: rows x (median prompt length + max_new_tokens).
"""

from __future__ import annotations

import statistics
import time

import torch

NEAR = 1.1  # a row count whose time per row is within 10% of the cheapest is busy enough
PROBED_ROWS = [2**k for k in range(11)]  # 1 ... 1024


@torch.inference_mode()
def saturating_rows(model, repeats: int = 5) -> int:
    """Rows at which one decode-shaped product (rows x hidden @ hidden x intermediate) stops getting cheaper per row."""
    weight = torch.randn(model.config.hidden_size, model.config.intermediate_size, device=model.device,
                         dtype=model.dtype)

    def per_row(rows: int) -> float:
        x = torch.randn(rows, weight.shape[0], device=model.device, dtype=model.dtype)
        times = []
        for _ in range(repeats):
            _sync(model.device)
            start = time.perf_counter()
            x @ weight
            _sync(model.device)
            times.append(time.perf_counter() - start)
        return min(times) / rows

    costs = {rows: per_row(rows) for rows in PROBED_ROWS}
    return min(rows for rows, cost in costs.items() if cost <= NEAR * min(costs.values()))


def token_budget_for(rows: int, prompt_lengths: list[int], max_new_tokens: int) -> int:
    """Padded tokens for `rows` rows of the run's median prompt and its new tokens."""
    return rows * (round(statistics.median(prompt_lengths or [0])) + max_new_tokens)


def _sync(device: torch.device) -> None:
    """Wait for the GPU's queued work, so the clock measures it; nothing to wait for on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
