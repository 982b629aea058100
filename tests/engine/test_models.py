"""Model presets: a real checkpoint folder, llama2-like tokenizer, deterministic small build, dtype choice."""

import os
import shutil
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, BertConfig, BertForMaskedLM, LlamaForCausalLM

from mgpu_lab.engine import models
from mgpu_lab.engine.models import ModelLoadError, ModelNotFoundError, check_model, load_model, pick_dtype, presets


def test_tiny_is_a_plain_hugging_face_folder():
    model = AutoModelForCausalLM.from_pretrained(models.TINY)
    assert isinstance(model, LlamaForCausalLM)
    size = sum(p.stat().st_size for p in models.TINY.iterdir())
    assert size < 10 * 2**20


def test_tokenizer_behaves_like_llama2():
    tokenizer = AutoTokenizer.from_pretrained(models.TINY)
    ids = tokenizer("Hello world").input_ids
    assert ids[0] == tokenizer.bos_token_id  # BOS added by default
    assert tokenizer.eos_token is not None
    assert tokenizer.pad_token is None
    assert tokenizer.padding_side == "right"


def test_tiny_loads_fp32_on_cpu(tiny):
    model, _ = tiny
    assert model.dtype == torch.float32 and model.device.type == "cpu" and not model.training


@pytest.mark.slow
def test_small_builds_deterministically(small, tmp_path, monkeypatch):
    monkeypatch.setenv("MGPU_LAB_CACHE", str(tmp_path))  # a second build, beside the session's (conftest.py)
    builds = [load_file(small / "model.safetensors"), load_file(models.small_checkpoint() / "model.safetensors")]
    # The same tensors under the same names; the file's bytes are not compared: safetensors does not promise
    # one header layout for the same tensors (two builds in one process once differed only there).
    assert builds[0].keys() == builds[1].keys()
    assert all(torch.equal(builds[0][name], builds[1][name]) for name in builds[0])
    model, tokenizer = load_model("small")
    assert 20e6 < sum(p.numel() for p in model.parameters()) < 30e6
    assert tokenizer.bos_token_id == AutoTokenizer.from_pretrained(models.TINY).bos_token_id
    special = (tokenizer.bos_token_id, tokenizer.eos_token_id)
    assert (model.generation_config.bos_token_id, model.generation_config.eos_token_id) == special


@pytest.mark.parametrize("name", presets())
def test_every_preset_names_its_tokenizers_special_tokens(name):
    config, tokenizer = models.model_config(name), models.load_tokenizer(name)
    # small once said BOS=0, EOS=1 beside a tokenizer whose BOS is 1 and EOS 2: it stopped when it wrote <s>
    assert (config.bos_token_id, config.eos_token_id) == (tokenizer.bos_token_id, tokenizer.eos_token_id), name


@pytest.mark.parametrize("capability, dtype", [((8, 6), torch.bfloat16), ((9, 0), torch.bfloat16),
                                               ((7, 5), torch.float16), ((6, 1), torch.float16)])
def test_dtype_follows_gpu_capability(monkeypatch, capability, dtype):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert pick_dtype("cuda:0") == dtype


def test_cpu_uses_fp32():
    assert pick_dtype("cpu") == torch.float32


def test_missing_model_names_the_fix():
    with pytest.raises(ModelNotFoundError, match="Fix: pass a preset name"):
        check_model("models/no-such-llama")


def test_unknown_shape_lists_the_known_ones():
    with pytest.raises(ModelNotFoundError, match="shape:llama2-7b"):
        check_model("shape:gpt-9")


@pytest.mark.parametrize("name, billions", [("shape:llama2-7b", 6.74), ("shape:llama2-13b", 13.0),
                                            ("shape:mistral-7b", 7.24)])
def test_shape_presets_have_the_real_size(name, billions):
    assert name in presets()
    with torch.device("meta"):
        model = LlamaForCausalLM(models._shape_config(name))
    assert sum(p.numel() for p in model.parameters()) / 1e9 == pytest.approx(billions, rel=0.01)


