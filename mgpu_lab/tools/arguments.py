"""argparse helpers: an option type that reuses the engine's validation, and a parser whose errors are one line."""

from __future__ import annotations

import argparse
from typing import Any, Callable, NoReturn


def cli_type(check: Callable[[str, Any], Any], parse: Callable[[str], Any] = int) -> Callable[[str], Any]:
    """An argparse type: read the text with `parse`, run `check` on it, and keep the check's message."""
    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'a whole number' if parse is int else 'a number'}, "
                                              f"got {text!r}") from None
        try:
            return check("it", value)
        except (TypeError, ValueError) as error:
            raise argparse.ArgumentTypeError(str(error).removesuffix(".")) from None

    convert.__name__ = check.__name__
    return convert


class Parser(argparse.ArgumentParser):
    """An argument parser whose mistakes are one line on stderr (and exit code 2), not a usage block."""

    def error(self, message: str) -> NoReturn:
        """Print the mistake and where to find the options, then exit with code 2."""
        self.exit(2, f"error: {self.prog}: {message}. See: {self.prog} --help\n")
