"""`python -m mgpu_lab gpu-check`: one prepared run of doctor, lessons 1-3 and the benchmark on a real GPU.

Everything it measures lands in one folder (default records/gpu/<device>/) that can be committed as it is:
the doctor's lines, the executed lesson notebooks, the benchmark records, the batched-vs-one-by-one agreement
in each half precision, and summary.json / summary.md. The parent never touches CUDA: every GPU step runs in a
child process (a subprocess or a launch), so one failing step is recorded and the next one still runs.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..launcher.launch import count_gpus
from ..engine.results import RunSummary, first_difference
from ..files import refuse_to_replace
from ..paths import records_dir

LESSONS = ("01_hello_processes.ipynb", "02_naive_inference.ipynb", "03_batched_inference.ipynb")
BENCH_MODEL = "shape:llama2-7b"
SHAPE_LESSONS = LESSONS[1:]  # run again with MODEL = BENCH_MODEL: the page's programs on a 7B architecture
SHAPE_NEW_TOKENS = 8  # lesson 2 runs 100 prompts one by one three times: 8 tokens each keeps that near a minute
BENCH_PROMPTS = 64  # enough for one batch of 64; naive (one prompt at a time) dominates the time
BENCH_NEW_TOKENS = 32  # 64 x 32 one-by-one steps of a 7B model fit the 8-minute budget with room to spare
AGREEMENT_NEW_TOKENS = 48
AGREEMENT_DTYPES = ("float32", "bfloat16", "float16")  # fp16 stands in for a T4 (compute capability 7.5)
PEER_MODEL = "small"  # vLLM reads a model folder; a shape preset has none (its random weights are built in memory)
TP_MODEL = "small"  # a checkpoint (a shape preset is built whole in each process and cannot be split)
BUDGET_S = 8 * 60  # the whole check; a step gets at most its own limit and what is left of this


@dataclass(frozen=True)
class Step:
    """One command of the check, the file its output goes to, and the most it may take."""

    name: str
    argv: tuple[str, ...]
    log: str
    timeout_s: int

    def shell(self) -> str:
        """The command as a learner would type it."""
        return shlex.join(self.argv) + f"  > {self.log}"


def plan(out: Path, gpus: int = 1, peer_python: str | None = None) -> list[Step]:
    """The steps of the check, most valuable first (a GPU lease may end early), writing into `out`.

    With 2 GPUs or more, a tensor-parallel step: 2 DP processes against one replica of TP 2 (records in out/tp).
    decode-paths: eager generate against the kit's own loop and its static cache with one compiled step, at the
    bench's batch sizes (records in out/decode-paths). With `peer_python` (a Python with vLLM), the same modes
    beside vLLM on a model folder (records in out/vllm).
    """
    py = (sys.executable, "-m", "mgpu_lab")
    bench = (*py, "bench", "--model", BENCH_MODEL, "--num-processes", "1",
             "--modes", "naive,batched,budget,continuous", "--batch-sizes", "16,64",
             "--max-new-tokens", str(BENCH_NEW_TOKENS), "--prompts", str(out / "prompts.txt"),
             "--prompt-set", f"article-{BENCH_PROMPTS}", "--repeats", "1", "--out", str(out), "--json")
    tp = (*py, "bench", "--model", TP_MODEL, "--modes", "batched", "--num-processes", "2", "--tp-sizes", "1,2",
          "--max-new-tokens", str(BENCH_NEW_TOKENS), "--repeats", "1", "--out", str(out / "tp"), "--json")
    paths = (*py, "bench", "--model", BENCH_MODEL, "--num-processes", "1", "--modes", "batched,compiled",
             "--batch-sizes", "16,64", "--max-new-tokens", str(BENCH_NEW_TOKENS), "--prompts", str(out / "prompts.txt"),
             "--prompt-set", f"article-{BENCH_PROMPTS}", "--repeats", "1", "--out", str(out / "decode-paths"), "--json")
    peer = (*py, "bench", "--model", PEER_MODEL, "--num-processes", "1", "--modes", "batched,lean,compiled",
            "--batch-sizes", "64", "--max-new-tokens", str(BENCH_NEW_TOKENS), "--repeats", "1",
            "--peer-python", str(peer_python), "--out", str(out / "vllm"), "--json")
    return [
        Step("doctor", (*py, "doctor"), "doctor.txt", 60),
        Step("bench", bench, "bench.txt", 210),
        Step("decode-paths", paths, "decode-paths.txt", 240),
        *([Step("vllm", peer, "vllm.txt", 240)] if peer_python else []),
        Step("agreement", (*py, "gpu-check", "--step", "agreement", "--out", str(out)), "agreement.txt", 90),
        *([Step("tp", tp, "tp.txt", 90)] if gpus >= 2 else []),
        # H200, second session: 115 s with lesson 3's launches failing early; running them whole takes longer,
        # and lessons 2-3 with the shape preset more (not yet measured on a GPU)
        Step("lessons", (*py, "gpu-check", "--step", "lessons", "--out", str(out)), "lessons.txt", 420),
    ]


def run_steps(steps: list[Step], out: Path, budget_s: float = BUDGET_S) -> list[dict]:
    """Run the steps in order, each within its own limit and what is left of `budget_s`; skip those left none."""
    deadline = time.perf_counter() + budget_s
    return [run_step(step, out, min(step.timeout_s, deadline - time.perf_counter())) for step in steps]


def run_step(step: Step, out: Path, timeout_s: float) -> dict:
    """Run one step as a subprocess, its output to its log; return its name, exit code and seconds."""
    start = time.perf_counter()
    code = "skipped: no time left"
    if timeout_s >= 1:
        with (out / step.log).open("w") as log:
            try:  # a killed lessons step takes its kernel along: ipykernel exits when its parent is gone
                code = subprocess.run(step.argv, stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s).returncode
            except subprocess.TimeoutExpired:
                code = "timeout"
    seconds = round(time.perf_counter() - start, 1)
    print(f"{'ok  ' if code == 0 else 'FAIL'} {step.name} ({seconds} s, exit {code})", flush=True)
    return {"step": step.name, "exit": code, "seconds": seconds}


def device_folder(root: Path) -> Path:
    """root/<gpu name as a folder name>, from nvidia-smi (CUDA is never initialised here)."""
    name = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                          text=True).stdout.splitlines()[0]
    return root / re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def run_lessons_on_gpu(out: Path) -> int:
    """Execute lessons 1-3, then 2-3 with MODEL = the shape preset (cells that fail keep their error in the copy)."""
    from .lessons_runner import NOTEBOOKS, run_lesson, with_model

    runs = [(NOTEBOOKS / name, out / "lessons") for name in LESSONS]
    shape = out / "lessons-shape"
    runs += [(with_model(NOTEBOOKS / name, shape, BENCH_MODEL, SHAPE_NEW_TOKENS), shape) for name in SHAPE_LESSONS]
    for path, folder in runs:
        seconds = run_lesson(path, folder, timeout=300, allow_errors=True)
        errors = notebook_errors(folder / path.name)
        print(f"{folder.name}/{path.name}: {seconds:.0f} s, {len(errors)} cell(s) with an error", *errors,
              sep="\n  ", flush=True)
    return 0


def notebook_errors(path: Path) -> list[str]:
    """'ename: evalue' of every error output in an executed notebook."""
    cells = json.loads(path.read_text())["cells"]
    return [f"{o['ename']}: {o['evalue'][:300]}" for c in cells for o in c.get("outputs", [])
            if o.get("output_type") == "error"]


def agreement_on_this_process(prompts: list[str], max_new_tokens: int, dtypes: tuple[str, ...]) -> dict:
    """In a launched process: the dtype the kit picks here, and batched vs one-by-one agreement in each dtype."""
    import torch
    from accelerate import Accelerator

    from ..engine.generate import generate_batched, generate_naive
    from ..engine.models import load_model, pick_dtype

    device = Accelerator().device
    found = {"device": str(device), "picked_dtype": str(pick_dtype(device)).removeprefix("torch.")}
    if device.type == "cuda":
        found["compute_capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
    for name in dtypes:
        model, tokenizer = load_model("tiny", device, getattr(torch, name))
        one = generate_naive(model, tokenizer, prompts, max_new_tokens)
        batched = generate_batched(model, tokenizer, prompts, max_new_tokens, batch_size=16)
        found[name] = compare(one, batched)
    return found


def compare(reference: list, other: list) -> dict:
    """How many completions are token-identical, and after how many tokens the others diverge."""
    diverge = [first_difference(a.token_ids, b.token_ids) for a, b in zip(reference, other)]
    differing = sorted(d for d in diverge if d is not None)
    return {"prompts": len(reference), "identical": len(reference) - len(differing), "diverge_at": differing}


def agreement_prompts() -> list[str]:
    """The article's ten distinct first lines, then short prompts from the varied set (all fit tiny's context)."""
    from ..engine.prompts import default_prompts, load_prompts
    from ..paths import PROMPTS

    varied, _ = load_prompts(PROMPTS / "varied.txt")
    return list(dict.fromkeys(default_prompts())) + [p for p in varied if len(p.split()) < 40][:30]


def run_agreement(out: Path) -> int:
    """Measure agreement in one launched process on the GPU and write agreement.json."""
    from ..launcher.launch import launch

    found = launch(agreement_on_this_process, (agreement_prompts(), AGREEMENT_NEW_TOKENS, AGREEMENT_DTYPES),
                   num_processes=1, verbose=False)
    (out / "agreement.json").write_text(json.dumps(found, indent=1) + "\n")
    print(json.dumps(found, indent=1))
    return 0


def decode_step_seconds(model, tokenizer, prompts: list[str], new_tokens: int, static_cache: bool) -> float:
    """Median seconds per decode step of one `generate` call, timed at every step; a first call warms it up."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    from ..engine.generate import padded_batch

    class StepClock(StoppingCriteria):
        """Never stops generation; notes the time at the end of each step, after the GPU finished it."""

        def __init__(self):
            self.times: list[float] = []

        def __call__(self, input_ids, scores, **kwargs):
            if input_ids.is_cuda:
                torch.cuda.synchronize()
            self.times.append(time.perf_counter())
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    batch = padded_batch(tokenizer, prompts, model.device)
    extra = {"cache_implementation": "static"} if static_cache else {}
    for clock in (StepClock(), StepClock()):  # the same shapes twice: the first call compiles, if anything does
        model.generate(**batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                       pad_token_id=tokenizer.pad_token_id, stopping_criteria=StoppingCriteriaList([clock]),
                       **extra)
    steps = [b - a for a, b in zip(clock.times, clock.times[1:])]
    return sorted(steps)[len(steps) // 2]


def decode_probe_on_this_process(model_name: str, batches: tuple[int, ...], new_tokens: int,
                                 ways: tuple[str, ...]) -> dict:
    """In a launched process: tokens/s and roofline fraction of one decode step, eager and static+compile."""
    from accelerate import Accelerator

    from .bench import device_name
    from ..engine.models import load_model
    from ..engine.prompts import default_prompts
    from ..course.roofline import bandwidth_for, tokens_per_s_bound

    device = Accelerator().device
    model, tokenizer = load_model(model_name, device)
    name = device_name(device)
    found = {"model": model_name, "dtype": str(model.dtype).removeprefix("torch."), "device_name": name}
    for batch in batches:
        prompts = (default_prompts() * batch)[:batch]
        for way in ways:
            step = decode_step_seconds(model, tokenizer, prompts, new_tokens, static_cache=way == "static+compile")
            bandwidth = bandwidth_for(name)
            bound = tokens_per_s_bound(bandwidth, model.num_parameters() * model.dtype.itemsize, batch) \
                if bandwidth else None
            found[f"{way} batch {batch}"] = {"decode_step_ms": round(step * 1e3, 2),
                                              "tokens_per_s": round(batch / step, 1),
                                              "roofline_fraction": round(batch / step / bound, 3) if bound else None}
    return found


def run_decode_probe(out: Path) -> int:
    """Where the time of one decode step goes: eager generate vs static cache + torch.compile (decode_probe.json)."""
    from ..launcher.launch import launch

    found = launch(decode_probe_on_this_process, (BENCH_MODEL, (16, 64), 48, ("eager", "static+compile")),
                   num_processes=1, verbose=False)
    (out / "decode_probe.json").write_text(json.dumps(found, indent=1) + "\n")
    print(json.dumps(found, indent=1))
    return 0


def summarize(out: Path, steps: list[dict], wall_s: float) -> dict:
    """summary.json and summary.md from the records and agreement the steps left in `out`."""
    records_file, agreement_file = out / "records.jsonl", out / "agreement.json"
    records = [json.loads(line) for line in records_file.read_text().splitlines()] if records_file.exists() else []
    paths = [r for name in ("decode-paths", "vllm") if (out / name / "records.jsonl").exists()
             for r in json.loads("[" + ",".join((out / name / "records.jsonl").read_text().splitlines()) + "]")]
    agreement = json.loads(agreement_file.read_text()) if agreement_file.exists() else {}
    summary = {"steps": steps, "wall_s": round(wall_s, 1), "agreement": agreement,
               "bench": [{k: r.get(k) for k in ("mode", "batch_size", "token_budget", "dtype", "device",
                                                "tokens_per_s", "wall_s", "roofline_fraction", "padding_ratio")}
                         for r in records], "ratios": ratios(records), "decode_paths": decode_paths(paths)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "summary.md").write_text(summary_markdown(summary))
    return summary


def ratios(records: list[dict]) -> dict:
    """From one run's records: batched(16)/naive, and the best new mode over input-order batches of 16 and over
    input-order batches of the size nearest its own mean batch (a bigger batch alone would also be faster)."""
    runs = [RunSummary.from_record(r) for r in records]
    speed = {(s.mode, s.batch_size): s.tokens_per_s for s in runs}
    naive, batched16 = speed.get(("naive", None)), speed.get(("batched", 16))
    new = {s.mode: s for s in runs if s.mode not in ("naive", "batched")}
    found = {}
    if naive and batched16:
        found["batched16_over_naive"] = round(batched16 / naive, 2)
    if new and batched16:
        best = max(new.values(), key=lambda s: s.tokens_per_s)
        sizes = [size for mode, size in speed if mode == "batched"]
        nearest = min(sizes, key=lambda size: abs(size - (best.mean_batch_size or 16)))
        found |= {"best_new_mode": best.mode, "best_new_over_batched16": round(best.tokens_per_s / batched16, 2),
                  "nearest_batch_size": nearest,
                  "best_new_over_batched_nearest": round(best.tokens_per_s / speed["batched", nearest], 2)}
    return found


def decode_paths(records: list[dict]) -> list[dict]:
    """Each mode of the decode-paths and vllm steps: tokens/s, roofline fraction, over eager batches, over vLLM."""
    eager = {(r["model"], r["batch_size"]): r["tokens_per_s"] for r in records if r["mode"] == "batched"}
    peer = {r["model"]: r["tokens_per_s"] for r in records if r.get("engine") == "vllm"}
    return [{"model": r["model"], "mode": r["mode"], "batch": r["batch_size"] or r["token_budget"],
             "tokens_per_s": r["tokens_per_s"], "roofline_fraction": r.get("roofline_fraction"),
             "x_eager": round(r["tokens_per_s"] / eager[r["model"], r["batch_size"]], 2)
             if (r["model"], r["batch_size"]) in eager else None,
             "x_vllm": round(r["tokens_per_s"] / peer[r["model"]], 2) if r["model"] in peer else None}
            for r in records]


def summary_markdown(summary: dict) -> str:
    """The summary as a short Markdown page."""
    lines = ["# gpu-check", "", f"Total wall time: {summary['wall_s']} s", "", "| step | exit | seconds |",
             "|---|---|---|", *[f"| {s['step']} | {s['exit']} | {s['seconds']} |" for s in summary["steps"]], "",
             "| mode | batch | dtype | tokens/s | roofline fraction | padding/real |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['mode']} | {r['batch_size'] or r['token_budget'] or '-'} | {r['dtype']} | {r['tokens_per_s']} "
              f"| {r['roofline_fraction']} | {r['padding_ratio']} |" for r in summary["bench"]]
    lines += ["", "Ratios: " + json.dumps(summary["ratios"]), "", "Agreement: " + json.dumps(summary["agreement"])]
    lines += ["", "| decode path | model | batch | tokens/s | roofline fraction | x eager | x vLLM |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['mode']} | {r['model']} | {r['batch']} | {r['tokens_per_s']} | {r['roofline_fraction']} "
              f"| {r['x_eager']} | {r['x_vllm']} |" for r in summary.get("decode_paths", [])]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    """The gpu-check command: say so and stop without a GPU, print the plan on --dry-run, else run it all."""
    if args.step:
        steps = {"lessons": run_lessons_on_gpu, "agreement": run_agreement, "decode-probe": run_decode_probe}
        if not args.out:
            print(f"error: --step {args.step} needs --out DIR (the folder it writes into).")
            return 2
        Path(args.out).mkdir(parents=True, exist_ok=True)
        return steps[args.step](Path(args.out))
    gpus = count_gpus()
    gpu_records = records_dir() / "gpu"
    out = Path(args.out) if args.out else (device_folder(gpu_records) if gpus else gpu_records / "<gpu>")
    steps = plan(out, gpus, args.peer_python)
    if args.dry_run or not gpus:
        if not gpus:
            print("No GPU found: gpu-check needs a CUDA GPU and did nothing." +
                  ("" if args.dry_run else " Add --dry-run to see what it would run."))
        if args.dry_run:
            print(f"Would write into {out}/ (first the {BENCH_PROMPTS} prompts as prompts.txt):")
            print(*(f"  [{s.name}, at most {s.timeout_s} s] {s.shell()}" for s in steps), sep="\n")
            if gpus < 2:
                print(f"  (the tp step, 2 DP processes against TP 2, is skipped: it needs 2 GPUs, this machine has "
                      f"{gpus})")
            print(f"The whole check stops after {BUDGET_S} s: a step gets at most its own limit and what is left.")
        return 0
    refuse_to_replace(sorted(out.iterdir()) if out.is_dir() else [], args.force)  # an earlier run's records
    out.mkdir(parents=True, exist_ok=True)
    from ..engine.prompts import default_prompts

    (out / "prompts.txt").write_text("\n".join((default_prompts() * 2)[:BENCH_PROMPTS]) + "\n")
    start = time.perf_counter()
    results = run_steps(steps, out)
    summary = summarize(out, results, time.perf_counter() - start)
    print(summary_markdown(summary))
    return 0 if all(r["exit"] == 0 for r in results) else 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the gpu-check command."""
    parser.add_argument("--dry-run", action="store_true", help="print the commands it would run, run nothing")
    parser.add_argument("--out", help="folder for everything measured (default: records/gpu/<gpu name>)")
    parser.add_argument("--force", action="store_true", help="replace the records an earlier run left in --out")
    parser.add_argument("--peer-python", help="a Python with vLLM: measure the kit's decode paths beside it "
                        "(on the small preset's folder)")
    parser.add_argument("--step", choices=("lessons", "agreement", "decode-probe"),
                        help="run one step alone into --out; decode-probe (eager vs static cache + torch.compile, "
                             "about 2 minutes on an H200) is not part of the default run")