def build_small_here() -> list[str]:
    """Every launched process asks for the small preset at once, as a multi-process run does, and loads it."""
    from accelerate import Accelerator
    from accelerate.utils import gather_object

    Accelerator()
    folder = models.small_checkpoint()
    AutoModelForCausalLM.from_pretrained(folder)  # the race used to fail here: a folder with no config.json
    return gather_object([str(folder)])


@pytest.mark.multiprocess
@pytest.mark.parametrize("num_processes", [2, 3])
@pytest.mark.parametrize("attempt", range(5))
def test_processes_building_small_together_get_one_complete_folder(tmp_path, monkeypatch, num_processes, attempt):
    from mgpu_lab.launcher.launch import launch

    monkeypatch.setenv("MGPU_LAB_CACHE", str(tmp_path))
    folders = launch(build_small_here, num_processes=num_processes, verbose=False)
    assert len(folders) == num_processes and len(set(folders)) == 1
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".small-")) == [Path(folders[0]).name]
    assert models._is_complete(Path(folders[0]))


@pytest.mark.slow
def test_an_incomplete_folder_is_rebuilt(small_copy):
    folder = small_copy
    (folder / "config.json").unlink()  # what the old race left: tokenizer files only
    assert models.small_checkpoint() == folder and models._is_complete(folder)


def test_an_empty_cache_variable_means_the_default(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("MGPU_LAB_CACHE", "")
    assert models.cache_dir() == tmp_path / ".cache" / "mgpu_lab"


@pytest.fixture
def tiny_copy(tmp_path):
    """A copy of the tiny checkpoint folder, to damage."""
    folder = tmp_path / "tiny"
    shutil.copytree(models.TINY, folder)
    return folder


def test_missing_weights_fail_by_name(tiny_copy):
    weights = load_file(tiny_copy / "model.safetensors")
    kept = {k: v for k, v in weights.items() if ".layers.1." not in k}
    save_file({**kept, "lm_head.extra": torch.zeros(2)}, tiny_copy / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=r"9 missing weights \(model.layers.1.input_layernorm.weight, .*"
                                             r"and 4 more\); 1 unexpected weights \(lm_head.extra\)"):
        load_model(str(tiny_copy))


def test_missing_weights_warn_loudly_when_not_strict(tiny_copy, capsys):
    weights = load_file(tiny_copy / "model.safetensors")
    save_file({k: v for k, v in weights.items() if ".layers.0.mlp." not in k}, tiny_copy / "model.safetensors",
              metadata={"format": "pt"})
    model, _ = load_model(str(tiny_copy), strict=False)
    err = capsys.readouterr().err
    assert "WARNING" in err and "3 missing weights" in err and "RANDOM" in err and not model.training


def test_transformers_logging_is_left_as_it_was(tiny_copy):
    before = transformers.utils.logging.get_verbosity()
    load_model(str(tiny_copy))
    assert transformers.utils.logging.get_verbosity() == before != transformers.logging.ERROR


def test_a_masked_lm_is_refused_by_architecture(tmp_path):
    bert = BertForMaskedLM(BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=32))
    bert.save_pretrained(tmp_path)
    shutil.copy(models.TINY / "tokenizer.json", tmp_path)
    with pytest.raises(ModelLoadError, match="holds a BertForMaskedLM, which is not a causal language model"):
        check_model(str(tmp_path))


@pytest.mark.parametrize("keep, message", [
    ((), "has no config.json \\(it holds: nothing\\)"),
    (("config.json",), "has no tokenizer"),
    (("config.json", "tokenizer.json", "tokenizer_config.json"), "has no weights"),
    (("tokenizer.json", "model.safetensors"), "has no config.json \\(it holds: model.safetensors, tokenizer.json\\)"),
])
def test_incomplete_folders_are_named(tiny_copy, keep, message):
    for path in tiny_copy.iterdir():
        if path.name not in keep:
            path.unlink()
    with pytest.raises(ModelLoadError, match=message):
        check_model(str(tiny_copy))


