"""`python -m mgpu_lab doctor`: check the environment before a workshop, one PASS/FAIL line per check."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import partial, wraps
from importlib import metadata, resources
from typing import Callable

from ..engine.validate import port as port_number
from . import versions
from .arguments import Parser, cli_type

# Nothing here imports a package from outside the standard library at the top (not torch, not even `packaging`):
# on a fresh Python where they are missing or broken, the doctor still prints its checklist, and the checks that need
# them fail one by one.
DEFAULT_PORT = 29500  # torchrun's and accelerate launch's default rendezvous port
MIN_PYTHON = (3, 10)  # pyproject.toml's requires-python (a test keeps the two equal)
TORCH_FIX = ("pip install torch --index-url https://download.pytorch.org/whl/cpu (Linux without a GPU); "
             "pip install torch (Linux with an NVIDIA GPU, or macOS)")


@dataclass(frozen=True)
class Check:
    """One check's outcome: what was checked, whether it passed, what was found, and how to fix a failure."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    note: bool = False  # passed, with something to know: "NOTE name detail. Fix: ..."

    def line(self) -> str:
        """The check as one line: "PASS name detail", "NOTE name detail. Fix: ..." or "FAIL name detail. Fix: ..."."""
        text = f"{'NOTE' if self.note else 'PASS' if self.ok else 'FAIL'} {self.name} {self.detail}"
        return text if (self.ok and not self.note) or not self.fix else f"{text} Fix: {self.fix}"


