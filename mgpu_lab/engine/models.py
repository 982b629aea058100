"""Load a model and its tokenizer: a bundled offline preset, a random-weight shape preset, or a real checkpoint."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
import transformers
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from transformers import (AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM,
                          PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase)
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from ..files import lock
from ..paths import CONFIGS, TINY, cache_dir
from .validate import out_folder, preset_cache

SHAPE_PREFIX = "shape:"
SEED = 0
SMALL_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
# How the small preset's weights file is laid out, part of its folder's name: builds before it stored the tied
# embedding under lm_head.weight only, which transformers reads but vLLM does not (it ties lm_head to the embedding)
SMALL_LAYOUT = b"tied embedding stored as model.embed_tokens.weight"
DIGEST_FILE = "digest.json"  # the sha256 of each of SMALL_FILES, as the build wrote them; written last

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer.model.v3", "spiece.model", "vocab.json", "vocab.txt")
WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin")
SHOWN = 5  # names listed in a message before "and N more"


@dataclass(frozen=True)
class ResolvedModel:
    """A model name checked and resolved once, in the launching process: what every process loads, unchecked."""

    name: str
    folder: Path | None  # what from_pretrained reads; None for a shape preset (its random weights are built)

    @property
    def tokenizer_folder(self) -> Path:
        """Where its tokenizer is: the checkpoint's own folder; every preset shares the bundled tiny tokenizer."""
        return TINY if self.folder is None or self.name == "small" else self.folder


class ModelNotFoundError(ValueError):
    """A model name that is no preset, no local folder and not in the Hugging Face cache."""


class ModelLoadError(ValueError):
    """A checkpoint that cannot be used as it is; the message names what is wrong and the fix."""


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Transformers' notes and progress bars off inside the block (a load, a scheduler), then back as they were."""
    verbosity = transformers.utils.logging.get_verbosity()
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers.utils.logging.set_verbosity(verbosity)
        if bars:
            transformers.utils.logging.enable_progress_bar()


def presets() -> list[str]:
    """Every preset name the kit knows: tiny, small and the shape:* architectures."""
    shapes = sorted(p.stem for p in CONFIGS.glob("*.json") if p.stem != "small")
    return ["tiny", "small"] + [SHAPE_PREFIX + s for s in shapes]


def dtype_name(dtype: torch.dtype) -> str:
    """A dtype as the summary and the output file name it: float32, bfloat16, float16."""
    return str(dtype).removeprefix("torch.")


def model_identity(model: ResolvedModel) -> str:
    """What a model stands for, as an output file records it: a folder resolved, a preset with its source."""
    if model.name == "small":
        return model.folder.name  # small-<digest of its config and tokenizer>
    if model.name == "tiny":
        return f"tiny-{_sha256(TINY / 'model.safetensors')[:12]}"
    if model.folder is None:
        return f"{model.name}-{_sha256(CONFIGS / (model.name.removeprefix(SHAPE_PREFIX) + '.json'))[:12]}"
    folder = model.folder.resolve()
    preset = {TINY.resolve(): "tiny", small_folder().resolve(): "small"}.get(folder)  # a preset given by its folder
    return model_identity(ResolvedModel(preset, folder)) if preset else str(folder)


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
    """Fail fast, before any process starts, when `name` is no preset, no usable folder and no cached model id."""
    if not isinstance(name, str):
        raise TypeError(f"model must be a str (a preset name or a folder), got the {type(name).__name__} {name!r}.")
    if not name.strip():
        raise ModelNotFoundError(f"The model name is empty. Fix: pass a preset ({', '.join(presets())}) or a folder.")
    if is_synthetic(name):
        _shape_config(name)
    elif name == "small":
        preset_cache()
    elif name != "tiny":
        check_checkpoint(Path(_checkpoint(name)))


def resolve_model(name: str) -> ResolvedModel:
    """Check `name` and find its folder, once, before any process starts (building the `small` preset if needed)."""
    check_model(name)
    return locate_model(name)


def locate_model(name: str) -> ResolvedModel:
    """The folder of a name check_model passed: tiny's, small's (built and verified once here), a checkpoint's."""
    if is_synthetic(name):
        return ResolvedModel(name, None)
    return ResolvedModel(name, TINY if name == "tiny" else small_checkpoint() if name == "small" else
                         Path(_checkpoint(name)))


def load_tokenizer(model: str | ResolvedModel = "tiny") -> PreTrainedTokenizerBase:
    """The tokenizer of a model; every preset shares the bundled tiny tokenizer."""
    if isinstance(model, ResolvedModel):
        folder = model.tokenizer_folder
    else:  # a name: no need to check it, or to build `small`, for a tokenizer
        folder = TINY if model in ("tiny", "small") or is_synthetic(model) else _checkpoint(model)
    with quiet_transformers():
        return AutoTokenizer.from_pretrained(folder)


