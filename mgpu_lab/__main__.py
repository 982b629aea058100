"""The command line: `python -m mgpu_lab hello|naive|batched ...`, the lessons from a terminal or under torchrun."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .distributed import run
from .hello import hello
from .launch import LaunchError, launch
from .lessons import run_lessons
from .models import ModelNotFoundError
from .prompts import PromptFileError, default_prompts, load_prompts
from .report import format_completions, format_split, format_summary


def is_main_rank() -> bool:
    """False on the non-zero ranks of a torchrun launch, which must not print results."""
    return os.environ.get("RANK", "0") == "0"


def positive_int(text: str) -> int:
    """An argparse type for counts that must be >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


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
    launch(hello, num_processes=args.num_processes)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """Lessons 2 and 3 from the terminal: naive or batched inference over the prompts."""
    result = run(args.command, args.model, read_prompts(args.prompts), args.num_processes,
                 args.max_new_tokens, args.batch_size, verbose=not args.json)
    if not is_main_rank():
        return 0
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(format_summary(result.summary), format_split(result.per_process),
              format_completions(result.results), sep="\n\n")
    return 0


def cmd_lessons(args: argparse.Namespace) -> int:
    """The main job: every lesson notebook, end to end, on the bundled model."""
    return run_lessons(Path(args.out))


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by every command that generates text."""
    parser.add_argument("--model", default="tiny", help="tiny, small, shape:NAME, or a checkpoint folder")
    parser.add_argument("--max-new-tokens", type=positive_int, default=100)
    parser.add_argument("--batch-size", type=positive_int, default=16)
    parser.add_argument("--prompts", help="a .txt file (one prompt a line) or .jsonl file (a \"prompt\" field)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout, nothing else")


def build_parser() -> argparse.ArgumentParser:
    """The `python -m mgpu_lab` parser with one subcommand per lesson."""
    parser = argparse.ArgumentParser(prog="python -m mgpu_lab", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, handler, text in [("hello", cmd_hello, "lesson 1: gather a message from every process"),
                                ("naive", cmd_generate, "lesson 2: one generate call per prompt"),
                                ("batched", cmd_generate, "lesson 3: left-padded batches")]:
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("--num-processes", type=positive_int, default=None,
                         help="default: one per GPU, or 2 CPU processes without a GPU")
        if name != "hello":
            add_run_options(sub)
        sub.set_defaults(handler=handler)
    lessons = commands.add_parser("lessons", help="run every lesson notebook end to end")
    lessons.add_argument("--out", default="results/lessons", help="where the executed notebooks go")
    lessons.set_defaults(handler=cmd_lessons)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run it; a mistake we can name is one line on stderr and exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except LaunchError as error:
        print(f"error: {error.message}", file=sys.stderr)
    except (ModelNotFoundError, PromptFileError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
