"""mgpu_lab: learn data-parallel LLM inference with Hugging Face Accelerate, on CPUs or GPUs.

The public face: `from mgpu_lab import run, launch, load_model, load_prompts, default_prompts`. They load lazily,
so `python -m mgpu_lab doctor` still runs in a Python without torch. The layers, from the bottom: launcher/ (run a
function on N processes), engine/ (split, generate, gather), course/ (what the notebooks call besides the code they
show), tools/ (the command line), tiny/.
"""

from importlib import import_module

from .fork_safe import keep_cuda_unstarted

keep_cuda_unstarted()  # before any cell of the kernel can start CUDA, so later launches can fork

__version__ = "0.1.0"

PUBLIC = {"run": "engine.runner", "launch": "launcher.launch", "load_model": "engine.models",
          "load_prompts": "engine.prompts", "default_prompts": "engine.prompts"}
__all__ = [*PUBLIC, "__version__"]


def __getattr__(name: str):
    """Import a public function from its engine module the first time it is asked for."""
    if name not in PUBLIC:
        raise AttributeError(f"module 'mgpu_lab' has no attribute {name!r}")
    return getattr(import_module(f".{PUBLIC[name]}", __name__), name)
