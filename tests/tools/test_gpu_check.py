"""gpu-check: says so and exits 0 without a GPU, prints its exact plan, and its pieces measure what they claim."""

import json
import sys
import time

import pytest

from mgpu_lab.engine import continuous
from mgpu_lab.tools import gpu_check
from mgpu_lab.engine.generate import Work
from mgpu_lab.engine.results import Completion
from mgpu_lab.launcher.launch import launch


def test_without_a_gpu_it_says_so_in_one_line_and_exits_0(cli_in_process):
    done = cli_in_process("gpu-check")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == [
        "No GPU found: gpu-check needs a CUDA GPU and did nothing. Add --dry-run to see what it would run."]


def test_one_step_needs_a_folder_and_makes_it(tmp_path, monkeypatch, capsys):
    args = gpu_check.argparse.Namespace(step="decode-probe", out=None, dry_run=False)
    assert gpu_check.run(args) == 2
    assert capsys.readouterr().out == "error: --step decode-probe needs --out DIR (the folder it writes into).\n"
    monkeypatch.setattr(gpu_check, "run_decode_probe", lambda out: int(not out.is_dir()))
    args.out = str(tmp_path / "not" / "there")
    assert gpu_check.run(args) == 0  # the GPU run lost its probe to a folder nobody had made


