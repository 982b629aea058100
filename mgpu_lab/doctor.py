"""`python -m mgpu_lab doctor`: check the environment before a workshop, one PASS/FAIL line per check."""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import partial
from importlib import metadata
from typing import Callable

import torch
from packaging.version import Version

from .checks import cli_type, port as port_number
from .hello import hello
from .launch import LaunchError, count_gpus, launch, port_is_free
from .models import ModelNotFoundError, check_model, load_model

DEFAULT_PORT = 29500  # torchrun's and accelerate launch's default rendezvous port
MIN_PYTHON = (3, 10)
# models.py passes `dtype=` to from_pretrained, which transformers 4.56 added: checked, 4.56.0 loads the tiny
# checkpoint (its `rope_parameters` fall back to the same default theta) and 4.46.3 fails. torch: requirements.txt's
# floor; accelerate: the 1.x line, with the known-bad pair below checked on its own.
MINIMUMS = {"torch": "2.6", "accelerate": "1.0", "transformers": "4.56"}
# accelerate before 1.14 makes notebook_launcher touch CUDA in the parent with torch >= 2.9
# (huggingface/accelerate#3925, fixed by #4059): forked GPU processes then fail.
SAFE_ACCELERATE, CUDA_TOUCHING_TORCH = "1.14", "2.9"


@dataclass(frozen=True)
class Check:
    """One check's outcome: what was checked, whether it passed, what was found, and how to fix a failure."""

    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        """The check as one line: "PASS name detail" or "FAIL name detail. Fix: ..."."""
        text = f"{'PASS' if self.ok else 'FAIL'} {self.name} {self.detail}"
        return text if self.ok or not self.fix else f"{text} Fix: {self.fix}"


def installed_version(package: str) -> str | None:
    """The installed version of a distribution, or None when it is not installed."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def check_python(version: tuple[int, ...] = tuple(sys.version_info[:3])) -> Check:
    """Python must be at least MIN_PYTHON."""
    text = ".".join(map(str, version))
    minimum = ".".join(map(str, MIN_PYTHON))
    if tuple(version[:2]) >= MIN_PYTHON:
        return Check("python", True, text)
    return Check("python", False, f"{text}: the kit needs Python >= {minimum}.",
                 f"install Python >= {minimum} and create a fresh virtual environment.")


def check_package(package: str) -> Check:
    """A package the kit imports is installed, at its minimum version or newer."""
    found, minimum = installed_version(package), MINIMUMS[package]
    fix = f"pip install -U '{package}>={minimum}'"
    if found is None:
        return Check(package, False, "is not installed.", fix)
    if Version(found) < Version(minimum):
        return Check(package, False, f"{found}: the kit needs {package} >= {minimum}.", fix)
    return Check(package, True, found)


def check_accelerate_with_torch() -> Check:
    """The known-bad pair: accelerate < 1.14 with torch >= 2.9 initialises CUDA in the parent before forking."""
    accelerate, torch_version = installed_version("accelerate"), installed_version("torch")
    if accelerate is None or torch_version is None:
        return Check("accelerate", False, "with torch cannot be checked: one of them is not installed.",
                     "install both (see the lines above).")
    pair = f"{accelerate} with torch {torch_version}"
    if Version(torch_version) >= Version(CUDA_TOUCHING_TORCH) and Version(accelerate) < Version(SAFE_ACCELERATE):
        return Check("accelerate", False,
                     f"{pair}: notebook_launcher initialises CUDA in the parent, so forked GPU processes fail.",
                     f"pip install -U 'accelerate>={SAFE_ACCELERATE}'")
    return Check("accelerate", True, f"{pair}: a known-good pair")


def check_cuda_not_initialised() -> Check:
    """CUDA must not be initialised yet in this process: forked children could not use the GPU."""
    if torch.cuda.is_initialized():
        return Check("CUDA in this process", False,
                     "is already initialised, so processes forked from here cannot use the GPU.",
                     "restart the kernel and launch before anything touches the GPU.")
    return Check("CUDA in this process", True, "not initialised (safe to fork)")


def check_gpus() -> Check:
    """How many GPUs the launcher will use, and their memory, found without initialising CUDA."""
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


def check_port(port: int = DEFAULT_PORT) -> Check:
    """The rendezvous port that torchrun and accelerate launch use by default is free."""
    if port_is_free(port):
        return Check(f"port {port}", True, "is free")
    return Check(f"port {port}", False, "is in use (another launch or notebook still running?).",
                 "stop that process (restart its kernel), or pass another port to the launch.")


def check_launch() -> Check:
    """A 2-process launch of lesson 1's hello() returns one message per process."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # hello() prints its messages; the doctor prints a line
            messages = launch(hello, num_processes=2, verbose=False)
    except LaunchError as error:
        return Check("2-process launch", False, f"failed: {error.message}",
                     "fix the FAIL lines above first; if all pass, run `python -m mgpu_lab hello` to see the error.")
    if len(messages) != 2:
        return Check("2-process launch", False, f"returned {len(messages)} message(s) instead of 2.",
                     "run `python -m mgpu_lab hello` and report its output.")
    return Check("2-process launch", True, "returned 2 messages")


def check_model_loads(name: str = "tiny") -> Check:
    """The model is found and loads on CPU."""
    try:
        check_model(name)
        model, _tokenizer = load_model(name, "cpu")
    except ModelNotFoundError as error:
        message, _, fix = str(error).partition(" Fix: ")
        return Check(f"model {name}", False, message, fix or "pass a preset name or a checkpoint folder.")
    except (OSError, ValueError) as error:
        return Check(f"model {name}", False, f"does not load: {error}",
                     "check that the folder holds config.json, the weights and the tokenizer files.")
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    return Check(f"model {name}", True, f"loads on CPU ({millions:.1f}M parameters)")


def checks(model: str, port: int) -> list[Callable[[], Check]]:
    """Every check, in the order the doctor runs them; the launch runs before any model is loaded here."""
    return [check_python, *(partial(check_package, package) for package in MINIMUMS), check_accelerate_with_torch,
            check_cuda_not_initialised, check_gpus, partial(check_port, port), check_launch,
            partial(check_model_loads, model)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The doctor subcommand's options."""
    parser.add_argument("--model", default="tiny", help="the model to try loading (default: tiny)")
    parser.add_argument("--port", type=cli_type(port_number), default=DEFAULT_PORT,
                        help=f"the port to check (default: {DEFAULT_PORT})")


def run(args: argparse.Namespace) -> int:
    """Run every check, print one line each as it finishes, and return 1 when any failed."""
    failed = 0
    for check in checks(args.model, args.port):
        result = check()
        failed += not result.ok
        print(result.line(), flush=True)
    print("All checks passed." if not failed else f"{failed} check(s) failed: fix the FAIL lines above.")
    return 1 if failed else 0
