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


def _final_weights_equal(root: Path, reference: Path, max_steps: int) -> None:
    final = torch.load(root / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    expected = torch.load(reference / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    assert final["global_step"] == expected["global_step"] == max_steps
    assert final["epoch"] == expected["epoch"], "the resumed run counts its epochs differently"
    for key, value in expected["state_dict"].items():
        assert torch.equal(final["state_dict"][key], value), key


def _resume_matches(
    command: Callable[[Path, list[str]], list[str]],
    root: Path,
    checkpoint: Path,
    full: Path,
    *,
    max_steps: int,
    env: dict[str, str],
) -> None:
    """Resume ``command`` in ``root`` from ``checkpoint``: the losses from its step on and the
    final weights must equal the uninterrupted run's in ``full``."""
    reference = _losses(full)
    step = int(torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"])
    resumed = subprocess.run(
        command(root, ["--ckpt_path", str(checkpoint)]),
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # a SIGKILL can land before the CSV logger flushed, so the killed run's own rows are
    # compared where they exist; every step from the resume point on must be logged
    got = _losses(root)
    assert set(range(step, max_steps)) <= set(got), sorted(got)
    for s in sorted(got):
        assert got[s] == reference[s], (checkpoint.name, s, got[s], reference[s])
    _final_weights_equal(root, full, max_steps)


def kill_and_resume(
    command: Callable[[Path, list[str]], list[str]],
    tmp_path: Path,
    *,
    max_steps: int,
    kill_after_step: int,
    steps_per_epoch: int,
    env: dict[str, str],
    resume_steps: tuple[int, ...] = (),
) -> int:
    """Run ``command`` uninterrupted; run it again, SIGKILL it once the checkpoint of step
    ``kill_after_step`` exists (the kill must land mid-epoch, in that step's epoch), resume
    from its newest checkpoint; assert the resumed losses and final weights equal the
    uninterrupted run's, bit for bit. Then resume from each of the uninterrupted run's
    checkpoints after ``resume_steps`` steps (e.g. the last batch of an epoch) the same way.
    ``command(root, extra_args)`` builds the command line writing under ``root``
    (checkpoints every step in ``root/ckpt``). Returns the step the killed run resumed from."""
    full = tmp_path / "full"
    full.mkdir()
    done = subprocess.run(
        command(full, []), cwd=full, env=env, capture_output=True, text=True, timeout=400
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(_losses(full)) == list(range(max_steps)), _losses(full)

    killed = tmp_path / "killed"
    killed.mkdir()
    proc = subprocess.Popen(
        command(killed, []),
        cwd=killed,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while (
        not any((killed / "ckpt").glob(f"epoch=*-step={kill_after_step}.ckpt"))
        and proc.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    # the newest complete checkpoint (writes are atomic: a file that exists is whole)
    last = max((killed / "ckpt").glob("epoch=*-step=*.ckpt"), key=lambda p: p.stat().st_mtime)
    step = int(torch.load(last, map_location="cpu", weights_only=True)["global_step"])
    epoch = (kill_after_step - 1) // steps_per_epoch
    assert (step - 1) // steps_per_epoch == epoch and step % steps_per_epoch, (
        f"kill landed after step {step}, not mid-epoch {epoch}"
    )
    _resume_matches(command, killed, last, full, max_steps=max_steps, env=env)

    for at in resume_steps:
        root = tmp_path / f"resumed_from_{at}"
        root.mkdir()
        (checkpoint,) = (full / "ckpt").glob(f"epoch=*-step={at}.ckpt")
        _resume_matches(command, root, checkpoint, full, max_steps=max_steps, env=env)
    return step


@pytest.fixture
def kill_resume() -> Callable[..., int]:
    """:func:`kill_and_resume`, for the resume tests."""
    return kill_and_resume
