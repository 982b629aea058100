"""The tested set: what requirements.txt installs, what the doctor compares against, and how it moves forward."""

import re
from pathlib import Path

from mgpu_lab.tools import doctor, versions

ROOT = Path(__file__).resolve().parents[2]


def test_requirements_install_the_kit_under_the_tested_set():
    lines = [line for line in (ROOT / "requirements.txt").read_text().splitlines() if line and line[0] != "#"]
    assert lines == ["-c mgpu_lab/tested.txt", "-e .[test]"]


def test_the_tested_set_pins_every_package_that_shapes_a_lesson_or_a_test():
    pinned = versions.tested_set()
    shaping = ["torch", "accelerate", "transformers", "tokenizers", "safetensors", "huggingface-hub", "nbval",
               "nbclient", "nbformat", "jupyterlab", "ipykernel", "ipywidgets", "matplotlib", "pytest", "setuptools",
               "tqdm", "numpy", "playwright"]
    assert [name for name in shaping if name not in pinned] == []
    assert all(re.fullmatch(r"\d+(\.\d+)*(\.post\d+)?", version) for version in pinned.values()), pinned


def test_the_tested_set_meets_every_floor():
    pinned = versions.tested_set()
    for package, floor in doctor.dependencies().items():
        assert doctor.release(pinned[versions.canonical(package)]) >= doctor.release(floor), package


def test_differences_name_the_installed_and_the_tested_version():
    pinned = {"accelerate": "1.16.0", "torch": "2.13.0", "nbval": "0.11.0"}
    present = {"accelerate": "1.17.0", "torch": "2.13.0", "other": "1.0"}
    assert versions.differences(pinned, present) == ["accelerate 1.17.0 (tested 1.16.0)"]
    assert versions.differences(pinned, {}) == []  # not installed is not drift: the doctor's package lines say it


def test_names_and_build_labels_compare_as_pip_compares_them():
    assert versions.canonical("Jupyter_Client") == versions.canonical("jupyter-client") == "jupyter-client"
    assert versions.public("2.13.0+cpu") == versions.public("2.13.0") == "2.13.0"


def test_this_environment_is_the_tested_set_or_the_doctor_says_how_it_differs(monkeypatch):
    """Passes on the tested set; when a package drifts the doctor notes it (not a failure) with the command back."""
    assert doctor.check_tested_set().line() == "PASS tested set every installed package is at its tested version" or \
        versions.differences(versions.tested_set(), versions.installed())
    present = {**versions.installed(), "accelerate": "9.0.0"}
    monkeypatch.setattr(versions, "installed", lambda: present)
    check = doctor.check_tested_set()
    assert check.ok and check.line().startswith("NOTE tested set ")
    assert "accelerate 9.0.0 (tested " in check.line()
    assert f"Fix: pip install -c {versions.tested_file()} " in check.line() and " accelerate" in check.fix


def test_freeze_writes_pins_that_read_back_as_the_same_set():
    text = versions.freeze({"accelerate": "1.16.0", "torch": "2.13.0"})
    assert 'accelerate==1.16.0; python_version >= "3.11"' in text.splitlines()
    pins = [line.split(";")[0] for line in text.splitlines() if line and not line.startswith("#")]
    assert pins == ["accelerate==1.16.0", "torch==2.13.0"]


def test_the_main_entry_exits_1_and_prints_the_fix_on_drift(monkeypatch, capsys):
    monkeypatch.setattr(versions, "installed", lambda: {**versions.tested_set(), "nbval": "0.1"})
    assert versions.main([]) == 1
    out = capsys.readouterr().out
    assert "nbval 0.1 (tested " in out and "pip install -c " in out
    monkeypatch.setattr(versions, "installed", versions.tested_set)
    assert versions.main([]) == 0