def installed_version(package: str) -> str | None:
    """The installed version of a distribution, or None when it is not installed."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def dependencies() -> dict[str, str]:
    """Each runtime dependency and its minimum version, from mgpu_lab/dependencies.txt (pyproject.toml's source)."""
    lines = resources.files("mgpu_lab").joinpath("dependencies.txt").read_text(encoding="utf-8").splitlines()
    requirements = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return dict(re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", line).groups() for line in requirements)  # `>=` only


def release(version: str) -> tuple[int, ...]:
    """The numeric release of a version string: '2.13.0+cpu' -> (2, 13, 0), '5.4.0rc1' -> (5, 4, 0)."""
    return tuple(int(part) for part in re.match(r"\d+(\.\d+)*", version).group().split("."))


def check_python(version: tuple[int, ...] = tuple(sys.version_info[:3])) -> Check:
    """Python must be at least MIN_PYTHON."""
    text = ".".join(map(str, version))
    minimum = ".".join(map(str, MIN_PYTHON))
    if tuple(version[:2]) >= MIN_PYTHON:
        return Check("python", True, text)
    return Check("python", False, f"{text}: the kit needs Python >= {minimum}.",
                 f"install Python >= {minimum} and create a fresh virtual environment.")


def check_package(package: str) -> Check:
    """A package the kit needs is installed, at its minimum version or newer."""
    found, minimum = installed_version(package), dependencies()[package]
    fix = TORCH_FIX if package == "torch" else f"pip install -U '{package}>={minimum}'"
    if found is None:
        return Check(package, False, "is not installed.", fix)
    if release(found) < release(minimum):
        return Check(package, False, f"{found}: the kit needs {package} >={minimum}.", fix)
    return Check(package, True, found)


def check_tested_set() -> Check:
    """Each installed package of the tested set is at the version the suite and the saved outputs were checked with."""
    pinned, present = versions.tested_set(), versions.installed()
    drift = versions.differences(pinned, present)
    if not drift:
        return Check("tested set", True, "every installed package is at its tested version")
    return Check("tested set", True, f"{len(drift)} package(s) differ from the versions the lessons were checked with "
                 f"({', '.join(drift)}): lessons should still run, but saved outputs and tests may differ.",
                 versions.install_fix(versions.drifted(pinned, present)), note=True)


def needs_imports(name: str) -> Callable[[Callable[..., Check]], Callable[..., Check]]:
    """For a check that imports torch or the kit's engine: an import that fails is its FAIL line, not a traceback."""
    def guard(check: Callable[..., Check]) -> Callable[..., Check]:
        @wraps(check)
        def guarded(*args, **kwargs) -> Check:
            try:
                return check(*args, **kwargs)
            except ImportError as error:
                return Check(name, False, f"cannot be checked: {error}.", "fix the package lines above first.")
        return guarded
    return guard


@needs_imports("CUDA in this process")
def check_cuda_not_initialised() -> Check:
    """CUDA must not be initialised yet in this process: forked children could not use the GPU."""
    import torch

    if torch.cuda.is_initialized():
        return Check("CUDA in this process", False,
                     "is already initialised, so processes forked from here cannot use the GPU.",
                     "restart the kernel and launch before anything touches the GPU.")
    return Check("CUDA in this process", True, "not initialised (safe to fork)")


@needs_imports("GPUs")
def check_gpus() -> Check:
    """How many GPUs the launcher will use, and their memory, found without initialising CUDA."""
    from ..launcher.launch import count_gpus

    gpus = count_gpus()
    if not gpus:
        return Check("GPUs", True, "none found: lessons run on CPU processes (gloo).")
    return Check("GPUs", True, f"{gpus}: {gpu_memory() or 'memory unknown (no answer from nvidia-smi)'}")


def gpu_memory() -> str:
    """Each GPU's name and total memory from nvidia-smi (a separate process, so no CUDA here), or ''."""
    if shutil.which("nvidia-smi") is None:
        return ""
    done = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                          capture_output=True, text=True, timeout=30)
    return "; ".join(line.strip() for line in done.stdout.splitlines() if line.strip())


@needs_imports("port")
def check_port(port: int = DEFAULT_PORT) -> Check:
    """The rendezvous port that torchrun and accelerate launch use by default is free."""
    from ..launcher.launch import port_is_free

    if port_is_free(port):
        return Check(f"port {port}", True, "is free")
    return Check(f"port {port}", False, "is in use (another launch or notebook still running?).",
                 "stop that process (restart its kernel), or pass another port to the launch.")


@needs_imports("launch")
def check_launch() -> Check:
    """A launch of lesson 1's hello() as lessons make it (one process per GPU, else 2 CPU ones) hears from each."""
    from ..course.demos import hello
    from ..launcher.launch import LaunchError, launch, plan_launch

    try:
        expected = plan_launch().num_processes
        with contextlib.redirect_stdout(io.StringIO()):  # hello() prints its messages; the doctor prints a line
            messages = launch(hello, verbose=False)
    except LaunchError as error:
        return Check("launch", False, f"failed: {error.message}",
                     "fix the FAIL lines above first; if all pass, run `python -m mgpu_lab hello` to see the error.")
    if len(messages) != expected:
        return Check("launch", False, f"of {expected} process(es) returned {len(messages)} message(s).",
                     "run `python -m mgpu_lab hello` and report its output.")
    return Check("launch", True, f"of {expected} process(es) returned {expected} messages")


@needs_imports("model")
def check_model_loads(name: str = "tiny") -> Check:
    """The model is found and loads on CPU."""
    from ..engine.models import ModelNotFoundError, check_model, load_model

    try:
        check_model(name)
        model, _tokenizer = load_model(name, "cpu")
    except (OSError, ValueError) as error:  # the error's own fix, when it names one; one Fix: per line
        message, _, fix = str(error).partition(" Fix: ")
        if isinstance(error, ModelNotFoundError):
            return Check(f"model {name}", False, message, fix or "pass a preset name or a checkpoint folder.")
        return Check(f"model {name}", False, f"does not load: {message}",
                     fix or "check that the folder holds config.json, the weights and the tokenizer files.")
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    return Check(f"model {name}", True, f"loads on CPU ({millions:.1f}M parameters)")


def check_cache() -> Check:
    """The folder presets such as `small` are built into (MGPU_LAB_CACHE, else ~/.cache/mgpu_lab) can be written."""
    from ..engine.validate import preset_cache

    try:
        return Check("preset cache", True, f"{preset_cache()} is writable")
    except ValueError as error:
        message, _, fix = str(error).partition(" Fix: ")
        return Check("preset cache", False, message.removeprefix("the preset cache "), fix)


def checks(model: str, port: int) -> list[Callable[[], Check]]:
    """Every check, in the order the doctor runs them; the launch runs before any model is loaded here."""
    packages = [partial(check_package, package) for package in dependencies()]
    return [check_python, *packages, check_tested_set, check_cuda_not_initialised, check_gpus, partial(check_port, port),
            check_launch, check_cache, partial(check_model_loads, model)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The doctor subcommand's options."""
    parser.add_argument("--model", default="tiny", help="the model to try loading (default: tiny)")
    parser.add_argument("--port", type=cli_type(port_number), default=DEFAULT_PORT,
                        help=f"the port to check (default: {DEFAULT_PORT})")


def main(argv: list[str] | None = None) -> int:
    """`python -m mgpu_lab doctor [options]`, parsed here so that nothing heavy is imported first."""
    parser = Parser(prog="python -m mgpu_lab doctor", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run every check, print one line each as it finishes, and return 1 when any failed."""
    failed = 0
    for check in checks(args.model, args.port):
        result = check()
        failed += not result.ok
        print(result.line(), flush=True)
    print("All checks passed." if not failed else f"{failed} check(s) failed: fix the FAIL lines above.")
    return 1 if failed else 0
