"""Shared fixtures: the bundled tiny model, loaded once per test session."""

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer) of the bundled tiny preset, fp32 on CPU."""
    from mgpu_lab.engine.models import load_model

    return load_model("tiny")
