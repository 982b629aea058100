"""The tested set: the exact versions the suite and the saved lesson outputs were checked with, and how the
running environment differs from it. Standard library only, so the doctor can use it anywhere.

`python -m mgpu_lab.tools.versions` prints the differences; `... versions freeze` prints this environment as a new
tested set (what `.ci/latest` hands you when the newest releases pass and the set moves forward).
"""

from __future__ import annotations

import re
import sys
from datetime import date
from importlib import metadata, resources

MARKER = 'python_version >= "3.11"'  # the set was checked on 3.11; older Pythons resolve from the floors alone
SKIPPED = {"pip", "mgpu-lab"}  # the installer itself, and the kit


def canonical(name: str) -> str:
    """A distribution name as pip compares them: 'Jinja2' -> 'jinja2', 'jupyter_client' -> 'jupyter-client'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def public(version: str) -> str:
    """A version without its local label, as `==` compares it: '2.13.0+cpu' -> '2.13.0'."""
    return version.split("+")[0]


def tested_file() -> str:
    """The path of the tested set's file, mgpu_lab/tested.txt (in a checkout or an installed package)."""
    return str(resources.files("mgpu_lab").joinpath("tested.txt"))


def tested_set() -> dict[str, str]:
    """Each pinned distribution (canonical name) and its tested version, from mgpu_lab/tested.txt."""
    text = resources.files("mgpu_lab").joinpath("tested.txt").read_text(encoding="utf-8")
    pins = (line.split(";")[0].strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))
    return {canonical(name): version for name, version in (pin.split("==") for pin in pins)}


def installed() -> dict[str, str]:
    """Every distribution in this environment (canonical name) and its public version."""
    found = {canonical(d.metadata["Name"]): public(d.version) for d in metadata.distributions() if d.metadata["Name"]}
    return {name: version for name, version in found.items() if name not in SKIPPED}


def drifted(pinned: dict[str, str], present: dict[str, str]) -> list[str]:
    """The pinned distributions installed at another version than their tested one, sorted by name."""
    return [name for name in sorted(pinned) if name in present and present[name] != pinned[name]]


def differences(pinned: dict[str, str], present: dict[str, str]) -> list[str]:
    """'name installed (tested X)' for each pinned distribution installed at another version, sorted by name."""
    return [f"{name} {present[name]} (tested {pinned[name]})" for name in drifted(pinned, present)]


def install_fix(names: list[str]) -> str:
    """The command that puts these distributions back at their tested versions (from a checkout or a wheel)."""
    return f"pip install -c {tested_file()} {' '.join(names)}   (in a checkout: pip install -r requirements.txt)"


def freeze(present: dict[str, str]) -> str:
    """This environment as a tested-set file (the header says when and how it was made)."""
    header = (f"# The tested set, frozen on {date.today()} by `python -m mgpu_lab.tools.versions freeze` in a venv made\n"
              "# as the README says, where `python -m mgpu_lab lessons` and `pytest` passed. requirements.txt applies it\n"
              "# as constraints; pyproject.toml keeps the floors (mgpu_lab/dependencies.txt). torch is pinned without\n"
              "# its build label, so the CPU and the CUDA build of the same release both match.\n")
    return header + "".join(f"{name}=={version}; {MARKER}\n" for name, version in sorted(present.items()))


def main(argv: list[str] | None = None) -> int:
    """Print how this environment differs from the tested set (exit 1 if it does), or `freeze` it."""
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["freeze"]:
        print(freeze(installed()), end="")
        return 0
    pinned, present = tested_set(), installed()
    drift = differences(pinned, present)
    if not drift:
        print("Every installed package of the tested set is at its tested version.")
        return 0
    print("\n".join(drift), f"To go back to the tested set: {install_fix(drifted(pinned, present))}", sep="\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
