"""Keep the kernel from starting the CUDA driver by itself, so processes forked from it can still use the GPU.

A process forked after its parent started the driver (cuInit) fails with "CUDA error: initialization error".
Two calls start it without a model ever touching the GPU: torch.cuda.is_available(), and
torch.cuda.is_current_stream_capturing(), which transformers asks on every padded forward pass, on a CPU too.
"""

import os


def keep_cuda_unstarted() -> None:
    """Ask NVML whether GPUs exist, and answer "not capturing" where this process never started CUDA."""
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    try:
        import torch
    except ImportError:  # `python -m mgpu_lab doctor` runs without torch, to say how to install it
        return
    capturing = torch.cuda.is_current_stream_capturing
    if getattr(capturing, "guarded", False):
        return

    def is_current_stream_capturing() -> bool:
        """A CUDA graph capture needs CUDA started in this process; until then, False without asking the driver."""
        return torch.cuda.is_initialized() and capturing()

    is_current_stream_capturing.guarded = True
    torch.cuda.is_current_stream_capturing = is_current_stream_capturing