def test_a_truncated_weights_file_is_named(tiny_copy):
    path = tiny_copy / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match=f"Weights file {path} is truncated or damaged"):
        check_model(str(tiny_copy))


@pytest.mark.parametrize("name, error, message", [("", ModelNotFoundError, "The model name is empty"),
                                                  ("  ", ModelNotFoundError, "The model name is empty"),
                                                  (None, TypeError, "model must be a str")])
def test_an_empty_model_name_is_named(name, error, message):
    with pytest.raises(error, match=message):
        check_model(name)


def test_shape_preset_too_big_for_memory_is_refused_before_building(monkeypatch):
    monkeypatch.setattr(models, "device_memory", lambda device: (8 * 10**9, "8 GB of RAM shared by 2 process(es)"))
    monkeypatch.setattr(models, "_random_model", lambda *a: pytest.fail("built before the memory check"))
    with pytest.raises(ModelLoadError, match="shape:llama2-7b needs 27.0 GB per process in float32, but 8 GB"):
        load_model("shape:llama2-7b")


def test_cpu_memory_is_shared_by_the_local_processes(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    have, where = models.device_memory(torch.device("cpu"))
    assert have == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4 and "4 process(es)" in where


@pytest.mark.slow
def test_built_preset_folder_is_readable_by_others(tmp_path, monkeypatch):
    monkeypatch.setenv("MGPU_LAB_CACHE", str(tmp_path))
    old = os.umask(0o022)
    try:
        folder = models.small_checkpoint()
    finally:
        os.umask(old)
    assert folder.stat().st_mode & 0o777 == 0o755


@pytest.mark.slow
def test_a_cached_small_preset_that_changed_is_built_again(small_copy, capsys):
    folder = small_copy
    assert models.small_checkpoint() == folder
    weights = folder / "model.safetensors"
    built = weights.read_bytes()
    with open(weights, "r+b") as handle:  # a few bytes inside the weights overwritten: NaN in float32
        handle.seek(len(built) // 2)
        handle.write(b"\xff\xff\xff\xff")
    assert models.small_checkpoint() == folder
    assert "changed since it was built (its digest differs): building it again" in capsys.readouterr().err
    assert all(torch.isfinite(t).all() for t in load_file(weights).values())
    weights.write_bytes(built[: len(built) // 3])  # truncated
    assert models.small_checkpoint() == folder and models._is_sound(folder)


@pytest.mark.slow
def test_a_preset_from_an_older_kit_without_digests_is_built_again(small_copy):
    folder = small_copy
    (folder / models.DIGEST_FILE).unlink()
    assert models.small_checkpoint() == folder and (folder / models.DIGEST_FILE).is_file()


def test_non_finite_weights_are_refused_by_name(tiny_copy):
    weights = load_file(tiny_copy / "model.safetensors")
    weights["model.norm.weight"][3] = float("nan")
    save_file(weights, tiny_copy / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=r"NaN or infinite weights in 1 tensor\(s\) \(model.norm.weight\)"):
        load_model(str(tiny_copy))


def test_a_truncated_bin_checkpoint_is_named_with_its_path(tiny_copy):
    weights = load_file(tiny_copy / "model.safetensors")
    (tiny_copy / "model.safetensors").unlink()
    torch.save(weights, tiny_copy / "pytorch_model.bin")
    data = (tiny_copy / "pytorch_model.bin").read_bytes()
    (tiny_copy / "pytorch_model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=f"Weights file {tiny_copy / 'pytorch_model.bin'} is truncated or "
                                             "damaged .*Fix: download that file again"):
        check_model(str(tiny_copy))


def test_model_folder_gives_from_pretrained_a_folder_or_none_for_a_shape(tmp_path):
    assert models.model_folder("tiny") == models.TINY
    assert models.model_folder(str(models.TINY)) == models.TINY
    assert models.model_folder("shape:llama2-7b") is None
    with pytest.raises(ModelNotFoundError, match="not found"):
        models.model_folder(str(tmp_path / "no-such-model"))
