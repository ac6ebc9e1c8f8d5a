"""Shared fixtures: the example-data root (tests that need it skip with a clear message)."""

from __future__ import annotations

import csv
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from domainfm.data.data_root import ENV_VAR, example_data_root


@pytest.fixture(scope="session")
def data_root() -> Path:
    try:
        return example_data_root()
    except FileNotFoundError as err:
        pytest.skip(f"example data absent ({err}); set ${ENV_VAR} to run this test")


def _losses(root: Path) -> dict[int, float]:
    """step → train/loss over every CSV log under root (later versions win)."""
    out: dict[int, float] = {}
    for path in sorted(root.rglob("metrics.csv")):
        with open(path) as handle:
            for row in csv.DictReader(handle):
                if row.get("train/loss"):
                    out[int(row["step"])] = float(row["train/loss"])
    return out


def kill_and_resume(
    command: Callable[[Path, list[str]], list[str]],
    tmp_path: Path,
    *,
    max_steps: int,
    kill_after_step: int,
    steps_per_epoch: int,
    env: dict[str, str],
) -> int:
    """Run ``command`` uninterrupted; run it again, SIGKILL it once the checkpoint of step
    ``kill_after_step`` exists, resume from its newest checkpoint; assert the resumed losses
    and final weights equal the uninterrupted run's. ``command(root, extra_args)`` builds
    the command line writing under ``root`` (checkpoints every step in ``root/ckpt``).
    Returns the step the run resumed from."""
    full = tmp_path / "full"
    full.mkdir()
    done = subprocess.run(
        command(full, []), cwd=full, env=env, capture_output=True, text=True, timeout=400
    )
    assert done.returncode == 0, done.stderr[-3000:]
    reference = _losses(full)
    assert sorted(reference) == list(range(max_steps)), reference

    killed = tmp_path / "killed"
    killed.mkdir()
    proc = subprocess.Popen(
        command(killed, []),
        cwd=killed,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    target = killed / "ckpt" / f"epoch=0-step={kill_after_step}.ckpt"
    deadline = time.monotonic() + 300
    while not target.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    # the newest complete checkpoint (writes are atomic: a file that exists is whole)
    last = max((killed / "ckpt").glob("epoch=*-step=*.ckpt"), key=lambda p: p.stat().st_mtime)
    saved = torch.load(last, map_location="cpu", weights_only=True)
    step = int(saved["global_step"])
    assert kill_after_step <= step < steps_per_epoch, f"kill landed at step {step}, not mid-epoch 0"

    resumed = subprocess.run(
        command(killed, ["--ckpt_path", str(last)]),
        cwd=killed,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # a SIGKILL can land before the CSV logger flushed, so the killed run's own rows are
    # compared where they exist; every step from the resume point on must be logged
    got = _losses(killed)
    assert set(range(step, max_steps)) <= set(got), sorted(got)
    for s in sorted(got):
        assert got[s] == pytest.approx(reference[s], rel=1e-6, abs=1e-7), (s, got[s], reference[s])
    # and the resumed run ends with exactly the weights of the uninterrupted one
    final = torch.load(killed / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    expected = torch.load(full / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    assert final["global_step"] == expected["global_step"] == max_steps
    for key, value in expected["state_dict"].items():
        assert torch.equal(final["state_dict"][key], value), key
    return step


@pytest.fixture
def kill_resume() -> Callable[..., int]:
    """:func:`kill_and_resume`, for the resume tests."""
    return kill_and_resume
