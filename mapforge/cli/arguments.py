"""Argument types shared by the subcommands, and the parser that reports a bad argument in one line.

Every numeric option goes through one of these types, so a bad value is refused when the command line is parsed,
before any stage runs.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import NoReturn


class OneLineParser(argparse.ArgumentParser):
    """An `ArgumentParser` whose errors are one line on stderr (exit status 2), like mapforge's other errors."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def int_in(minimum: int, maximum: int | None = None, what: str | None = None) -> Callable[[str], int]:
    """An argparse type: an integer from `minimum` to `maximum` (inclusive; None: no upper bound), described to
    the user as `what` (default: the bounds)."""
    bounds = f"from {minimum} to {maximum}" if maximum is not None else f"of at least {minimum}"
    what = what or f"an integer {bounds}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


def _finite_float(text: str, accept: Callable[[float], bool], expected: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not accept(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


positive_int = int_in(1, what="a positive integer")
non_negative_int = int_in(0, what="a non-negative integer")
port = int_in(0, 65535, what="a port number from 0 to 65535")


def positive_float(text: str) -> float:
    return _finite_float(text, lambda v: v > 0, "a positive number")


def non_negative_float(text: str) -> float:
    return _finite_float(text, lambda v: v >= 0, "a number of at least 0")
