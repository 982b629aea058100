"""Lesson 5's last section: where a decode step's time goes, and the kit beside vLLM from committed records."""

import json

from mgpu_lab.course.roofline import format_step_time
from mgpu_lab.tools import versus
from mgpu_lab.tools.bench import save_records

PROBE = {"model": "m", "dtype": "bfloat16", "device_name": "GPU",
         "eager batch 16": {"decode_step_ms": 40.0, "tokens_per_s": 400.0, "roofline_fraction": 0.05},
         "static+compile batch 16": {"decode_step_ms": 8.0, "tokens_per_s": 2000.0, "roofline_fraction": 0.25}}


def test_a_step_splits_into_the_weight_read_and_the_rest():
    text = format_step_time(PROBE, model_bytes=2 * 10**9, bandwidth_gbs=1000)  # 2 ms to read the weights
    assert "takes 2.0 ms per step" in text
    assert "eager batch 16             40.0 ms a step: weights 2.0 ms, the rest  38.0 ms (95%)" in text
    assert "the rest   6.0 ms (75%); 25% of the bound" in text


def record(engine, mode, tokens_per_s, padding=0.0):
    return {"engine": engine, "mode": mode, "model": "tiny", "prompts": 100, "max_new_tokens": 100,
            "num_processes": 2, "tokens_per_s": tokens_per_s, "padding_ratio": padding,
            **({"vllm_agreement": {"identical": 100, "prompts": 100, "first_difference": None}}
               if engine == "mgpu_lab" else {})}


def test_without_vllm_the_committed_records_are_shown(tmp_path, monkeypatch):
    monkeypatch.setenv("MGPU_LAB_VLLM_PYTHON", str(tmp_path / "none"))
    monkeypatch.setattr(versus, "records_dir", lambda: tmp_path)
    save_records([record("vllm", "vllm", 200.0), record("mgpu_lab", "sorted", 150.0, 0.35),
                  record("mgpu_lab", "lean", 250.0, 0.38)], tmp_path / "cpu" / "vllm-side-by-side" / "article")
    workloads = versus.side_by_side()
    assert list(workloads) == ["article"]  # the varied workload has no records here
    text = versus.format_versus(workloads)
    assert "vLLM 200 tokens/s" in text and "kit's best: lean 250 tokens/s = 1.25x vLLM, padding 0.38" in text
    assert "identical on 100 of 100 prompts" in text and "sorted    150 tokens/s = 0.75x" in text


def test_an_install_without_records_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("MGPU_LAB_VLLM_PYTHON", str(tmp_path / "none"))
    monkeypatch.setattr(versus, "records_dir", lambda: tmp_path)
    assert versus.format_versus(versus.side_by_side()) == "No side-by-side records in this install (a wheel ships none)."


def test_the_h200_probe_the_lesson_reads_is_committed():
    from mgpu_lab.paths import records_dir

    folder = records_dir() / "gpu" / "nvidia-h200" / "session-2"
    probe = json.loads((folder / "decode_probe.json").read_text())
    assert {"eager batch 16", "static+compile batch 16"} <= probe.keys()
    assert json.loads((folder / "gpu-check" / "records.jsonl").read_text().splitlines()[0])["model_bytes"] > 10**10
