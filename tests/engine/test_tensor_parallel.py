"""Tensor parallelism beside data parallelism: replicas of TP ranks give one process's tokens, in order, holding less."""

import json

import pytest

from mgpu_lab.engine import tensor_parallel
from mgpu_lab.engine.prompts import default_prompts
from mgpu_lab.engine.runner import check_run, run, share_of_replica
from mgpu_lab.engine.tensor_parallel import Layout, check_tp

PROMPTS = default_prompts(repeat=1)[:5]  # odd: the two replicas of a 2 x TP 2 run get 3 and 2, so they step apart


def test_neighbouring_ranks_form_a_replica_and_only_its_first_rank_reports():
    layouts = [Layout.of(rank, 4, 2) for rank in range(4)]
    assert [(l.replica, l.tp_rank) for l in layouts] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [l.is_replica_lead for l in layouts] == [True, False, True, False]
    assert {l.replicas for l in layouts} == {2}


@pytest.mark.parametrize("count, replicas", [(0, 2), (1, 2), (5, 2), (10, 4), (100, 3), (7, 1)])
def test_each_replica_gets_a_contiguous_share_and_every_item_once(count, replicas):
    items = list(range(count))
    shares = [share_of_replica(items, Layout.of(r * 2, replicas * 2, 2)) for r in range(replicas)]
    assert [i for share in shares for i in share] == items
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


@pytest.mark.parametrize("model, processes, tp, message", [
    ("tiny", 3, 2, "3 process(es) cannot form replicas of tp_size=2 ranks. Fix: use a multiple of 2"),
    ("tiny", 3, 3, "tiny has 8 attention heads, which tp_size=3 does not divide. Fix: use a tp_size that divides 8"),
    ("shape:llama2-7b", 2, 2, "is built whole in memory. Fix: use tiny, small or a checkpoint folder"),
])
def test_bad_combinations_are_refused_naming_the_fix(model, processes, tp, message):
    with pytest.raises(ValueError, match="Fix:") as error:
        check_tp(model, processes, tp)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_model_without_a_tp_plan_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_head": 4, "n_embd": 64}))
    with pytest.raises(ValueError, match="has no tensor-parallel plan in transformers.*Fix: use tp_size=1"):
        check_tp(str(tmp_path), 2, 2)


def test_continuous_batching_refuses_several_replicas_but_not_one():
    with pytest.raises(ValueError, match="continuous batching cannot run 2 tensor-parallel replicas"):
        check_run("continuous", "tiny", PROMPTS, 4, 2)
    assert check_run("continuous", "tiny", PROMPTS, 2, 2)[0].prompts == tuple(PROMPTS)


def test_an_older_transformers_is_refused_with_the_release_to_install(monkeypatch):
    monkeypatch.setattr(tensor_parallel, "OPTIONS", {"tp_size"})  # as 5.17: TP, but no dp_replicate_size
    check_tp("tiny", 2, 2)
    with pytest.raises(ValueError, match=r"no dp_replicate_size\. Fix: pip install -U 'transformers>=5.24'"):
        check_tp("tiny", 4, 2)
    monkeypatch.setattr(tensor_parallel, "OPTIONS", set())  # as 5.4: no tp_size at all
    with pytest.raises(ValueError, match="cannot load tensor parallelism"):
        check_tp("tiny", 2, 2)


@pytest.fixture(scope="module")
def one_process():
    return run("naive", "tiny", PROMPTS, num_processes=1, max_new_tokens=8, cpu=True, verbose=False, progress=False)


@pytest.mark.multiprocess
@pytest.mark.parametrize("processes, tp, replicas", [(2, 2, 1), (4, 2, 2)])
def test_tp_and_dp_x_tp_give_one_process_tokens_holding_about_half(one_process, processes, tp, replicas):
    split = run("naive", "tiny", PROMPTS, num_processes=processes, tp_size=tp, max_new_tokens=8, cpu=True,
                verbose=False, progress=False)
    assert [c.token_ids for c in split.results] == [c.token_ids for c in one_process.results]
    assert [c.index for c in split.results] == list(range(len(PROMPTS)))
    assert (split.summary.tp_size, split.summary.replicas) == (tp, replicas)
    whole = one_process.per_process[0].parameter_bytes
    assert all(p.parameter_bytes <= 0.65 * whole for p in split.per_process)  # tiny's tied embedding stays whole
    assert [p.replica for p in split.per_process] == [rank // tp for rank in range(processes)]


@pytest.mark.multiprocess
def test_small_split_in_two_holds_at_most_six_tenths_per_process():
    kwargs = dict(max_new_tokens=6, cpu=True, verbose=False, progress=False)
    one = run("batched", "small", PROMPTS[:3], num_processes=1, **kwargs)
    split = run("batched", "small", PROMPTS[:3], num_processes=2, tp_size=2, **kwargs)
    assert [c.text for c in split.results] == [c.text for c in one.results]
    assert all(p.parameter_bytes <= 0.6 * one.per_process[0].parameter_bytes for p in split.per_process)
