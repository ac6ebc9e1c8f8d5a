"""Run ``domainfm``'s CLI in-process for the CLI tests: a helper, not a test module (test
modules load it by path: ``run_path(str(Path(__file__).with_name("cli_run.py")))``).

* :func:`run_cli`: a command that always exits (``export``, ``inspect``, ``benchmark``…);
* :func:`fit_cli`: ``domainfm fit``, which returns when it succeeds and exits when it fails;
* :func:`logged_rows` / :func:`train_losses`: a run's CSV log, to check that a loss falls.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from domainfm.cli import main


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``domainfm <argv>`` → ``(exit code, stdout, stderr)`` (the CLI always exits)."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    out = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 0), out.out, out.err


def fit_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """``domainfm fit <argv>`` → its stdout; a failed fit (it exits) fails the test with the
    end of its stderr."""
    try:
        main(["fit", *argv])
    except SystemExit as exit_:
        raise AssertionError(capsys.readouterr().err[-3000:]) from exit_
    return capsys.readouterr().out


def logged_rows(root: Path) -> list[dict[str, str]]:
    """The training rows (those with ``train/loss``) of the one CSV log under ``root``, by
    step."""
    (metrics,) = root.rglob("metrics.csv")
    with open(metrics) as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("train/loss")]
    return sorted(rows, key=lambda row: int(row["step"]))


def train_losses(root: Path) -> list[float]:
    """``train/loss`` per logged step of the run under ``root``."""
    return [float(row["train/loss"]) for row in logged_rows(root)]
