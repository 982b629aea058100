"""Load a model and its tokenizer: a bundled offline preset, a random-weight shape preset, or a real checkpoint."""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import tempfile
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_model
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from .paths import CONFIGS, TINY, cache_dir

SHAPE_PREFIX = "shape:"
SEED = 0
SMALL_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")

transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()


class ModelNotFoundError(ValueError):
    """A model name that is no preset, no local folder and not in the Hugging Face cache."""


def presets() -> list[str]:
    """Every preset name the kit knows: tiny, small and the shape:* architectures."""
    shapes = sorted(p.stem for p in CONFIGS.glob("*.json") if p.stem != "small")
    return ["tiny", "small"] + [SHAPE_PREFIX + s for s in shapes]


def is_synthetic(name: str) -> bool:
    """True for shape presets: real architecture, random weights, text that is noise."""
    return name.startswith(SHAPE_PREFIX)


def pick_dtype(device: torch.device | str) -> torch.dtype:
    """fp32 on CPU; bf16 on GPUs that compute it natively (compute capability >= 8.0), fp16 on older ones."""
    device = torch.device(device)
    if device.type != "cuda":
        return torch.float32
    major, _minor = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


def check_model(name: str) -> None:
    """Fail fast, before any process starts, when `name` is no preset, no folder and no cached model id."""
    if is_synthetic(name):
        _shape_config(name)
    elif name not in ("tiny", "small"):
        _checkpoint(name)


def load_tokenizer(name: str = "tiny"):
    """The tokenizer of a model; every preset shares the bundled tiny tokenizer."""
    if name in ("tiny", "small") or is_synthetic(name):
        return AutoTokenizer.from_pretrained(TINY)
    return AutoTokenizer.from_pretrained(_checkpoint(name))


def load_model(name: str, device: torch.device | str = "cpu", dtype: torch.dtype | None = None):
    """Return (model, tokenizer) for a preset name or a checkpoint path, on `device`, in eval mode."""
    device = torch.device(device)
    dtype = dtype or pick_dtype(device)
    tokenizer = load_tokenizer(name)
    if is_synthetic(name):
        model = _random_model(_shape_config(name), device, dtype)
    else:
        path = TINY if name == "tiny" else small_checkpoint() if name == "small" else _checkpoint(name)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, device_map={"": device})
    return model.eval(), tokenizer


def small_checkpoint() -> Path:
    """The `small` preset's folder, built once from assets/configs/small.json with a fixed seed, then cached."""
    config_text = (CONFIGS / "small.json").read_bytes() + (TINY / "tokenizer.json").read_bytes()
    key = hashlib.sha256(config_text).hexdigest()[:12]
    folder = cache_dir() / f"small-{key}"
    if not _is_complete(folder):
        folder.parent.mkdir(parents=True, exist_ok=True)
        with open(folder.parent / f".small-{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # processes that start together build it once, one after another
            if not _is_complete(folder):
                _build_small(folder)
    return folder


def _is_complete(folder: Path) -> bool:
    """True when `folder` holds every file of a loadable checkpoint (an interrupted or older build may not)."""
    return all((folder / name).is_file() for name in SMALL_FILES)


def _build_small(folder: Path) -> None:
    """Write the small preset into `folder` through a staging folder, so no reader ever sees half of it.

    Any process may be the one that builds it, so nothing here depends on the torch.distributed rank:
    `save_pretrained` writes weights only on rank 0, so the weights go through safetensors directly.
    """
    model = _random_model(LlamaConfig.from_json_file(CONFIGS / "small.json"), torch.device("cpu"), torch.float32)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".building-"))
    model.config.save_pretrained(staging)
    model.generation_config.save_pretrained(staging)
    save_model(model, str(staging / "model.safetensors"), metadata={"format": "pt"})
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TINY / name, staging / name)
    if not _is_complete(staging):
        raise RuntimeError(f"Building the small preset in {staging} left out a file of {SMALL_FILES}.")
    shutil.rmtree(folder, ignore_errors=True)  # what an interrupted or older build may have left
    staging.rename(folder)


def _random_model(config: LlamaConfig, device: torch.device, dtype: torch.dtype) -> LlamaForCausalLM:
    """A Llama with seeded random weights, built directly on `device` in `dtype`."""
    torch.manual_seed(SEED)
    with device:
        return LlamaForCausalLM._from_config(config, dtype=dtype)


def _shape_config(name: str) -> LlamaConfig:
    """The architecture of a shape preset such as shape:llama2-7b."""
    path = CONFIGS / f"{name.removeprefix(SHAPE_PREFIX)}.json"
    if not path.exists() or path.stem == "small":
        raise ModelNotFoundError(f"Unknown shape preset {name!r}. Known presets: {', '.join(presets())}.")
    return LlamaConfig.from_json_file(path)


def _checkpoint(name: str) -> str:
    """A local folder, or a hub id already in the local cache (never a download); else an error naming the fix."""
    if Path(name).is_dir():
        return name
    try:
        return str(Path(transformers.utils.cached_file(name, "config.json", local_files_only=True)).parent)
    except (OSError, ValueError):
        raise ModelNotFoundError(
            f"Model {name!r} was not found: it is not a preset ({', '.join(presets())}), not a folder on "
            "this machine, and not a model id in the Hugging Face cache (the kit never downloads at run time). "
            "Fix: pass a preset name, or download the checkpoint once (e.g. `hf download "
            "meta-llama/Llama-2-7b-hf --local-dir models/llama2-7b`) and pass that folder."
        ) from None
