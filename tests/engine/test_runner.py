"""Data parallelism: every prompt gets exactly one result, in order, whatever the number of processes."""

import os

import pytest
from accelerate import Accelerator
from accelerate.utils import gather_object

from mgpu_lab.engine import models, runner
from mgpu_lab.engine.runner import in_prompt_order, run, share_of_replica
from mgpu_lab.engine.generate import generate_naive
from mgpu_lab.engine.results import Completion
from mgpu_lab.launcher.launch import LaunchError, launch
from mgpu_lab.engine.prompts import default_prompts
from mgpu_lab.engine.tensor_parallel import Layout


def gathered_shares(count: int) -> list:
    """Each rank's share of `count` items, gathered: what share_of_replica hands out, checked equal to accelerate's."""
    accelerator = Accelerator()
    items = list(enumerate(range(count)))
    mine = share_of_replica(items, Layout.of(accelerator.process_index, accelerator.num_processes, 1))
    with accelerator.split_between_processes(items) as theirs:
        assert mine == theirs
    return gather_object([[i for i, _ in mine]])


@pytest.mark.parametrize("count, processes", [(0, 2), (1, 2), (2, 3), (10, 4), (100, 3), (7, 1)])
@pytest.mark.multiprocess
def test_split_gives_every_item_once(count, processes):
    shares = launch(gathered_shares, (count,), num_processes=processes, verbose=False)
    assert len(shares) == processes
    assert sorted(i for share in shares for i in share) == list(range(count))


def completion(index: int) -> Completion:
    return Completion(index, "p", "t", [1], 1, 1, "length")


def test_order_is_restored_and_checked():
    assert [c.index for c in in_prompt_order([completion(2), completion(0), completion(1)], [0, 1, 2])] == [0, 1, 2]
    with pytest.raises(RuntimeError, match="missing or doubled"):
        in_prompt_order([completion(0), completion(0), completion(2)], [0, 1, 2])


PROMPTS = default_prompts(repeat=1) + ["A last, odd prompt."]  # 11: uneven over 2 and 3 processes


@pytest.fixture(scope="module")
def reference(tiny):
    model, tokenizer = tiny
    return [c.token_ids for c in generate_naive(model, tokenizer, PROMPTS, 12)]


@pytest.mark.parametrize("mode", ["naive", "batched"])
@pytest.mark.parametrize("processes", [1, 2, 3])
@pytest.mark.multiprocess
def test_same_results_in_same_order_for_1_2_3_processes(reference, mode, processes):
    result = run(mode, "tiny", PROMPTS, num_processes=processes, max_new_tokens=12, batch_size=3, verbose=False)
    assert [c.prompt for c in result.results] == PROMPTS
    assert [c.token_ids for c in result.results] == reference
    summary = result.summary
    assert summary.num_processes == processes and summary.prompts == len(PROMPTS)
    assert summary.generated_tokens == sum(len(ids) for ids in reference)
    assert summary.tokens_per_s == pytest.approx(summary.generated_tokens / summary.wall_s, rel=1e-3)
    assert sum(p.prompts for p in result.per_process) == len(PROMPTS)


@pytest.mark.multiprocess
def test_more_processes_than_prompts_leaves_some_idle():
    result = run("batched", "tiny", PROMPTS[:2], num_processes=3, max_new_tokens=4, verbose=False)
    assert [c.prompt for c in result.results] == PROMPTS[:2]
    assert [p.prompts for p in result.per_process] == [1, 1, 0]


@pytest.mark.multiprocess
def test_empty_prompt_list_gives_an_empty_result():
    result = run("naive", "tiny", [], num_processes=2, max_new_tokens=4, verbose=False)
    assert result.results == [] and result.summary.generated_tokens == 0


@pytest.mark.multiprocess
def test_error_in_a_process_names_the_global_prompt_index():
    with pytest.raises(LaunchError, match="Prompt 10 has .* tokens"):
        run("naive", "tiny", PROMPTS[:10] + ["word " * 300], num_processes=2, max_new_tokens=4, verbose=False)


def test_an_empty_prompt_fails_before_launch():
    with pytest.raises(ValueError, match=r"prompts\[10\] is empty"):
        run("naive", "tiny", PROMPTS[:10] + [""], num_processes=2, max_new_tokens=4, verbose=False)


def test_unknown_mode_fails_before_launch():
    with pytest.raises(ValueError, match="Known modes: naive, batched"):
        run("speculative", "tiny", PROMPTS)


@pytest.mark.multiprocess
def test_the_json_summary_keeps_the_names_it_had_as_a_dict():
    # the command line's --json printed these keys, in this order, before the summary became a dataclass
    # (tp_size and replicas joined them with tensor parallelism, partial_dropped with the resume checks)
    names = ["mode", "model", "dtype", "device", "num_processes", "tp_size", "replicas", "knob", "batch_size", "token_budget",
             "mean_batch_size", "max_new_tokens", "prompts", "reused", "partial_dropped", "prompt_tokens", "generated_tokens",
             "stopped_at_eos", "padded_tokens", "padding_ratio", "wall_s", "tokens_per_s"]
    result = run("batched", "tiny", PROMPTS[:3], num_processes=1, max_new_tokens=3, verbose=False)
    summary = result.to_dict()["summary"]
    assert list(summary) == names
    assert summary["prompts"] == 3 and summary["knob"] == "batch_size" and summary["token_budget"] is None


def test_a_run_checks_its_model_once_and_gathers_once(tmp_path, monkeypatch):
    """In the launching process the model is checked once; each process gathers once; no digest without a file."""
    calls = tmp_path / "calls"

    def counted(name, function):
        def wrapper(*args, **kwargs):
            with open(calls, "a") as log:  # one line a call, from whichever process makes it
                log.write(f"{name} {os.getpid()}\n")
            return function(*args, **kwargs)
        return wrapper

    check = counted("check_model", models.check_model)
    monkeypatch.setattr(models, "check_model", check)
    monkeypatch.setattr(runner, "check_model", check)
    monkeypatch.setattr(models, "_sha256", counted("sha256", models._sha256))
    monkeypatch.setattr(runner, "gather_object", counted("gather_object", runner.gather_object))
    result = run("batched", "tiny", PROMPTS[:4], num_processes=2, max_new_tokens=2, verbose=False, progress=False)
    assert [c.prompt for c in result.results] == PROMPTS[:4]
    lines = [line.split() for line in calls.read_text().splitlines()]
    assert sorted(name for name, _ in lines) == ["check_model", "gather_object", "gather_object"]  # no sha256
    assert [pid for name, pid in lines if name == "check_model"] == [str(os.getpid())]  # here, before the launch
    assert len({pid for name, pid in lines if name == "gather_object"}) == 2  # once in each process
