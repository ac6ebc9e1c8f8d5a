"""Kill a real CPU pretraining run mid-epoch (SIGKILL), resume it, compare loss sequences."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs/medical3d/mae_quickstart.yaml"
MAX_STEPS = 14  # 2 volumes x 6 crops / batch 2 = 6 batches per epoch: crosses 2 epochs
KILL_AFTER_STEP = 4

OVERRIDES = """\
trainer:
  max_steps: {max_steps}
  log_every_n_steps: 1
  enable_progress_bar: false
  default_root_dir: {root}
  logger:
    class_path: lightning.pytorch.loggers.CSVLogger
    init_args:
      save_dir: {root}
      name: logs
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args:
        dirpath: {root}/ckpt
        every_n_train_steps: 1
        save_last: true
        save_top_k: -1
model:
  init_args:
    backbone:
      init_args:
        embed_dim: 32
        depth: 2
        num_heads: 4
        drop_path_rate: 0.1
    objectives:
      mae:
        class_path: domainfm.core.objectives.mae.MAE
        init_args:
          embed_dim: 32
          in_chans: 1
          patch_size: [16, 16, 16]
          decoder_dim: 32
          decoder_depth: 1
          decoder_heads: 4
data:
  init_args:
    crop_size: 32
    samples_per_volume: 6
    batch_size: 2
    num_workers: 1
"""


def _cmd(root: Path, extra: list[str]) -> list[str]:
    overrides = root / "overrides.yaml"
    overrides.write_text(OVERRIDES.format(max_steps=MAX_STEPS, root=root))
    return [
        sys.executable,
        "-m",
        "domainfm.cli",
        "fit",
        "--config",
        str(CONFIG),
        "--config",
        str(overrides),
        *extra,
    ]


def _losses(root: Path) -> dict[int, float]:
    """step → train/loss over every CSV log under root (later versions win)."""
    out: dict[int, float] = {}
    for path in sorted(root.rglob("metrics.csv")):
        with open(path) as handle:
            for row in csv.DictReader(handle):
                if row.get("train/loss"):
                    out[int(row["step"])] = float(row["train/loss"])
    return out


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(
    tmp_path: Path, data_root: Path
) -> None:
    env = {**os.environ, "DOMAINFM_DATA": str(data_root), "OMP_NUM_THREADS": "1"}
    full = tmp_path / "full"
    full.mkdir()
    subprocess.run(_cmd(full, []), cwd=full, env=env, check=True, capture_output=True, timeout=300)
    reference = _losses(full)
    assert sorted(reference) == list(range(MAX_STEPS)), reference

    killed = tmp_path / "killed"
    killed.mkdir()
    proc = subprocess.Popen(
        _cmd(killed, []), cwd=killed, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    target = killed / "ckpt" / f"epoch=0-step={KILL_AFTER_STEP}.ckpt"
    deadline = time.monotonic() + 240
    while not target.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    # the newest complete checkpoint (writes are atomic: a file that exists is whole)
    last = max((killed / "ckpt").glob("epoch=*-step=*.ckpt"), key=lambda p: p.stat().st_mtime)
    saved = torch.load(last, map_location="cpu", weights_only=True)
    step = int(saved["global_step"])
    assert KILL_AFTER_STEP <= step < 6, f"kill landed at step {step}, not mid-epoch 0"

    resumed = subprocess.run(
        _cmd(killed, ["--ckpt_path", str(last)]),
        cwd=killed,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # a SIGKILL can land before the CSV logger flushed, so the killed run's own rows are
    # compared where they exist; every step from the resume point on must be logged
    got = _losses(killed)
    assert set(range(step, MAX_STEPS)) <= set(got), sorted(got)
    for s in sorted(got):
        assert got[s] == pytest.approx(reference[s], rel=1e-6, abs=1e-7), (s, got[s], reference[s])
    # and the resumed run ends with exactly the weights of the uninterrupted one
    final = torch.load(killed / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    expected = torch.load(full / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    assert final["global_step"] == expected["global_step"] == MAX_STEPS
    for key, value in expected["state_dict"].items():
        assert torch.equal(final["state_dict"][key], value), key
