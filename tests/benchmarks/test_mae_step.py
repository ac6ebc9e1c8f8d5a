"""Smoke test: the MAE-vs-MONAI benchmark script still runs (tiny sizes, no timing claims)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_mae_step_quick_runs(tmp_path: Path) -> None:
    out = tmp_path / "quick.txt"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks/mae_step.py"),
            "--quick",
            "--no-memory",
            "--no-profile",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text() if out.exists() else proc.stdout
    assert "x monai" in text and "ours" in text
