"""The main job's runner: the lessons it finds, the copies it makes, and a kernel that prints only the kit's lines."""

import os
import signal
import subprocess
import sys
import time

import nbformat
import pytest

from mgpu_lab.tools import lessons_runner
from mgpu_lab.tools.lessons_runner import check_targets, copy_lessons, lesson_notebooks, run_lessons, with_model

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


SLEEPER = """
import sys
from pathlib import Path
import nbformat
from mgpu_lab.tools import lessons_runner

folder = Path(sys.argv[1])
cell = ("import os, subprocess, time\\n"
        "child = subprocess.Popen(['sleep', '300'], start_new_session=True)  # outside the kernel's group\\n"
        f"open({str(folder / 'pids')!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\\n"
        "time.sleep(300)")
paths = [folder / f"0{n}_sleep.ipynb" for n in (1, 2)]
for path in paths:
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)]), path)
lessons_runner.lesson_notebooks = lambda: paths
from mgpu_lab.tools.cli import main
sys.argv[1:] = ["lessons", "--out", str(folder / "out")]
sys.exit(main())
"""


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_ctrl_c_ends_the_lessons_with_one_line_and_leaves_no_process(tmp_path):
    # Before: the interrupt became "FAIL 01_...: 'NoneType' object has no attribute 'cleanup_resources'", the next
    # lesson started, and the kernel and what it started kept running; SIGINT alone gave an IndexError and rc 1.
    runner = subprocess.Popen([sys.executable, "-c", SLEEPER, str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "pids").exists() or not (tmp_path / "pids").read_text():
            assert runner.poll() is None and time.monotonic() < deadline, runner.stderr.read()
            time.sleep(0.2)
        kernel, grandchild = map(int, (tmp_path / "pids").read_text().split())
        os.killpg(runner.pid, signal.SIGINT)  # what Ctrl-C at a terminal does: the foreground group gets it
        out, err = runner.communicate(timeout=10)
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
    assert runner.returncode == 130, err
    assert err.strip().splitlines() == [err.strip()] and err.startswith("interrupted: stopped 01_sleep.ipynb")
    assert "02_sleep" not in out + err and "Traceback" not in err
    time.sleep(0.5)
    assert not alive(kernel) and not alive(grandchild)


def test_lessons_never_overwrite_a_learners_notebook(tmp_path):
    room = tmp_path / "room"
    copy_lessons(room)  # `notebooks room`, then a learner edits lesson 1 there
    lesson = room / lesson_notebooks()[0].name
    lesson.write_text(lesson.read_text().replace('"cells": [', '"cells": [{"cell_type": "markdown", "id": "mine", '
                                                 '"metadata": {}, "source": "my notes"}, ', 1))
    before = lesson.read_bytes()
    with pytest.raises(ValueError, match=r"not the copy `lessons` wrote there .* Fix: .* --force"):
        run_lessons(room)  # before: it ran lesson 1 and wrote the fresh copy over the learner's
    assert lesson.read_bytes() == before
    check_targets(room, lesson_notebooks(), force=True)  # told to: allowed


def test_lessons_replace_only_their_own_unchanged_copies(tmp_path, monkeypatch):
    source = tmp_path / "01_one.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")]), source)
    monkeypatch.setattr(lessons_runner, "lesson_notebooks", lambda: [source])
    out = tmp_path / "out"
    assert run_lessons(out, timeout=120) == 0
    assert run_lessons(out, timeout=120) == 0  # its own copy, unchanged: replaced
    executed = out / source.name
    executed.write_text(executed.read_text().replace("42", "43"))  # a learner's edit of the saved copy
    with pytest.raises(ValueError, match="--force"):
        run_lessons(out, timeout=120)
    assert "43" in executed.read_text()


@pytest.mark.parametrize("call", [lambda file: run_lessons(file), lambda file: copy_lessons(file)])
def test_a_file_given_as_the_folder_is_named_as_one(tmp_path, call):
    # Before: `lessons --out FILE` printed seven "[Errno 17] File exists" lines; `notebooks FILE` said "could not
    # write FILE (File exists)".
    file = tmp_path / "FILE"
    file.write_text("mine")
    with pytest.raises(ValueError, match=r"FILE is a file, not a folder\. Fix:"):
        call(file)
    assert file.read_text() == "mine"
