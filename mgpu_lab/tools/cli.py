"""The command line: `python -m mgpu_lab hello|naive|batched ...`, the lessons from a terminal or under torchrun."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .. import defaults
from ..paths import results_dir
from . import doctor

try:  # `python -m mgpu_lab doctor` runs without these (mgpu_lab/__main__.py); the rest need torch
    from ..course.demos import hello
    from ..course.plots import plot_against_peer, plot_scaling
    from ..course.report import format_completions, format_records, format_split, format_summary
    from ..launcher.bar import wanted
    from ..launcher.launch import DEFAULT_TIMEOUT_S, LaunchError, is_main_rank, launch
    from ..engine.models import ModelNotFoundError, check_model, is_synthetic
    from ..engine.modes import MODES, mode_names
    from ..engine.prompts import PromptFileError, default_prompts, load_prompts
    from ..engine.runner import run
    from ..engine.validate import image_path, out_folder, positive_number, torchrun_env, whole_number
    from ..tiny import train as train_tiny
    from ..tiny.corpus import CorpusError
    from . import gpu_check
    from .arguments import Parser, cli_type
    from .bench import RECORDS, RECORDS_CSV, Sweep, against_input_order, check_records_folder, run_sweep
    from .peer import against_peer, format_agreement
except ImportError as missing:  # a fresh Python: say what is missing and how to install it, not a traceback
    print(f"error: {missing}. The kit's dependencies are not all installed in this Python ({sys.executable}). "
          "Fix: follow the README's Quickstart (torch first, then `pip install -r requirements.txt`), then "
          "run `python -m mgpu_lab doctor`.", file=sys.stderr)
    sys.exit(2)


positive_int = cli_type(whole_number)


def read_prompts(path: str | None) -> list[str]:
    """The default prompts, or a file's, telling stderr how many empty lines were skipped."""
    if path is None:
        return default_prompts()
    prompts, skipped = load_prompts(path)
    if skipped:
        print(f"Skipped {skipped} empty line(s) in {path}.", file=sys.stderr)
    return prompts


def cmd_hello(args: argparse.Namespace) -> int:
    """Lesson 1 from the terminal."""
    torchrun_env(args.num_processes)
    launch(hello, num_processes=args.num_processes)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """Lessons 2, 3 and 5 from the terminal: one inference run in the mode named by the subcommand."""
    warn_if_synthetic(args.model)
    result = run(args.command, args.model, read_prompts(args.prompts), num_processes=args.num_processes,
                 max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, verbose=not args.json,
                 token_budget=args.token_budget, output=args.output, resume=args.resume,
                 progress=False if args.quiet else None, timeout=args.timeout, tp_size=args.tp_size)
    if not is_main_rank():  # the non-zero ranks of a torchrun launch print nothing
        return 0
    if args.json:
        print(json.dumps(result.to_dict(), allow_nan=False))
    else:
        print(format_summary(result.summary), format_split(result.per_process),
              format_completions(result.results), sep="\n\n")
    return 0


def cmd_lessons(args: argparse.Namespace) -> int:
    """The main job: every lesson notebook, end to end, on the bundled model."""
    from .lessons_runner import run_lessons  # needs jupyter's packages, which a minimal GPU box may lack

    return run_lessons(Path(args.out), force=args.force)


def cmd_notebooks(args: argparse.Namespace) -> int:
    """Copy the lesson notebooks into a folder, for a workshop room or to work through them."""
    from .lessons_runner import copy_lessons

    copies = copy_lessons(Path(args.dir), solutions=args.solutions)
    print(f"Copied {len(copies)} file(s) into {args.dir}/ with their outputs cleared, so a learner guesses before "
          f"running; open them with `jupyter lab {args.dir}`.")
    return 0


def int_list(text: str) -> tuple[int, ...]:
    """An argparse type for comma-separated counts such as 1,2,4."""
    return tuple(positive_int(part) for part in text.split(","))


def mode_list(text: str) -> tuple[str, ...]:
    """An argparse type for comma-separated mode names."""
    modes = tuple(text.split(","))
    if "" in modes:
        raise argparse.ArgumentTypeError(f"{text!r} holds an empty mode name (two commas, or one at an end); "
                                         "write them as naive,batched")
    unknown = [m for m in modes if m not in mode_names()]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown mode(s) {', '.join(unknown)}; known: {', '.join(mode_names())}")
    return modes


