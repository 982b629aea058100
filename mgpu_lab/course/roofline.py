"""The memory-bandwidth roofline: decoding reads every weight once per step, so bandwidth caps tokens/s."""

from __future__ import annotations

# Peak memory bandwidth in GB/s of common GPUs, matched against torch.cuda.get_device_name().
GPU_BANDWIDTH_GBS = {
    "RTX 3090": 936, "RTX 4090": 1008, "A100-SXM4-80GB": 2039, "A100 80GB PCIe": 1935, "A100": 1555,
    "H100 PCIe": 2000, "H100 NVL": 3900, "H100": 3350, "H200": 4800, "L4": 300, "T4": 320, "V100": 900,
}


def bandwidth_for(device_name: str) -> float | None:
    """The table's bandwidth for a device name (the longest matching key wins), or None when unknown."""
    matches = [key for key in GPU_BANDWIDTH_GBS if key.lower() in device_name.lower()]
    return GPU_BANDWIDTH_GBS[max(matches, key=len)] if matches else None


def tokens_per_s_bound(bandwidth_gbs: float, model_bytes: int, batch: int = 1) -> float:
    """Upper bound on one process's decode rate: `batch` tokens per full read of the weights."""
    return batch * bandwidth_gbs * 1e9 / model_bytes


def roofline_fraction(tokens_per_s: float, processes: int, bandwidth_gbs: float, model_bytes: int,
                      batch: int = 1) -> float:
    """Measured tokens/s over the bound of `processes` GPUs each decoding `batch` sequences at once."""
    return tokens_per_s / (processes * tokens_per_s_bound(bandwidth_gbs, model_bytes, batch))


def format_step_time(probe: dict, model_bytes: int, bandwidth_gbs: float) -> str:
    """Where one decode step's time goes, from a decode probe (gpu-check --step decode-probe): reading the weights
    once at full bandwidth, and everything else (host work: Python, kernel launches, cache bookkeeping)."""
    read_ms = model_bytes / (bandwidth_gbs * 1e9) * 1e3
    lines = [f"{probe['model']} ({probe['dtype']}) on {probe['device_name']}: reading its {model_bytes / 1e9:.1f} GB "
             f"of weights at {bandwidth_gbs:.0f} GB/s takes {read_ms:.1f} ms per step, whatever the batch."]
    for name, step in probe.items():
        if isinstance(step, dict):
            other = step["decode_step_ms"] - read_ms
            lines.append(f"  {name:<24} {step['decode_step_ms']:6.1f} ms a step: weights {read_ms:.1f} ms, the rest "
                         f"{other:5.1f} ms ({other / step['decode_step_ms']:.0%}); {step['roofline_fraction']:.0%} of "
                         "the bound")
    return "\n".join(lines)
