"""One process's generation: batched equals naive, BOS is kept, tokens are counted honestly."""

import pytest

from mgpu_lab.engine.generate import Work, count_until_eos, generate_batched, generate_naive, padded_batch
from mgpu_lab.engine.modes import MODES
from mgpu_lab.engine.runner import generate_with_mode
from mgpu_lab.engine.prompts import default_prompts

PROMPTS = default_prompts(repeat=2)  # 20 prompts of different lengths
NEW_TOKENS = 24


@pytest.fixture(scope="module")
def naive(tiny):
    model, tokenizer = tiny
    return generate_naive(model, tokenizer, PROMPTS, NEW_TOKENS)


@pytest.mark.parametrize("batch_size", [1, 3, 16])
@pytest.mark.slow
def test_batched_equals_naive_token_for_token(tiny, naive, batch_size):
    model, tokenizer = tiny
    batched = generate_batched(model, tokenizer, PROMPTS, NEW_TOKENS, batch_size)
    assert [c.index for c in batched] == list(range(len(PROMPTS)))
    assert [c.token_ids for c in batched] == [c.token_ids for c in naive]
    assert [c.text for c in batched] == [c.text for c in naive]


def test_batch_keeps_bos_and_pads_left(tiny):
    _, tokenizer = tiny
    batch = padded_batch(tokenizer, ["Hi", "A much longer prompt than the first one"])
    first_real = batch["attention_mask"][0].tolist().index(1)
    assert batch["input_ids"][0, first_real] == tokenizer.bos_token_id
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][0, -1] == 1


def test_article_tokenization_drops_bos(tiny):
    _, tokenizer = tiny
    batch = padded_batch(tokenizer, ["Hi there"], add_special_tokens=False)
    assert tokenizer.bos_token_id not in batch["input_ids"][0].tolist()


@pytest.mark.slow
def test_right_padding_changes_the_output(tiny, naive):
    model, tokenizer = tiny
    right = generate_batched(model, tokenizer, PROMPTS, NEW_TOKENS, 16, padding_side="right")
    assert [c.token_ids for c in right] != [c.token_ids for c in naive]


def test_counts_stop_at_the_first_eos():
    assert count_until_eos([5, 6, 2, 2, 2], {2}) == (3, "eos")
    assert count_until_eos([5, 6, 7], {2}) == (3, "length")
    assert count_until_eos([2, 9], {2}) == (1, "eos")


@pytest.mark.slow
def test_completions_hold_no_padding(tiny, naive):
    model, tokenizer = tiny
    for c in generate_batched(model, tokenizer, PROMPTS, NEW_TOKENS, 16):
        assert c.generated_tokens == len(c.token_ids) <= NEW_TOKENS
        assert tokenizer.eos_token_id not in c.token_ids[:-1]
        assert (c.stop_reason == "eos") == (c.token_ids[-1] == tokenizer.eos_token_id)
        assert c.prompt_tokens == len(tokenizer(c.prompt).input_ids)


def test_forced_length_generates_every_token(tiny):
    model, tokenizer = tiny
    out = generate_with_mode(model, tokenizer, Work.of(tokenizer, PROMPTS[:4], 8, force_length=True), MODES["batched"],
                             16)[0]
    assert all(c.generated_tokens == 8 and c.stop_reason == "length" for c in out)


@pytest.mark.parametrize("prompts, new_tokens, batch_size, message", [
    (["fine", "  "], 4, 2, r"prompts\[1\] is empty"),
    (["word " * 400], 4, 2, "Prompt 0 has .* tokens"),
    (["fine"], 0, 2, "max_new_tokens must be >= 1"),
    (["fine"], 4, 0, "batch_size must be >= 1"),
])
def test_bad_input_is_named(tiny, prompts, new_tokens, batch_size, message):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match=message):
        generate_batched(model, tokenizer, prompts, new_tokens, batch_size)


def test_padding_leaves_the_callers_tokenizer_as_it_was(tiny):
    model, tokenizer = tiny
    assert tokenizer.pad_token is None  # Llama tokenizers have none
    batch = padded_batch(tokenizer, ["Hi", "A longer prompt"])
    assert batch["input_ids"][0, 0] == tokenizer.eos_token_id  # padded with EOS, which the mask hides
    generate_batched(model, tokenizer, PROMPTS[:3], 2)
    assert tokenizer.pad_token is None
