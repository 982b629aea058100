"""The peer's side of `bench --peer-python`: vLLM's offline `LLM.generate`, run by another Python (a venv with vllm).

Run as a script: `PYTHON vllm_worker.py REQUEST.json RESULT.json`. It imports only the standard library and vLLM
(never mgpu_lab: vLLM pins its own transformers), reads the request the kit wrote, and writes one JSON object:
the token ids of every prompt and the wall time of each timed run, or {"error": ..., "message": ...} and exit 3.
"""

import json
import os
import sys
import time

NO_VLLM = 3  # the exit code for "this Python cannot run vLLM": the kit names the fix


def environment(request: dict) -> None:
    """Threads, KV-cache space and binding set before vLLM is imported (it reads them once, at import)."""
    if request["device"] == "cpu":
        os.environ["OMP_NUM_THREADS"] = str(request["threads"])
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")  # a shared box: no pinning to cores
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(request["kv_cache_gib"]))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def measure(request: dict) -> dict:
    """Load once, one untimed warm-up, then `repeats` timed LLM.generate calls over every prompt."""
    import vllm  # noqa: PLC0415 (after environment(): vLLM reads its settings at import)

    start = time.perf_counter()
    llm = vllm.LLM(model=request["model"], dtype=request["dtype"], max_model_len=request["max_model_len"],
                   enforce_eager=request["enforce_eager"], seed=0,
                   tensor_parallel_size=request["tensor_parallel_size"],
                   enable_prefix_caching=request["prefix_caching"])
    load_s = time.perf_counter() - start
    params = vllm.SamplingParams(temperature=0.0, max_tokens=request["max_new_tokens"],
                                 stop_token_ids=request["stop_token_ids"])
    prompts = [{"prompt_token_ids": ids} for ids in request["prompt_token_ids"]]
    warm = vllm.SamplingParams(temperature=0.0, max_tokens=4)
    llm.generate(prompts[:8], warm, use_tqdm=False)
    walls, outputs = [], None
    for _ in range(request["repeats"]):
        start = time.perf_counter()
        outputs = llm.generate(prompts, params, use_tqdm=False)
        walls.append(time.perf_counter() - start)
    return {"engine": "vllm", "vllm_version": vllm.__version__, "load_s": load_s, "wall_s_all": walls,
            "token_ids": [list(o.outputs[0].token_ids) for o in outputs]}


def main(request_path: str, result_path: str) -> int:
    """Read the request, measure, write the result; a Python without vLLM writes the error instead."""
    with open(request_path, encoding="utf-8") as handle:
        request = json.load(handle)
    environment(request)
    try:
        import vllm  # noqa: F401, PLC0415
    except ImportError as error:
        result, code = {"error": "no_vllm", "message": str(error)}, NO_VLLM
    else:
        result, code = measure(request), 0
    result["python"] = sys.executable
    with open(result_path, "w", encoding="utf-8") as handle:
        json.dump(result, handle)
    return code


if __name__ == "__main__":  # vLLM starts its engine with spawn: the guard keeps the children from re-running this
    sys.exit(main(sys.argv[1], sys.argv[2]))
