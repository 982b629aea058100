"""mgpu_lab: learn data-parallel LLM inference with Hugging Face Accelerate, on CPUs or GPUs."""

from .fork_safe import keep_cuda_unstarted

keep_cuda_unstarted()  # before any cell of the kernel can start CUDA, so later launches can fork

__version__ = "0.1.0"
