"""The scripts the lessons write on the page run as a learner runs them: torchrun, 2 CPU processes, no kit import."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mgpu_lab.engine.models import TINY
from mgpu_lab.engine.prompts import default_prompts
from mgpu_lab.engine.runner import run

pytestmark = pytest.mark.multiprocess
NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def written(name: str, script: str, which: int = -1) -> str:
    """The body of a %%writefile cell of a lesson (the last one for that file, unless `which` says)."""
    bodies = []
    for cell in json.loads((NOTEBOOKS / name).read_text())["cells"]:
        first, _, body = "".join(cell["source"]).partition("\n")
        if cell["cell_type"] == "code" and first == f"%%writefile {script}":
            bodies.append(body)
    return bodies[which]


def torchrun(folder: Path, script: str, body: str, *args: str, watch=None) -> str:
    """Write `body` as `script` in `folder`, run it under torchrun on 2 processes; return what each printed, by rank.

    With an exit watch, each rank must have left its process group when Python exits: a gloo thread still running
    then can abort it."""
    (folder / script).write_text(body)
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}  # no kit on the path
    env.update(watch.env if watch else {})  # only the exit watch on the path
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "--log-dir", "logs", "--redirects", "1", script, *args],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    printed = "".join(next((folder / "logs").glob(f"*/attempt_0/{rank}/stdout.log")).read_text() for rank in (0, 1))
    shutil.rmtree(folder / "logs")
    assert not watch or watch.threads_left() == {0: 0, 1: 0}, f"{script} left its process group's gloo threads running at exit"
    return printed


def test_the_articles_hello_makes_two_worlds_of_one_on_a_cpu_and_the_fix_makes_one_of_two(tmp_path, exit_watch):
    hello = "01_hello_processes.ipynb"
    alone = torchrun(tmp_path, "hello.py", written(hello, "hello.py", 0))  # the article's: runs no collective
    assert alone.splitlines() == ["['Hello this is GPU 0']"] * 2, alone
    fixed = torchrun(tmp_path, "hello.py", written(hello, "hello.py", -1), watch=exit_watch)
    assert fixed.splitlines() == ["['Hello this is GPU 0', 'Hello this is GPU 1']"]


def test_the_naive_and_batched_scripts_give_the_kits_completions(tmp_path, exit_watch):
    prompts = default_prompts(repeat=1)[:5]
    (tmp_path / "prompts.txt").write_text("\n".join(prompts) + "\n")
    naive = torchrun(tmp_path, "naive.py", written("02_naive_inference.ipynb", "naive.py"),
                     str(TINY), "prompts.txt", "12", "naive.json", watch=exit_watch)
    batched = torchrun(tmp_path, "batched.py", written("03_batched_inference.ipynb", "batched.py"),
                       str(TINY), "prompts.txt", "12", "2", "batched.json", watch=exit_watch)
    assert "prompts: 5" in naive and "prompts: 5" in batched
    kit = run("batched", "tiny", prompts, num_processes=1, max_new_tokens=12, batch_size=2, verbose=False,
              progress=False, cpu=True)
    rows = [[c.index, c.text, c.generated_tokens] for c in kit.results]
    for out in ("naive.json", "batched.json"):
        assert json.loads((tmp_path / out).read_text()) == rows


def test_the_articles_batched_script_as_the_lesson_changes_it_runs_and_exits_cleanly(tmp_path, exit_watch):
    printed = torchrun(tmp_path, "article_batched.py", written("03_batched_inference.ipynb", "article_batched.py"),
                       str(TINY), "2", watch=exit_watch)
    assert "num_tokens 200" in printed  # 100 prompts, 2 new tokens each (no EOS cut in the article's count)
    gathered = json.loads((tmp_path / "article_batched.json").read_text())
    assert sum(len(share["outputs"]) for share in gathered) == 100
