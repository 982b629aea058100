"""Lessons 2 and 3 run top to bottom with MODEL = "small" (a preset that is not a folder), not only with tiny."""

import nbformat
import pytest

from mgpu_lab.tools.lessons_runner import NOTEBOOKS, run_lesson, with_model

pytestmark = pytest.mark.multiprocess
NEW_TOKENS = 20  # small is 6x tiny's size: fewer tokens keep both lessons near two minutes on 2 cores


@pytest.mark.parametrize("name", ["02_naive_inference.ipynb", "03_batched_inference.ipynb"])
def test_lesson_runs_with_the_small_preset(name, tmp_path):
    copy = with_model(NOTEBOOKS / name, tmp_path / "in", "small", NEW_TOKENS)
    run_lesson(copy, tmp_path / "out", timeout=300)
    executed = nbformat.read(tmp_path / "out" / name, as_version=4)
    errors = [o for c in executed.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    assert "model: small" in "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
