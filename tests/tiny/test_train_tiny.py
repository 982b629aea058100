"""Smoke tests for `train-tiny`: a few steps on a small injected corpus, and the step-driven lr schedule."""

import argparse
import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from mgpu_lab.tiny import train as train_tiny
from mgpu_lab.tiny.corpus import make_documents

PARAGRAPHS = [
    f"Miss Bennet walked to the village on day {i}. The weather was fine and the lane was dry. "
    f"She met Mr. Darcy near the church. He bowed, and said nothing at all. She smiled at him."
    for i in range(60)
]


def _args(tmp_path, steps: int = 3) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    train_tiny.add_arguments(parser)
    return parser.parse_args(["--out", str(tmp_path / "tiny"), "--steps", str(steps), "--max-docs", "100",
                              "--plot", str(tmp_path / "loss.png"), "--no-quality"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("train")
    assert train_tiny.run(_args(tmp_path), documents=make_documents(PARAGRAPHS)) == 0
    return tmp_path


@pytest.mark.slow
def test_folder_loads_like_llama2(trained):
    model = AutoModelForCausalLM.from_pretrained(trained / "tiny")
    tokenizer = AutoTokenizer.from_pretrained(trained / "tiny")
    assert type(model).__name__ == "LlamaForCausalLM"
    ids = tokenizer("She smiled.")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and tokenizer.eos_token == "</s>"
    assert tokenizer.pad_token is None and tokenizer.padding_side == "right"
    assert tokenizer.decode(ids, skip_special_tokens=True) == "She smiled."
    config = json.loads((trained / "tiny" / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"


@pytest.mark.slow
def test_log_card_and_plot(trained):
    log = json.loads((trained / "tiny" / "training_log.json").read_text())
    assert log["steps"] == 3 and len(log["losses"]) == 3 and log["heldout"][-1]["step"] == 3
    assert "Austen" in log["corpus"] and "public domain" in log["licence"]
    assert "train-tiny --out assets/models/tiny" in (trained / "tiny" / "README.md").read_text()
    assert (trained / "loss.png").stat().st_size > 0


@pytest.mark.slow
def test_training_is_repeatable(trained, tmp_path):
    train_tiny.run(_args(tmp_path), documents=make_documents(PARAGRAPHS))
    first, again = (json.loads((p / "tiny" / "training_log.json").read_text()) for p in (trained, tmp_path))
    assert first["losses"] == again["losses"]


def test_documents_hold_two_or_more_sentences():
    docs = make_documents(PARAGRAPHS)
    assert docs and all(doc.count(".") - doc.count("Mr.") >= 2 for doc in docs)


def test_lr_schedule_follows_the_step_count():
    cfg = train_tiny.TinyConfig(steps=200, warmup_steps=20, lr=1e-3, min_lr_ratio=0.1)
    schedule = [train_tiny.lr_at(step, cfg) for step in range(cfg.steps)]
    halfway = cfg.warmup_steps + (cfg.steps - cfg.warmup_steps) // 2  # cosine at half way: the mean of lr and min
    assert schedule[halfway] == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert schedule[0] == pytest.approx(5e-5) and max(schedule) == pytest.approx(1e-3)
    assert schedule[cfg.warmup_steps - 1] == max(schedule)
    assert schedule[-1] == pytest.approx(1e-4, rel=1e-3)
    assert all(a >= b for a, b in zip(schedule[cfg.warmup_steps:], schedule[cfg.warmup_steps + 1:]))
