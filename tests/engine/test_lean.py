"""The kit's own greedy loops (engine/lean.py): token for token what `generate` gives, one prompt at a time, in fp32."""

from dataclasses import replace

import pytest

from mgpu_lab.engine.generate import Work, generate_naive
from mgpu_lab.engine.lean import PREFILL_SLACK, CompiledStep, lean_decode, static_decode, tight_groups
from mgpu_lab.engine.modes import MODES
from mgpu_lab.engine.prompts import default_prompts
from mgpu_lab.engine.runner import generate_with_mode

pytestmark = pytest.mark.slow  # seconds of generation on tiny; the compiled step's test, tens of seconds more

PROMPTS = default_prompts(repeat=2)  # 20 prompts of different lengths
NEW_TOKENS = 24


@pytest.fixture(scope="module")
def naive(tiny):
    model, tokenizer = tiny
    return generate_naive(model, tokenizer, PROMPTS, NEW_TOKENS)


def decoded(tiny, decoder, size=8, force_length=False, prompts=PROMPTS, new=NEW_TOKENS):
    """Length-sorted batches of `size` (the sorted mode's), each decoded by `decoder`; in prompt order."""
    model, tokenizer = tiny
    work = Work.of(tokenizer, prompts, new, force_length=force_length)
    done, _, _ = generate_with_mode(model, tokenizer, work, replace(MODES["sorted"], decoder=decoder), size)
    return sorted(done, key=lambda c: c.index)


def test_naive_stops_some_rows_early_so_rows_leave_the_batch(naive):
    assert 0 < sum(c.stop_reason == "eos" for c in naive) < len(naive)  # else the tests below prove less


@pytest.mark.parametrize("decoder", [lean_decode, static_decode])
def test_the_own_loops_equal_naive_token_for_token(tiny, naive, decoder):
    out = decoded(tiny, decoder)
    assert [c.token_ids for c in out] == [c.token_ids for c in naive]
    assert [c.stop_reason for c in out] == [c.stop_reason for c in naive]


@pytest.mark.parametrize("decoder", [lean_decode, static_decode])
def test_forced_length_never_stops_at_eos(tiny, decoder):
    model, tokenizer = tiny
    reference, _, _ = generate_with_mode(model, tokenizer, Work.of(tokenizer, PROMPTS[:4], 30, force_length=True),
                                         MODES["naive"], 1)
    out = decoded(tiny, decoder, force_length=True, prompts=PROMPTS[:4], new=30)
    assert all(c.generated_tokens == 30 for c in out)
    assert [c.token_ids for c in out] == [c.token_ids for c in reference]


def test_one_compiled_step_equals_eager_and_serves_batches_of_other_widths(tiny, naive):
    model, _ = tiny
    step = CompiledStep(model)  # inductor, as on a GPU; compiled once (tens of seconds on 2 cores)

    def compiled(*args):
        return static_decode(*args, step=step)

    out = decoded(tiny, compiled, size=10)  # two batches of 10 rows, of different widths
    assert [c.token_ids for c in out] == [c.token_ids for c in naive]


def test_prefill_groups_hold_every_row_once_and_pad_under_the_slack():
    import random

    lengths = [random.randint(1, 900) for _ in range(300)]
    groups = tight_groups(lengths)
    assert sorted(row for group in groups for row in group) == list(range(300))
    assert 1 < len(groups) < 300
    for group in groups:
        width, real = max(lengths[row] for row in group), sum(lengths[row] for row in group)
        assert len(group) * width <= (1 + PREFILL_SLACK) * real


def test_lean_prefills_a_batch_of_mixed_lengths_in_groups_and_still_equals_naive(tiny):
    model, tokenizer = tiny
    prompts = [*PROMPTS[:6], *(" ".join(PROMPTS[i:i + k]) for i, k in [(0, 2), (2, 5), (5, 9)])]  # up to ~8x longer
    lengths = [len(ids) for ids in Work.of(tokenizer, prompts, NEW_TOKENS).ids]
    assert len(tight_groups(lengths)) > 2  # the one batch below is prefilled in several groups
    prompts = prompts[::2] + prompts[1::2]  # rows not in length order: groups are put back in the batch's order
    work = Work.of(tokenizer, prompts, NEW_TOKENS)
    reference, _, _ = generate_with_mode(model, tokenizer, work, MODES["naive"], 1)
    out, _, _ = generate_with_mode(model, tokenizer, work, replace(MODES["batched"], decoder=lean_decode), len(prompts))
    assert [c.token_ids for c in sorted(out, key=lambda c: c.index)] == \
        [c.token_ids for c in sorted(reference, key=lambda c: c.index)]
