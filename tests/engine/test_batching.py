"""Lesson 5's batching strategies: every prompt once, order restored, same greedy tokens, less padding."""

import pytest

from mgpu_lab.engine.batching import balanced_shares, budget_batches, fixed_batches, sorted_batches
from mgpu_lab.engine.budget import saturating_rows, token_budget_for
from mgpu_lab.engine.runner import generate_with_mode, run
from mgpu_lab.engine.modes import MODES, mode_names
from mgpu_lab.engine.generate import Work, generate_naive, prompt_lengths
from mgpu_lab.engine.prompts import VARIED, build_varied, default_prompts, varied_prompts


def test_varied_set_is_what_the_repo_generates():
    prompts = varied_prompts()
    assert prompts == build_varied() and len(prompts) == 200
    assert VARIED.read_text(encoding="utf-8") == "\n".join(prompts) + "\n"


def test_varied_set_spans_a_few_to_several_hundred_tokens(tiny):
    _, tokenizer = tiny
    lengths = prompt_lengths(tokenizer, varied_prompts())
    assert min(lengths) < 10 and max(lengths) > 500


def covers_once(batches, count):
    return sorted(p for batch in batches for p in batch) == list(range(count))


def test_fixed_and_sorted_batches_cover_every_position_once():
    lengths = [5, 1, 9, 3, 7, 2, 8]
    assert fixed_batches(7, 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert sorted_batches(lengths, 3) == [[1, 5, 3], [0, 4, 6], [2]]


def test_budget_batches_respect_the_budget():
    lengths = [10, 200, 30, 20, 400, 15]
    batches = budget_batches(lengths, max_new_tokens=50, budget=300)
    assert covers_once(batches, len(lengths))
    for batch in batches:
        width = max(lengths[p] for p in batch) + 50
        assert len(batch) * width <= 300 or len(batch) == 1  # a prompt over the budget runs alone
    assert [4] in batches


def test_balanced_split_evens_the_cost():
    costs = [100, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10]
    shares = balanced_shares(costs, 2)
    assert covers_once(shares, len(costs))
    loads = [sum(costs[p] for p in share) for share in shares]
    assert loads == [100, 100]  # a count-based split would give 150 and 50
    assert balanced_shares([], 3) == [[], [], []]


@pytest.fixture(scope="module")
def short_varied(tiny):
    _, tokenizer = tiny
    return [p for p in varied_prompts() if len(tokenizer(p).input_ids) <= 120][:24]


def by_mode(tiny, mode, prompts, max_new_tokens, knob):
    """Generate in this process as `mode` groups the prompts (MODES: the one way into every mode), in input order."""
    model, tokenizer = tiny
    done, _, _ = generate_with_mode(model, tokenizer, Work.of(tokenizer, prompts, max_new_tokens), MODES[mode], knob)
    return sorted(done, key=lambda c: c.index)


@pytest.fixture(scope="module")
def reference(tiny, short_varied):
    model, tokenizer = tiny
    return generate_naive(model, tokenizer, short_varied, 10)


@pytest.mark.slow
def test_sorted_and_budget_equal_naive_in_input_order(tiny, short_varied, reference):
    for out in (by_mode(tiny, "sorted", short_varied, 10, 5), by_mode(tiny, "budget", short_varied, 10, 600)):
        assert [c.index for c in out] == list(range(len(short_varied)))
        assert [c.token_ids for c in out] == [c.token_ids for c in reference]


@pytest.mark.slow
def test_sorting_cuts_padding_waste(tiny, short_varied):
    model, tokenizer = tiny
    from mgpu_lab.engine.generate import generate_batched

    def waste(out):
        return sum(c.padded_tokens for c in out) / sum(c.prompt_tokens + c.generated_tokens for c in out)

    in_order = waste(generate_batched(model, tokenizer, short_varied, 4, 8))
    assert waste(by_mode(tiny, "sorted", short_varied, 4, 8)) < in_order / 2


@pytest.mark.slow
def test_continuous_batching_matches_naive_on_the_bundled_model(tiny, short_varied, reference):
    model, _ = tiny
    out = by_mode(tiny, "continuous", short_varied, 10, 2048)
    assert [c.index for c in out] == list(range(len(short_varied)))
    same = sum(a.token_ids == b.token_ids for a, b in zip(out, reference))
    assert same == len(short_varied)  # paged kernels could differ in the last bits; here they do not
    assert all(c.padded_tokens == 0 for c in out)
    assert model.config._attn_implementation != "paged|sdpa"  # the model is left as it was


@pytest.mark.parametrize("mode", ["sorted", "budget", "balanced", "lean", "continuous"])
@pytest.mark.multiprocess
def test_every_mode_gives_one_result_per_prompt_in_order(mode, reference, short_varied):
    result = run(mode, "tiny", short_varied, num_processes=3, max_new_tokens=10, batch_size=4,
                 token_budget=600, verbose=False)
    assert [c.prompt for c in result.results] == short_varied
    assert [c.token_ids for c in result.results] == [c.token_ids for c in reference]
    real = sum(c.prompt_tokens + c.generated_tokens for c in result.results)
    assert result.summary.padding_ratio == round(sum(c.padded_tokens for c in result.results) / real, 3)
    assert (result.summary.padding_ratio == 0) == (mode == "continuous")  # only the scheduler pads nothing


def test_mode_names_list_every_mode():
    assert mode_names() == ["naive", "batched", "sorted", "budget", "balanced", "lean", "compiled",
                            "continuous"]


@pytest.mark.multiprocess
def test_balanced_mode_splits_by_tokens():
    prompts = ["word " * 100] + ["hi"] * 9
    result = run("balanced", "tiny", prompts, num_processes=2, max_new_tokens=2, verbose=False)
    assert [p.prompts for p in result.per_process] == [1, 9]
    assert [c.prompt for c in result.results] == prompts


@pytest.mark.multiprocess
def test_default_prompts_keep_working_with_new_modes():
    result = run("budget", "tiny", default_prompts(repeat=1), num_processes=2, max_new_tokens=3, verbose=False)
    assert len(result.results) == 10


def test_the_budget_rule_is_rows_of_a_median_prompt(tiny):
    model, _ = tiny
    assert token_budget_for(32, [10, 70, 200], 20) == 32 * (70 + 20)
    assert saturating_rows(model) in [2**k for k in range(11)]


@pytest.mark.multiprocess
def test_budget_modes_without_a_budget_record_the_one_the_rule_chose():
    result = run("budget", "tiny", ["a short prompt"] * 4, num_processes=2, max_new_tokens=2, verbose=False)
    assert result.summary.knob == "token_budget" and result.summary.token_budget >= 1
