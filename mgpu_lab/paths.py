"""Where the kit's files are: the data it ships (assets, notebooks) and the cache it builds presets into.

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


def cache_dir() -> Path:
    """Where built presets and tiny's corpus live: $MGPU_LAB_CACHE if set and not empty, else ~/.cache/mgpu_lab."""
    return Path(os.environ.get("MGPU_LAB_CACHE") or Path.home() / ".cache" / "mgpu_lab")


ASSETS = data_root("assets")
NOTEBOOKS = data_root("notebooks")
TINY = ASSETS / "models" / "tiny"
CONFIGS = ASSETS / "configs"
PROMPTS = ASSETS / "prompts"
WORD_LIST = ASSETS / "words" / "american-english.gz"
