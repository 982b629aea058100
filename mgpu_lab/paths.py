"""Where the kit's files are: the data it ships (assets, notebooks), the cache it builds presets into, and the
folders its tools write to (results/, and in a checkout records/ for measurements worth committing).

In a checkout (or an editable install) the data folders sit at the top of the repository, beside
`mgpu_lab/`; a wheel or `pip install .` ships them inside the package as `mgpu_lab/assets` and
`mgpu_lab/notebooks` (pyproject.toml maps them there). Every module asks here, never `__file__`.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path


def data_root(name: str) -> Path:
    """A data folder the kit ships: inside the installed package, else beside it at the top of a checkout."""
    package = Path(str(resources.files("mgpu_lab")))
    shipped = package / name
    return shipped if shipped.is_dir() else package.parent / name


def checkout() -> Path | None:
    """The top of the repository when the kit runs from a checkout (or an editable install), else None."""
    top = Path(str(resources.files("mgpu_lab"))).parent
    return top if (top / "pyproject.toml").is_file() and (top / "notebooks").is_dir() else None


def results_dir() -> Path:
    """Where the tools write by default: $MGPU_LAB_RESULTS, else results/ of a checkout, else ~/mgpu_lab-results."""
    top = checkout()
    return Path(os.environ.get("MGPU_LAB_RESULTS") or (top / "results" if top else Path.home() / "mgpu_lab-results"))


def records_dir() -> Path:
    """Measurements worth committing (gpu-check): records/ of a checkout, else results_dir()/records."""
    top = checkout()
    return top / "records" if top else results_dir() / "records"


def cache_dir() -> Path:
    """Where built presets and tiny's corpus live: $MGPU_LAB_CACHE if set and not empty, else ~/.cache/mgpu_lab."""
    return Path(os.environ.get("MGPU_LAB_CACHE") or Path.home() / ".cache" / "mgpu_lab")


ASSETS = data_root("assets")
NOTEBOOKS = data_root("notebooks")
TINY = ASSETS / "models" / "tiny"
CONFIGS = ASSETS / "configs"
PROMPTS = ASSETS / "prompts"
WORD_LIST = ASSETS / "words" / "american-english.gz"
DOCS = data_root("docs")  # the README's pictures; in a checkout only
