"""Command-line argument pieces every ``domainfm`` command shares: a parser whose usage
errors are one line, and value types that refuse a bad number when the command line is
parsed (exit status 2, before any file is read or any worker starts).

Example::

    >>> parser = OneLineParser(prog="domainfm segment")
    >>> parser.add_argument("--overlap", type=fraction(upper_open=True), default=0.5)
    >>> parser.add_argument("--sw-batch-size", type=positive_int, default=2)
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import NoReturn


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr,
    ``domainfm CMD: error: MESSAGE; see domainfm CMD --help``, and exit status 2 (argparse
    prints the whole usage block first; the CLI's rule is one error line). Its subparsers
    are of this class too."""

    def error(self, message: str) -> NoReturn:
        command = " ".join(self.prog.split()[:2])  # "domainfm prepare audio" -> the command
        text = " ".join(message.split())
        self.exit(2, f"{command}: error: {text}; see {self.prog} --help\n")


def _number(text: str, cast: Callable[[str], float]) -> float:
    try:
        value = cast(text)
    except ValueError:
        kind = "an integer" if cast is int else "a number"
        raise argparse.ArgumentTypeError(f"not {kind}: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (a batch size, a sample rate, a tile size)."""
    value = int(_number(text, int))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (a number of worker processes: 0 is the main process)."""
    value = int(_number(text, int))
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (a duration, a length)."""
    value = _number(text, float)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (a gap, a collar)."""
    value = _number(text, float)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def fraction(*, upper_open: bool = False) -> Callable[[str], float]:
    """A number in ``[0, 1]``, or in ``[0, 1)`` with ``upper_open`` (a window overlap: 1
    would never advance)."""
    interval = "[0, 1)" if upper_open else "[0, 1]"

    def parse(text: str) -> float:
        value = _number(text, float)
        if not (0 <= value < 1 if upper_open else 0 <= value <= 1):
            raise argparse.ArgumentTypeError(f"must be in {interval}, got {text!r}")
        return value

    parse.__name__ = f"fraction in {interval}"  # argparse names the type in its messages
    return parse


def argument_type(parse: Callable[[str], object], name: str) -> Callable[[str], object]:
    """``parse`` as an argparse type whose ``ValueError`` message is shown as is (argparse
    would print only "invalid NAME value")."""

    def wrapped(text: str) -> object:
        try:
            return parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    wrapped.__name__ = name
    return wrapped
