"""The folders show the architecture: imports point down only, assets hold data only, the public face imports."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mgpu_lab"
# what each layer may not import: launcher < engine < course < tools (tiny beside the course)
ABOVE = {"launcher": {"engine", "course", "tools", "tiny"}, "engine": {"course", "tools"}, "course": {"tools"},
         "tiny": {"course", "tools"}}


def imported_layers(path: Path) -> set[str]:
    """The mgpu_lab sub-packages a module imports, at its top or inside a function."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = module.split(".")[: len(module.split(".")) - node.level] if node.level else []
            target = ".".join([*base, node.module or ""]).strip(".").split(".")
            names = [target] if node.module else [[*target, alias.name] for alias in node.names]
            found |= {parts[1] for parts in names if len(parts) > 1 and parts[0] == "mgpu_lab"}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("mgpu_lab.")}
    return found


@pytest.mark.parametrize("layer", sorted(ABOVE))
def test_imports_point_down_only(layer):
    wrong = {str(p.relative_to(ROOT)): sorted(imported_layers(p) & ABOVE[layer])
             for p in (PACKAGE / layer).rglob("*.py")}
    assert not {k: v for k, v in wrong.items() if v}


def test_the_layer_check_sees_an_upward_import(tmp_path, monkeypatch):
    fake = tmp_path / "mgpu_lab" / "engine" / "bad.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("from ..course.report import format_summary\n\ndef f():\n    from ..tools import bench\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert imported_layers(fake) == {"course", "tools"}


def test_only_the_package_face_and_shared_leaves_sit_at_the_top():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "defaults.py", "files.py", "fork_safe.py", "paths.py"]
    assert sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__") == [
        "course", "engine", "launcher", "tiny", "tools"]


def test_assets_hold_data_not_scripts_or_records():
    assert not [p for p in (ROOT / "assets").rglob("*") if p.suffix in {".py", ".sh", ".ipynb"}]
    assert not (ROOT / "assets" / "gpu").exists() and not (ROOT / "assets" / "cpu").exists()


@pytest.mark.multiprocess
def test_the_public_face_imports_lazily_without_torch_first():
    code = ("import sys, mgpu_lab; assert 'mgpu_lab.engine.runner' not in sys.modules; "
            "from mgpu_lab import run, launch, load_model, load_prompts, default_prompts; "
            "print(run.__module__, launch.__module__, load_model.__module__, load_prompts.__module__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.stdout.split() == ["mgpu_lab.engine.runner", "mgpu_lab.launcher.launch", "mgpu_lab.engine.models",
                                   "mgpu_lab.engine.prompts"], done.stderr