def load_model(model: str | ResolvedModel, device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
               strict: bool = True, tp_options: dict | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Return (model, tokenizer) on `device`, in eval mode; missing or unexpected weights fail (strict=False: warn).

    `model`: a name (checked and resolved here) or a ResolvedModel (as a run hands it to each of its processes).
    `tp_options`: from_pretrained options that split the model between processes (tensor_parallel.load_options).
    """
    device, model = torch.device(device), _resolved(model)
    dtype = dtype or pick_dtype(device)
    tokenizer = load_tokenizer(model)
    with quiet_transformers():
        if model.folder is None:
            check_fits(model.name, device, dtype)
            return _random_model(_shape_config(model.name), device, dtype).eval(), tokenizer
        placement = tp_options or {"device_map": {"": device}}
        loaded, info = AutoModelForCausalLM.from_pretrained(model.folder, dtype=dtype, output_loading_info=True,
                                                            **placement)
    check_weights(model.name, info, strict)
    check_finite(model.name, loaded)
    return loaded.eval(), tokenizer


def _resolved(model: str | ResolvedModel) -> ResolvedModel:
    """A ResolvedModel as given, or a name checked and resolved now."""
    return model if isinstance(model, ResolvedModel) else resolve_model(model)


def check_finite(name: str, model: PreTrainedModel) -> None:
    """Refuse weights holding NaN or infinity (a diverged fine-tune, a damaged file): every text would be empty.

    One fp32 sum per tensor (NaN and infinity survive a sum): one read of the weights, no copy; see the README.
    """
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p.sum(dtype=torch.float32))]
    if bad:
        raise ModelLoadError(f"Checkpoint {name!r} holds NaN or infinite weights in {len(bad)} tensor(s) "
                             f"({_some(bad)}): it cannot generate text. Fix: download the checkpoint again, or use "
                             "one saved before training diverged.")


def model_folder(name: str) -> Path | None:
    """The folder from_pretrained reads for `name` (tiny, small, a checkpoint folder or cached id); None for shape:*."""
    return resolve_model(name).folder


def model_config(name: str) -> PretrainedConfig:
    """The architecture of a model (a preset or a checkpoint folder), read without loading its weights."""
    if is_synthetic(name):
        return _shape_config(name)
    if name == "small":
        return LlamaConfig.from_json_file(CONFIGS / "small.json")
    return AutoConfig.from_pretrained(TINY if name == "tiny" else _checkpoint(name))


def check_weights(name: str, info: dict, strict: bool = True) -> None:
    """Fail (or, not strict, warn on stderr) when a checkpoint lacks weights the model needs or holds others."""
    problems = [f"{len(keys)} {what} ({_some(keys)})" for what, keys in
                (("missing weights", info["missing_keys"]), ("unexpected weights", info["unexpected_keys"])) if keys]
    if not problems:
        return
    message = f"Checkpoint {name!r} does not match its architecture: {'; '.join(problems)}."
    if strict:
        raise ModelLoadError(f"{message} Fix: download the checkpoint again, or check config.json belongs to it "
                             "(load_model(..., strict=False) runs it anyway, missing weights random).")
    print(f"WARNING: {message} The missing weights are RANDOM: the text is not the model's.", file=sys.stderr)


def check_checkpoint(folder: Path) -> None:
    """Name what a checkpoint folder lacks (config, causal-LM architecture, tokenizer, whole weights)."""
    files = sorted(p.name for p in folder.iterdir())
    fix = "Fix: download the whole checkpoint (e.g. `hf download ID --local-dir FOLDER`)."
    if "config.json" not in files:
        raise ModelLoadError(f"Model folder {folder} has no config.json (it holds: {_some(files) or 'nothing'}). {fix}")
    check_causal_lm(folder)
    if not set(TOKENIZER_FILES) & set(files):
        raise ModelLoadError(f"Model folder {folder} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}). {fix}")
    weights = sorted({p for pattern in WEIGHT_FILES for p in folder.glob(pattern)})
    if not weights:
        raise ModelLoadError(f"Model folder {folder} has no weights (no *.safetensors or pytorch_model*.bin). {fix}")
    for path in weights:
        try:
            if path.suffix == ".safetensors":
                safe_open(path, "pt").keys()  # reads the header, which places every tensor in the file
            else:
                zipfile.ZipFile(path).close()  # torch.save's zip archive: its directory is at the end of the file
        except (SafetensorError, zipfile.BadZipFile, OSError) as error:
            raise ModelLoadError(f"Weights file {path} is truncated or damaged ({error}). "
                                 "Fix: download that file again.") from None


def check_causal_lm(folder: Path) -> None:
    """Refuse a model that does not generate text left to right (BERT, T5, ...), naming its architecture."""
    try:
        config = AutoConfig.from_pretrained(folder)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"Model folder {folder} has a config.json transformers cannot read: {error}") from None
    causal = {n for names in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()
              for n in ((names,) if isinstance(names, str) else names)}
    architectures = config.architectures or []
    known_type = config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    if not known_type or (architectures and not set(architectures) <= causal):
        raise ModelLoadError(f"Model folder {folder} holds a {', '.join(architectures) or config.model_type}, which is "
                             "not a causal language model: it cannot generate text. "
                             "Fix: pass a causal LM (one whose architecture ends in ForCausalLM, such as Llama).")


def check_fits(name: str, device: torch.device, dtype: torch.dtype) -> None:
    """Refuse, before building it, a shape preset bigger than this process's share of the device's memory."""
    with torch.device("meta"):
        need = LlamaForCausalLM(_shape_config(name)).num_parameters() * dtype.itemsize
    have, where = device_memory(device)
    if need > have:
        raise ModelLoadError(
            f"{name} needs {need / 1e9:.1f} GB per process in {dtype_name(dtype)}, but {where} "
            f"leaves {have / 1e9:.1f} GB. Fix: use fewer processes, a bigger GPU, or a smaller model (--model small).")


def device_memory(device: torch.device) -> tuple[int, str]:
    """Bytes one process may use on `device` (a GPU's free memory; RAM shared by this machine's processes)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0], f"GPU {device.index or 0}'s free memory"
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return ram // processes, f"{ram / 1e9:.0f} GB of RAM shared by {processes} process(es)"


