"""The code being taught stays on the lesson pages, and the committed notebooks show the unsolved state."""

import ast
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


def written_files(name: str) -> dict[str, str]:
    """The files a lesson writes with %%writefile, by name, each as the last cell that wrote it leaves it."""
    files = {}
    for cell in json.loads((NOTEBOOKS / name).read_text())["cells"]:
        first, _, body = "".join(cell["source"]).partition("\n")
        if cell["cell_type"] == "code" and first.startswith("%%writefile "):
            files[first.split()[1]] = body
    return files


@pytest.mark.parametrize("name, script", [("01_hello_processes.ipynb", "hello.py"),
                                          ("02_naive_inference.ipynb", "naive.py"),
                                          ("03_batched_inference.ipynb", "batched.py"),
                                          ("03_batched_inference.ipynb", "article_batched.py")])
def test_the_articles_programs_are_files_on_the_page_launched_by_torchrun(name, script):
    """The learner's own scripts: written on the page, no kit import, started from a cell as from a terminal."""
    body = written_files(name)[script]
    assert "mgpu_lab" not in body
    launches = [cell for cell in json.loads((NOTEBOOKS / name).read_text())["cells"] if cell["cell_type"] == "code"
                and "torch.distributed.run" in "".join(cell["source"])]
    assert launches and script in code_of(name).split("%%writefile " + script)[-1]


def test_lesson_1_writes_the_articles_hello_as_it_is_then_fixes_it():
    cells = [("".join(c["source"])) for c in json.loads((NOTEBOOKS / "01_hello_processes.ipynb").read_text())["cells"]]
    versions = [text for text in cells if text.startswith("%%writefile hello.py")]
    assert len(versions) == 2
    assert "accelerator = Accelerator()\n" in versions[0] and "Hello this is GPU" in versions[0]
    assert "Accelerator(cpu=not torch.cuda.is_available())" in versions[1]


def functions(code: str) -> dict[str, str]:
    """Each top-level function of some code, by name, as source text."""
    tree = ast.parse(code)
    return {node.name: ast.get_source_segment(code, node) for node in tree.body if isinstance(node, ast.FunctionDef)}


@pytest.mark.parametrize("name, script, same", [
    ("02_naive_inference.ipynb", "naive.py", ["pick_dtype", "complete", "write_pretty_json", "naive_program"]),
    ("03_batched_inference.ipynb", "batched.py", ["prepare_prompts", "continue_batch", "write_pretty_json"]),
])
def test_the_script_has_the_pages_functions_word_for_word(name, script, same):
    cells = [c for c in json.loads((NOTEBOOKS / name).read_text())["cells"] if c["cell_type"] == "code"]
    page = {}
    for cell in cells:
        text = "".join(cell["source"])
        if not text.startswith("%%"):
            page.update(functions(text))
    in_file = functions(written_files(name)[script])
    for function in same:
        assert in_file[function] == page[function], function


def test_lesson_3s_script_differs_from_its_page_only_in_how_it_loads():
    cells = [c for c in json.loads((NOTEBOOKS / "03_batched_inference.ipynb").read_text())["cells"]]
    page = {}
    for cell in cells:
        text = "".join(cell["source"])
        if cell["cell_type"] == "code" and not text.startswith("%%"):
            page.update(functions(text))
    in_file = functions(written_files("03_batched_inference.ipynb")["batched.py"])["batched_program"]
    on_page = page["batched_program"].replace(
        "load_model(model_name, accelerator.device)  # lesson 2's load()", "load(model_name, accelerator.device)")
    assert in_file == on_page


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
    kit_runs = code.replace('torchrun("', "")  # the learner's scripts, launched by torchrun, take the model folder
    assert 'run("' not in kit_runs.replace('run("naive", MODEL', "").replace('run("batched", MODEL', "")
    assert "model_folder(MODEL)" in code or name not in ("02_naive_inference.ipynb", "03_batched_inference.ipynb")