def test_dry_run_prints_every_step_with_its_command(cli_in_process, tmp_path):
    done = cli_in_process("gpu-check", "--dry-run", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    steps = [line for line in done.stdout.splitlines() if line.startswith("  [")]
    assert [line.split(",")[0] for line in steps] == ["  [doctor", "  [bench", "  [decode-paths", "  [agreement",
                                                      "  [lessons"]
    assert "--modes batched,compiled --batch-sizes 16,64" in done.stdout
    assert "--model shape:llama2-7b --num-processes 1 --modes naive,batched,budget,continuous" in done.stdout
    assert "--batch-sizes 16,64" in done.stdout
    assert "The whole check stops after 480 s" in done.stdout  # the 8-minute budget
    assert not any(tmp_path.iterdir())  # a dry run writes nothing
    assert "the tp step, 2 DP processes against TP 2, is skipped: it needs 2 GPUs, this machine has 0" in done.stdout


def test_dry_run_on_two_gpus_adds_the_tensor_parallel_step(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gpu_check, "count_gpus", lambda: 2)
    args = gpu_check.argparse.Namespace(step=None, out=str(tmp_path), dry_run=True, peer_python="/venv/bin/python")
    assert gpu_check.run(args) == 0
    out = capsys.readouterr().out
    assert "  [tp, at most 90 s]" in out and "--num-processes 2 --tp-sizes 1,2" in out and "skipped" not in out
    assert "  [vllm, at most 240 s]" in out and "--peer-python /venv/bin/python" in out
    assert not any(tmp_path.iterdir())


def python_step(name: str, code: str, limit_s: int) -> gpu_check.Step:
    """A step that runs a few lines of Python."""
    return gpu_check.Step(name, (sys.executable, "-c", code), f"{name}.txt", limit_s)


@pytest.mark.multiprocess
def test_steps_share_one_budget_and_a_late_one_is_skipped(tmp_path):
    steps = [python_step("quick", "print('done')", 60), python_step("slow", "import time; time.sleep(60)", 60),
             python_step("late", "print('never')", 60)]
    start = time.perf_counter()
    found = gpu_check.run_steps(steps, tmp_path, budget_s=4)
    assert [r["exit"] for r in found] == [0, "timeout", "skipped: no time left"]
    assert time.perf_counter() - start < 4 + 1  # the budget, and the moment it takes to kill the slow step
    assert (tmp_path / "quick.txt").read_text() == "done\n" and not (tmp_path / "late.txt").exists()


def test_first_difference_and_compare():
    assert gpu_check.first_difference([1, 2, 3], [1, 2, 3]) is None
    assert gpu_check.first_difference([1, 2, 3], [1, 5, 3]) == 1
    assert gpu_check.first_difference([1, 2], [1, 2, 3]) == 2
    done = [Completion(i, "p", "t", ids, 1, len(ids), "length") for i, ids in enumerate([[1, 2], [3, 4]])]
    other = [Completion(0, "p", "t", [1, 2], 1, 2, "length"), Completion(1, "p", "t", [3, 9], 1, 2, "length")]
    assert gpu_check.compare(done, other) == {"prompts": 2, "identical": 1, "diverge_at": [1]}


@pytest.mark.multiprocess
def test_agreement_in_fp32_on_cpu_is_exact():
    prompts = gpu_check.agreement_prompts()
    assert len(prompts) == len(set(prompts)) >= 20  # distinct prompts: repeats would inflate the count
    found = launch(gpu_check.agreement_on_this_process, (prompts[:6], 8, ("float32",)), num_processes=1,
                   verbose=False)
    assert found["device"] == "cpu" and found["picked_dtype"] == "float32"
    assert found["float32"] == {"prompts": 6, "identical": 6, "diverge_at": []}


def test_summary_ratios_from_records(tmp_path):
    rows = [("naive", None, 10.0, 1), ("batched", 16, 100.0, 16), ("batched", 64, 150.0, 64),
            ("budget", None, 120.0, 50.0)]  # budget's batches held 50 prompts on average: nearer 64 than 16
    records = [{"mode": m, "batch_size": b, "token_budget": None, "dtype": "bfloat16", "device": "cuda",
                "tokens_per_s": t, "wall_s": 1.0, "roofline_fraction": 0.1, "padding_ratio": 0.0,
                "mean_batch_size": mean} for m, b, t, mean in rows]
    (tmp_path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = gpu_check.summarize(tmp_path, [{"step": "bench", "exit": 0, "seconds": 1.0}], 2.0)
    assert summary["ratios"] == {"batched16_over_naive": 10.0, "best_new_mode": "budget",
                                 "best_new_over_batched16": 1.2, "nearest_batch_size": 64,
                                 "best_new_over_batched_nearest": 0.8}
    assert "| budget | - | bfloat16 | 120.0 |" in (tmp_path / "summary.md").read_text()


def test_continuous_config_names_the_page_size_as_the_installed_transformers_does(monkeypatch):
    class OlderConfig:  # transformers 5.17's signature: `block_size`, no `page_size`
        def __init__(self, block_size=256, num_blocks=None, max_batch_tokens=None):
            self.block_size, self.num_blocks, self.max_batch_tokens = block_size, num_blocks, max_batch_tokens

    monkeypatch.setattr(continuous, "ContinuousBatchingConfig", OlderConfig)
    work = Work([(0, "short"), (1, "long")], [[1] * 10, [1] * 300], max_new_tokens=20)
    config = continuous.cache_config(work, token_budget=64)
    assert (config.block_size, config.num_blocks, config.max_batch_tokens) == (256, 4, 300)


def test_decode_step_is_timed_per_step_on_cpu(tiny):
    model, tokenizer = tiny
    step = gpu_check.decode_step_seconds(model, tokenizer, ["Hello there", "A longer prompt than that"], 6,
                                         static_cache=False)
    assert 0 < step < 5


@pytest.mark.multiprocess
def test_decode_probe_reports_every_batch_and_way():
    found = launch(gpu_check.decode_probe_on_this_process, ("tiny", (2,), 4, ("eager",)), num_processes=1,
                   verbose=False)
    assert found["model"] == "tiny" and found["dtype"] == "float32"
    assert found["eager batch 2"]["tokens_per_s"] > 0 and found["eager batch 2"]["roofline_fraction"] is None


def test_a_request_the_scheduler_failed_is_an_error_not_a_result(tiny, monkeypatch):
    """transformers' scheduler hands back failed requests as finished outputs carrying an error; none may pass."""
    from transformers.generation.continuous_batching import continuous_api

    def broken_step(self, model):
        raise RuntimeError("a step that fails")

    monkeypatch.setattr(continuous_api.ContinuousBatchProcessor, "_generation_step", broken_step)
    model, tokenizer = tiny
    with pytest.raises(RuntimeError, match="scheduler failed a request: .*a step that fails"):
        continuous.continuous_items(model, tokenizer, Work.of(tokenizer, ["Hello there", "Another prompt"], 4), 256)


def test_an_earlier_runs_records_are_not_replaced_unless_forced(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "count_gpus", lambda: 1)
    (tmp_path / "summary.md").write_text("an earlier run")
    args = gpu_check.argparse.Namespace(step=None, out=str(tmp_path), dry_run=False, force=False,
                                        peer_python=None)
    with pytest.raises(ValueError, match=r"summary.md already exists.*--force"):
        gpu_check.run(args)
    assert [p.name for p in tmp_path.iterdir()] == ["summary.md"]


def test_decode_paths_are_ratios_to_eager_at_the_same_batch_and_to_vllm():
    kit = {"model": "small", "token_budget": None, "roofline_fraction": 0.2}
    records = [{**kit, "mode": "batched", "batch_size": 64, "tokens_per_s": 100.0},
               {**kit, "mode": "compiled", "batch_size": 64, "tokens_per_s": 250.0},
               {**kit, "mode": "compiled", "batch_size": 16, "tokens_per_s": 80.0},
               {**kit, "mode": "vllm", "engine": "vllm", "batch_size": None, "tokens_per_s": 200.0}]
    rows = gpu_check.decode_paths(records)
    assert [(r["x_eager"], r["x_vllm"]) for r in rows] == [(1.0, 0.5), (2.5, 1.25), (None, 0.4), (None, 1.0)]
