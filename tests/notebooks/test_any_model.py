"""Lesson 3 runs top to bottom with MODEL = "small" (a preset that is not a folder), not only with tiny.

Lesson 3 launches both the page's batched program and the kit's naive and batched runs with MODEL; nbval runs
every lesson with tiny."""

import nbformat
import pytest

from mgpu_lab.tools.lessons_runner import NOTEBOOKS, run_lesson, with_model

pytestmark = pytest.mark.notebook
LESSON = "03_batched_inference.ipynb"
NEW_TOKENS = 8  # small is 6x tiny's size: what is checked here is that every cell runs with it, not its text


def test_lesson_runs_with_the_small_preset(tmp_path):
    copy = with_model(NOTEBOOKS / LESSON, tmp_path / "in", "small", NEW_TOKENS)
    run_lesson(copy, tmp_path / "out", timeout=300)
    executed = nbformat.read(tmp_path / "out" / LESSON, as_version=4)
    errors = [o for c in executed.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    assert "model: small" in "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