def warn_if_synthetic(model: str) -> None:
    """Say loudly that a shape preset's text is noise and that it always generates max_new_tokens."""
    if is_synthetic(model):
        print(f"NOTE: {model} has RANDOM weights: its text is noise, its throughput is real. Every prompt "
              "generates the full --max-new-tokens, so runs are comparable.", file=sys.stderr)


def cmd_bench(args: argparse.Namespace) -> int:
    """Lesson 4 from the terminal: the sweep, each record on disk as it is measured, then a table or JSON lines."""
    check_model(args.model)
    out = check_records_folder(out_folder(args.out)) if is_main_rank() else None  # checked before the sweep
    plot = image_path(args.plot) if args.plot else None
    warn_if_synthetic(args.model)
    sweep = Sweep(modes=args.modes, num_processes=args.num_processes, tp_sizes=args.tp_sizes,
                  batch_sizes=args.batch_sizes,
                  max_new_tokens=args.max_new_tokens, model=args.model, prompts=tuple(read_prompts(args.prompts)),
                  prompt_set=args.prompt_set or (args.prompts or "default"), repeats=args.repeats,
                  bandwidth_gbs=args.bandwidth_gbs, token_budget=args.token_budget, peer_python=args.peer_python)
    shown = is_main_rank() and not args.quiet and wanted(None)  # a terminal or a notebook watches, as for a run
    records = against_peer(against_input_order(run_sweep(sweep, progress=shown, out_dir=out)))
    if not is_main_rank():
        return 0
    if args.json:
        print("\n".join(json.dumps(r, allow_nan=False) for r in records), flush=True)
    else:
        print(format_records(records))
        for r in records:
            if r.get("vllm_agreement"):
                print(f"{r['mode']} on {r['num_processes']} process(es) vs vllm: {format_agreement(r['vllm_agreement'])}")
        print(f"\nRecords appended to {out / RECORDS} and {out / RECORDS_CSV}.", flush=True)
    if plot:
        figure = plot_against_peer(records) if args.peer_python else plot_scaling(records, mode=args.modes[-1])
        figure.savefig(plot, dpi=120)
    return 0


def add_workload_options(parser: argparse.ArgumentParser) -> None:
    """The options every generating command shares: which model, which prompts, what token budget."""
    parser.add_argument("--model", default=defaults.MODEL, help="tiny, small, shape:NAME, or a checkpoint folder")
    parser.add_argument("--prompts", help="a .txt (a prompt a line), .jsonl (\"prompt\" fields) or .csv "
                                          "(a prompt column) file; - for standard input (default: the article's "
                                          "100 prompts)")
    parser.add_argument("--token-budget", type=positive_int, default=None,
                        help="padded tokens per batch (" + ", ".join(n for n, m in MODES.items()
                                                                     if m.knob == "token_budget")
                        + "); default: measured for the model and device, see mgpu_lab/engine/budget.py")


def add_bench_options(parser: argparse.ArgumentParser) -> None:
    """Options of the bench command: comma lists for every swept dimension."""
    add_workload_options(parser)
    parser.add_argument("--modes", type=mode_list, default=("naive", "batched"),
                        help=f"comma-separated, from: {', '.join(mode_names())}")
    parser.add_argument("--num-processes", type=int_list, default=(1, 2), help="comma-separated, e.g. 1,2,4")
    parser.add_argument("--tp-sizes", type=int_list, default=(1,),
                        help="comma-separated tensor-parallel sizes, e.g. 1,2 (those that divide a process count run)")
    parser.add_argument("--batch-sizes", type=int_list, default=(defaults.BATCH_SIZE,),
                        help="comma-separated, e.g. 8,16,32")
    parser.add_argument("--max-new-tokens", type=int_list, default=(defaults.MAX_NEW_TOKENS,), help="comma-separated")
    parser.add_argument("--prompt-set", help="a name for the prompt set in the records")
    parser.add_argument("--repeats", type=positive_int, default=3, help="timed runs per point; the median is kept")
    parser.add_argument("--bandwidth-gbs", type=cli_type(positive_number, float),
                        help="GPU memory bandwidth, for GPUs not in the table")
    parser.add_argument("--out", default=str(results_dir() / "bench"),
                        help="folder for records.jsonl and records.csv (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the records as JSON lines on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--peer-python", help="a Python with vLLM installed (its own venv, see the README): "
                        "measure its LLM.generate on the same model, prompts and cores beside each point")
    parser.add_argument("--plot", help="save the scaling figure (the last mode's) to this image file (.png, .svg, .pdf, ...)")


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """Options of the commands that run one mode."""
    add_workload_options(parser)
    parser.add_argument("--max-new-tokens", type=positive_int, default=defaults.MAX_NEW_TOKENS)
    parser.add_argument("--tp-size", type=positive_int, default=1,
                        help="processes that split one copy of the model (tensor parallelism); "
                             "--num-processes / --tp-size copies split the prompts")
    parser.add_argument("--batch-size", type=positive_int, default=defaults.BATCH_SIZE,
                        help="prompts per batch (" + ", ".join(n for n, m in MODES.items() if m.knob == "batch_size")
                        + ")")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout, nothing else")
    parser.add_argument("--output", help="append each completion to this .jsonl file as soon as it is generated")
    parser.add_argument("--resume", action="store_true",
                        help="with --output: reuse the completions the file already holds, generate the rest")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--timeout", type=cli_type(positive_number, float), default=DEFAULT_TIMEOUT_S,
                        help="seconds a process waits for a peer that does not arrive before the run fails")


