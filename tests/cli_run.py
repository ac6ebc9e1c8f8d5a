"""Run ``domainfm``'s CLI in-process for the CLI tests: a helper, not a test module (test
modules load it by path: ``run_path(str(Path(__file__).with_name("cli_run.py")))``)."""

from __future__ import annotations

import pytest

from domainfm.cli import main


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``domainfm <argv>`` → ``(exit code, stdout, stderr)`` (the CLI always exits)."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    out = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 0), out.out, out.err
