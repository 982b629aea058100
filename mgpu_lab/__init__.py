"""mgpu_lab: learn data-parallel LLM inference with Hugging Face Accelerate, on CPUs or GPUs."""

__version__ = "0.1.0"