def build_parser() -> argparse.ArgumentParser:
    """The `python -m mgpu_lab` parser with one subcommand per lesson."""
    parser = Parser(prog="python -m mgpu_lab", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    runs = [(name, cmd_generate, how.about) for name, how in MODES.items()]
    for name, handler, text in [("hello", cmd_hello, "lesson 1: gather a message from every process"), *runs]:
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("--num-processes", type=positive_int, default=None,
                         help="default: one per GPU, or 2 CPU processes without a GPU")
        if name != "hello":
            add_run_options(sub)
        sub.set_defaults(handler=handler)
    bench = commands.add_parser("bench", help="lesson 4: sweep modes x processes x batch sizes",
                                description="Sweep and measure. Modes: " + ", ".join(mode_names()))
    add_bench_options(bench)
    bench.set_defaults(handler=cmd_bench)
    doctor_parser = commands.add_parser("doctor", help="check this machine before a workshop")
    doctor.add_arguments(doctor_parser)
    doctor_parser.set_defaults(handler=doctor.run)
    train = commands.add_parser("train-tiny", help="rebuild the bundled tiny model from scratch (CPU, minutes)")
    train_tiny.add_arguments(train)
    train.set_defaults(handler=train_tiny.run)
    check = commands.add_parser("gpu-check", help="run doctor, lessons 1-3 and the benchmark on a GPU; record all")
    gpu_check.add_arguments(check)
    check.set_defaults(handler=gpu_check.run)
    lessons = commands.add_parser("lessons", help="run every lesson notebook end to end")
    lessons.add_argument("--out", default=str(results_dir() / "lessons"),
                         help="where the executed notebooks go (default: %(default)s)")
    lessons.add_argument("--force", action="store_true",
                         help="overwrite notebooks in --out that this command did not write, or that were edited since")
    lessons.set_defaults(handler=cmd_lessons)
    notebooks = commands.add_parser("notebooks",
                                    help="copy the lesson notebooks, outputs cleared, into a folder (a workshop room)")
    notebooks.add_argument("dir", help="the folder to copy them into (created if missing; must not hold them yet)")
    notebooks.add_argument("--solutions", action="store_true", help="copy the exercises' solutions too")
    notebooks.set_defaults(handler=cmd_notebooks)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run it; a mistake we can name is one line on stderr and exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        code = args.handler(args)
        sys.stdout.flush()  # a full disk or a closed pipe shows here, inside the try, not at exit
        return code
    except LaunchError as error:
        print(f"error: {error.message}", file=sys.stderr)
    except (ModelNotFoundError, PromptFileError, CorpusError, ValueError) as error:  # PeerError is a ValueError
        print(f"error: {error}", file=sys.stderr)
    except KeyboardInterrupt as interrupt:
        print(interrupt.args[0] if interrupt.args else "interrupted", file=sys.stderr)
        return 130
    except OSError as error:
        return output_failed(error)
    return 2


def output_failed(error: OSError) -> int:
    """One line for an error writing the results (standard output full or closed, a file that cannot be written)."""
    try:
        sys.stdout.flush()
    except OSError:  # stdout itself is broken: point it at devnull (Python's advice for SIGPIPE), so exit is quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if isinstance(error, BrokenPipeError):
        print("error: standard output was closed before the results were written.", file=sys.stderr)
    elif error.filename is not None:
        print(f"error: could not write {error.filename} ({error.strerror}).", file=sys.stderr)
    else:
        print(f"error: could not write the results ({error.strerror or error}).", file=sys.stderr)
    return 1
