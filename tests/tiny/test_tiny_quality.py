"""The committed tiny model writes English: the four quality figures on the 100 default prompts."""

import pytest

from mgpu_lab.tiny.quality import distinct_ngrams, is_real_word, dictionary, measure_model, real_word_share


@pytest.fixture(scope="module")
def figures():
    return measure_model("tiny", max_new_tokens=100, batch_size=16)


@pytest.mark.slow
def test_mostly_real_words(figures):
    assert figures.real_words >= 0.85


@pytest.mark.slow
def test_often_stops_at_eos(figures):
    assert figures.stopped_at_eos >= 0.20


@pytest.mark.slow
def test_rarely_stops_at_once(figures):
    assert figures.under_5_tokens <= 0.10


@pytest.mark.slow
def test_does_not_loop(figures):
    assert figures.distinct_3grams >= 0.50


def test_word_rules():
    known = dictionary()
    assert is_real_word("emma's", known) and is_real_word("honour", known) and is_real_word("sisters'", known)
    assert not is_real_word("oafay", known)
    assert real_word_share(["The lady's good-humoured sister, qzxv!"]) == pytest.approx(5 / 6)
    assert distinct_ngrams(["a b c a b c"]) == pytest.approx(3 / 4)