def _some(names) -> str:
    """A few names from a collection, and how many more there are."""
    names = sorted(names)
    more = f", and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def small_folder() -> Path:
    """Where the `small` preset is cached: a folder named by a digest of what it is built from."""
    config_text = (CONFIGS / "small.json").read_bytes() + (TINY / "tokenizer.json").read_bytes() + SMALL_LAYOUT
    return cache_dir() / f"small-{hashlib.sha256(config_text).hexdigest()[:12]}"


def small_checkpoint() -> Path:
    """The `small` preset's folder, built once from assets/configs/small.json with a fixed seed, then cached.

    A cached folder whose files no longer match the digests its build recorded is built again (said on stderr).
    """
    folder = small_folder()
    if not _is_sound(folder):
        folder.parent.mkdir(parents=True, exist_ok=True)
        with open(folder.parent / f".{folder.name}.lock", "w") as handle:
            lock(handle)  # processes that start together build it once, one after another
            if not _is_sound(folder):
                if _is_complete(folder):
                    print(f"NOTE: the small preset in {folder} changed since it was built (its digest differs): "
                          "building it again.", file=sys.stderr)
                _build_small(folder)
    return folder


def _is_complete(folder: Path) -> bool:
    """True when `folder` holds every file of a built preset (an interrupted or older build may not)."""
    return all((folder / name).is_file() for name in (*SMALL_FILES, DIGEST_FILE))


def _is_sound(folder: Path) -> bool:
    """True when `folder` is complete and each file still has the digest its build recorded."""
    try:
        return _is_complete(folder) and json.loads((folder / DIGEST_FILE).read_text()) == _digests(folder)
    except (OSError, ValueError):
        return False


def _digests(folder: Path) -> dict[str, str]:
    """The sha256 of each file of a built preset (about one read of the weights: 0.2 s for small)."""
    return {name: _sha256(folder / name) for name in SMALL_FILES}


def _sha256(path: Path) -> str:
    """A file's sha256, in hex."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _build_small(folder: Path) -> None:
    """Write the small preset into `folder` through a staging folder, so no reader ever sees half of it.

    Any process may be the one that builds it, so nothing here depends on the torch.distributed rank:
    `save_pretrained` writes weights only on rank 0, so the weights go through safetensors directly.
    """
    model = _random_model(LlamaConfig.from_json_file(CONFIGS / "small.json"), torch.device("cpu"), torch.float32)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".building-"))
    staging.chmod(0o777 & ~_umask())  # mkdtemp's 0700 would hide a shared cache from other users
    model.config.save_pretrained(staging)
    model.generation_config.save_pretrained(staging)
    tied = model.state_dict()  # the tied output layer is the embedding: stored once, under the embedding's name
    save_file({name: tensor for name, tensor in tied.items() if name != "lm_head.weight"},
              str(staging / "model.safetensors"), metadata={"format": "pt"})
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TINY / name, staging / name)
    (staging / DIGEST_FILE).write_text(json.dumps(_digests(staging), indent=1) + "\n")
    if not _is_complete(staging):
        raise RuntimeError(f"Building the small preset in {staging} left out one of its files.")
    shutil.rmtree(folder, ignore_errors=True)  # what an interrupted or older build may have left
    staging.rename(folder)


def _umask() -> int:
    """This process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
