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
