"""A real package: a built wheel and an editable install both work from a folder outside the checkout.

Each install goes into a fresh venv under a temp folder that sees the packages of the Python running the tests (torch,
transformers, setuptools, ...: a venv's or the system's, whichever runs pytest) but not this checkout, so nothing is
downloaded and only the kit's own files come from the install.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.multiprocess
ROOT = Path(__file__).resolve().parents[2]
SKIP = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "results", "__pycache__", ".ipynb_checkpoints")


def run(*command, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a command outside the checkout, with no PYTHONPATH pointing back into it; fail with its output."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    return done


def venv(folder: Path) -> Path:
    """A fresh venv that sees the running Python's packages (pip and setuptools too: it gets none of its own).

    `venv --system-site-packages` would not do: made from inside a venv, it sees the *base* interpreter's packages.
    A .pth file lists the running environment's folders instead (as plain paths: its own .pth files, such as the
    editable install of this checkout, are not run).
    """
    run(sys.executable, "-m", "venv", "--without-pip", folder, cwd=folder.parent)
    python = folder / "bin" / "python"
    own = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=folder).stdout.strip()
    running = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (Path(own) / "running-environment.pth").write_text("".join(f"{path}\n" for path in running))
    return python


def pip_install(python: Path, *arguments) -> None:
    """This interpreter's pip installs into the venv of `python`, with no download and no build isolation."""
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-build-isolation", *arguments,
        cwd=python.parent)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A copy of the checkout, so building leaves no build/ or egg-info behind in it."""
    copy = tmp_path_factory.mktemp("source") / "mgpu-lab"
    shutil.copytree(ROOT, copy, ignore=SKIP)
    return copy


def test_wheel_runs_the_lessons_code_from_anywhere(source, tmp_path):
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", source,
        cwd=tmp_path)
    python = venv(tmp_path / "venv")
    wheel, = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "mgpu_lab/assets/models/tiny/model.safetensors" in names
    assert not [name for name in names if name.startswith(("mgpu_lab/assets/gpu/", "mgpu_lab/assets/cpu/"))]  # records
    pip_install(python, wheel)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = run(python, "-c", "import mgpu_lab.paths as p; print(p.TINY); print(p.NOTEBOOKS)", cwd=elsewhere).stdout
    assert all(str(tmp_path / "venv") in line for line in where.splitlines())
    requires = run(python, "-c", "from importlib.metadata import requires; print(requires('mgpu-lab'))", cwd=elsewhere)
    shipped = (ROOT / "mgpu_lab" / "dependencies.txt").read_text().splitlines()
    assert [line for line in shipped if line and not line.startswith("#")] == \
        [r for r in eval(requires.stdout) if "extra ==" not in r]
    hello = run(python, "-m", "mgpu_lab", "hello", "--num-processes", "2", cwd=elsewhere).stdout
    assert "Hello from process 1 of 2" in hello
    batched = run(python, "-m", "mgpu_lab", "batched", "--model", "tiny", "--max-new-tokens", "5", "--json",
                  cwd=elsewhere).stdout
    assert '"mode": "batched"' in batched and '"prompts": 100' in batched
    run(python, "-m", "mgpu_lab", "notebooks", elsewhere / "room", cwd=elsewhere)
    assert sorted(p.name for p in (elsewhere / "room").glob("*.ipynb"))[0] == "01_hello_processes.ipynb"


def test_editable_install_finds_the_top_level_folders(source, tmp_path):
    python = venv(tmp_path / "venv")
    pip_install(python, "-e", source)
    where = run(python, "-c", "import mgpu_lab.paths as p; print(p.TINY); print(p.NOTEBOOKS); print(p.WORD_LIST)",
                cwd=tmp_path).stdout.split()
    assert where == [str(source / "assets" / "models" / "tiny"), str(source / "notebooks"),
                     str(source / "assets" / "words" / "american-english.gz")]
