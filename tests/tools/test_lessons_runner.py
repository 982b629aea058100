"""The main job's runner: the lessons it finds, the copies it makes, and a kernel that prints only the kit's lines."""

import subprocess
import sys

import nbformat
import pytest

from mgpu_lab.tools.lessons_runner import copy_lessons, lesson_notebooks, with_model

RUN_ONE = """
import sys
from pathlib import Path
import nbformat
from mgpu_lab.tools.lessons_runner import run_lesson

path, out = Path(sys.argv[1]) / "one.ipynb", Path(sys.argv[1]) / "out"
nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import os; print(os.getcwd())")]), path)
run_lesson(path, out, timeout=120)
print(nbformat.read(out / "one.ipynb", as_version=4).cells[0].outputs[0].text.strip())
"""


def test_lessons_in_order_then_appendices():
    names = [path.name for path in lesson_notebooks()]
    assert names[0].startswith("01_") and names[-1].startswith("A1_") and names == sorted(names[:-1]) + names[-1:]


def test_room_copies_hold_no_outputs_and_the_repository_keeps_its_own(tmp_path):
    copies = [c for c in copy_lessons(tmp_path) if c.suffix == ".ipynb"]
    for copy, source in zip(copies, lesson_notebooks()):
        room, saved = nbformat.read(copy, as_version=4), nbformat.read(source, as_version=4)
        code = [cell for cell in room.cells if cell.cell_type == "code"]
        assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code), copy.name
        assert all("execution" not in cell.metadata for cell in room.cells) and "widgets" not in room.metadata
        assert [cell.source for cell in room.cells] == [cell.source for cell in saved.cells]
    assert any(cell.get("outputs") for cell in nbformat.read(lesson_notebooks()[0], as_version=4).cells)


def test_copies_for_a_workshop_room_never_overwrite_work(tmp_path):
    copies = copy_lessons(tmp_path, solutions=True)
    assert [c.name for c in copies if c.suffix == ".ipynb"] == [p.name for p in lesson_notebooks()]
    assert (tmp_path / "solutions" / "solutions.py") in copies
    nbformat.read(copies[0], as_version=4)
    with pytest.raises(ValueError, match="already exists"):
        copy_lessons(tmp_path)


@pytest.mark.multiprocess
def test_a_lesson_runs_in_the_output_folder_and_prints_no_transport_warning(tmp_path):
    done = subprocess.run([sys.executable, "-c", RUN_ONE, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "out")  # the kernel ran in the output folder
    assert "without encryption" not in done.stderr and done.stderr == ""


def test_with_model_replaces_only_the_settings_lines(tmp_path):
    lesson = next(path for path in lesson_notebooks() if path.name.startswith("02_"))
    copy = with_model(lesson, tmp_path, "shape:llama2-7b", new_tokens=8)
    code = "\n".join(c.source for c in nbformat.read(copy, as_version=4).cells if c.cell_type == "code")
    assert 'MODEL = "tiny"' not in code and "MODEL = 'shape:llama2-7b'" in code and "NEW_TOKENS = 8" in code
    assert code.count("MODEL = ") == 1 and copy.parent == tmp_path
