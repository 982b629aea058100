"""The code being taught stays on the lesson pages, and the committed notebooks show the unsolved state."""

import json
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def code_of(*names: str) -> str:
    """The code cells of the named notebooks, joined."""
    return "\n".join("".join(cell["source"]) for name in names
                     for cell in json.loads((NOTEBOOKS / name).read_text())["cells"] if cell["cell_type"] == "code")


LESSONS_1_TO_3 = ("01_hello_processes.ipynb", "02_naive_inference.ipynb", "03_batched_inference.ipynb")


@pytest.mark.parametrize("call", ["notebook_launcher(", "Accelerator(", "split_between_processes(", ".generate(",
                                  "gather_object(", "pad_to_multiple_of", "def prepare_prompts_article(",
                                  "def prepare_prompts(", "add_special_tokens=False"])
def test_the_articles_code_is_on_the_pages(call):
    assert call in code_of(*LESSONS_1_TO_3)


@pytest.mark.parametrize("name", ["02_naive_inference.ipynb", "03_batched_inference.ipynb"])
def test_the_lessons_launch_their_own_program_with_args(name):
    assert "notebook_launcher(" in code_of(name) and "args=(MODEL" in code_of(name)


@pytest.mark.parametrize("line", ["accelerator.wait_for_everyone()", "start = time.time()", "time.time() - start",
                                  "gather_object([results])", "accelerator.is_main_process", "torch.bfloat16",
                                  "torch.float16", "write_pretty_json(", "json.loads("])
def test_lesson_2_writes_the_articles_benchmark_out(line):
    assert line in code_of("02_naive_inference.ipynb")


def test_lesson_2_runs_the_program_as_a_script_with_torchrun_and_shows_its_output():
    cells = json.loads((NOTEBOOKS / "02_naive_inference.ipynb").read_text())["cells"]
    runs = [cell for cell in cells if cell["cell_type"] == "code" and '"torchrun"' in "".join(cell["source"])]
    assert len(runs) == 1
    shown = "".join("".join(o.get("text", "")) for o in runs[0]["outputs"])
    assert "tokens/s:" in shown and "prompts: 100" in shown and "W1" not in shown  # the program's line, not torchrun's


def test_lesson_3_shows_the_wrong_code_not_a_flag_of_the_kit():
    code = code_of("03_batched_inference.ipynb")
    assert 'padding_side="right")' in code and "prepare_prompts_article(sample" in code
    assert "generate_batched(" not in code and "out[len(inp):]" in code


def test_one_cell_in_the_course_ignores_its_output():
    marked = [name.name for name in sorted(NOTEBOOKS.glob("*.ipynb"))
              for cell in json.loads(name.read_text())["cells"]
              if cell["cell_type"] == "code" and "NBVAL_IGNORE_OUTPUT" in "".join(cell["source"])]
    assert marked == ["01_hello_processes.ipynb"]


def test_predictions_and_exercises_are_committed_unsolved():
    code = code_of(*(path.name for path in sorted(NOTEBOOKS.glob("0*.ipynb"))))
    assert code.count("my_guess = None") >= 4
    assert code.count("raise NotImplementedError") == 6


@pytest.mark.parametrize("name", ["02_naive_inference.ipynb", "03_batched_inference.ipynb",
                                  "04_scaling_benchmark.ipynb", "05_beyond_static_batches.ipynb"])
def test_launched_runs_use_the_lessons_model_setting(name):
    code = code_of(name)
    assert code.count('MODEL = "tiny"') == 1
    assert 'run("' not in code.replace('run("naive", MODEL', "").replace('run("batched", MODEL', "")
