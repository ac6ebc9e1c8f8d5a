"""How the ``domainfm`` command prints what is not its result: Python warnings as one line
each, ``domainfm CMD: warning: MESSAGE``; Lightning's information on stdout, its warnings as
those lines; the chatter of other packages about their own internals not at all. stderr then
holds the command's own warnings and, for a failure, its one error line.

Example::

    >>> with cli_warnings("fit"), lightning_log_lines("fit"):
    ...     run_the_command()
"""

from __future__ import annotations

import logging
import re
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TextIO

FOREIGN_WARNINGS = (
    r"LightningCLI's args parameter is intended to run from within Python",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # a data module without validation data returns [] on purpose (Lightning's way to skip it)
    r"Total length of `list` across ranks is zero",
    r"You defined a `validation_step` but have no `val_dataloader`",
)
"""Warnings of other packages about their own internals, which a user cannot act on."""


LIGHTNING_CHATTER = (
    "GPU available",
    "TPU available",
    "HPU available",
    "💡 Tip",
    "`Trainer.fit` stopped",
    "Seed set to",
)
"""Lightning's info lines that every run prints (hardware, seed, advertisement, stop)."""


_RANK_PREFIX = re.compile(r"^\[rank: \d+\] ")
"""Lightning's prefix of a log line under several processes (``[rank: 0] Seed set to 0``)."""


def drop_chatter(record: logging.LogRecord) -> bool:
    """A logging filter keeping every record but :data:`LIGHTNING_CHATTER`."""
    return not _RANK_PREFIX.sub("", str(record.msg)).startswith(LIGHTNING_CHATTER)


def quiet_foreign_warnings() -> None:
    """Keep :data:`FOREIGN_WARNINGS` out of the output (other warnings still show), and the
    deprecation warnings of jsonargparse's API that Lightning's CLI uses (hidden by Python's
    default filters, shown where those are changed, e.g. under pytest)."""
    for pattern in FOREIGN_WARNINGS:
        warnings.filterwarnings("ignore", message=f".*{pattern}")
    warnings.filterwarnings(
        "ignore", category=DeprecationWarning, module=r"lightning\.pytorch\.cli"
    )


def one_line(text: str) -> str:
    """``text`` with its lines joined by ``"; "`` (blank lines dropped)."""
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def warning_line(command: str, message: object) -> str:
    """A warning as the CLI prints it: ``domainfm CMD: warning: MESSAGE`` (one line)."""
    return f"domainfm {command}: warning: {one_line(str(message))}"


@contextmanager
def cli_warnings(command: str) -> Iterator[None]:
    """While the command runs, Python warnings print as one :func:`warning_line` each (no
    source file, line or code excerpt); processes forked meanwhile (data-loader workers)
    inherit it, and a multi-process run's other ranks start through :func:`main` too."""
    shown = warnings.showwarning

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        stream = file if file is not None else sys.stderr
        with suppress(OSError, ValueError):  # stderr closed: a warning is not worth a crash
            stream.write(warning_line(command, message) + "\n")

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


class LogLines(logging.Handler):
    """Lightning's log records as the CLI prints them: information on stdout as is
    (:data:`LIGHTNING_CHATTER` dropped), warnings and errors on stderr as one
    :func:`warning_line` each (the command's own error line is the only error line)."""

    def __init__(self, command: str) -> None:
        super().__init__()
        self.command = command
        self.addFilter(drop_chatter)

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "_domainfm_shown", False):  # met again in a parent logger
            return
        record._domainfm_shown = True
        try:
            text = record.getMessage()
            if record.levelno >= logging.WARNING:
                sys.stderr.write(warning_line(self.command, text) + "\n")
            else:
                sys.stdout.write(text + "\n")
                sys.stdout.flush()
        except Exception:
            self.handleError(record)


@contextmanager
def lightning_log_lines(command: str) -> Iterator[None]:
    """Route the Lightning loggers through :class:`LogLines` while the command runs."""
    names = ("lightning", "lightning.pytorch", "lightning.fabric")
    loggers = [logging.getLogger(name) for name in names]
    saved = [list(logger.handlers) for logger in loggers]
    for logger in loggers:
        logger.handlers = [LogLines(command)]
    try:
        yield
    finally:
        for logger, handlers in zip(loggers, saved, strict=True):
            logger.handlers = handlers
