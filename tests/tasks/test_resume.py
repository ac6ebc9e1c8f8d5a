"""Kill a real CPU pretraining run mid-epoch 1 (SIGKILL), resume it, and resume from the
uninterrupted run's checkpoints on the last batch of epoch 0 and mid-epoch 2: every
resumed run must end bit-identical to the uninterrupted one (losses and weights), with the
label-free monitors on."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs/medical3d/mae_quickstart.yaml"
STEPS_PER_EPOCH = 6  # 2 volumes x 6 crops / batch 2
MAX_STEPS = 20  # epochs 0-3
KILL_AFTER_STEP = 8  # mid-epoch 1
RESUME_STEPS = (6, 14)  # last batch of epoch 0, mid-epoch 2

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
    - class_path: domainfm.tasks.monitors.RankMeMonitor
      init_args:
        every_n_steps: 4
        max_samples: 64
    - class_path: domainfm.tasks.monitors.ReconstructionPreview
      init_args:
        every_n_steps: 5
        max_images: 1
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
    num_workers: {num_workers}
"""


def _cmd(root: Path, extra: list[str], num_workers: int = 0) -> list[str]:
    overrides = root / "overrides.yaml"
    overrides.write_text(OVERRIDES.format(max_steps=MAX_STEPS, root=root, num_workers=num_workers))
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


@pytest.mark.parametrize(
    "num_workers",
    [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)],
)
def test_sigkill_in_epoch_1_and_resumes_at_epoch_ends_match_uninterrupted(
    num_workers: int, tmp_path: Path, data_root: Path, kill_resume: Callable[..., int]
) -> None:
    env = {**os.environ, "DOMAINFM_DATA": str(data_root), "OMP_NUM_THREADS": "1"}
    kill_resume(
        functools.partial(_cmd, num_workers=num_workers),
        tmp_path,
        max_steps=MAX_STEPS,
        kill_after_step=KILL_AFTER_STEP,
        steps_per_epoch=STEPS_PER_EPOCH,
        env=env,
        resume_steps=RESUME_STEPS,
    )


AUDIO_CONFIG = REPO / "configs/audio/byola_audio.yaml"
AUDIO_OVERRIDES = """\
trainer:
  max_steps: 12
  log_every_n_steps: 1
  enable_progress_bar: false
  default_root_dir: {root}
  logger:
    class_path: lightning.pytorch.loggers.CSVLogger
    init_args: {{save_dir: {root}, name: logs}}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{dirpath: {root}/ckpt, every_n_train_steps: 1, save_last: true, save_top_k: -1}}
model:
  init_args:
    projector_hidden_dim: 32
    projector_dim: 16
    backbone:
      init_args: {{n_mels: 64, d: 64}}
data:
  init_args:
    samples_per_epoch: 16
    batch_size: 4
    num_workers: 1
"""


def _audio_cmd(root: Path, extra: list[str]) -> list[str]:
    overrides = root / "overrides.yaml"
    overrides.write_text(AUDIO_OVERRIDES.format(root=root))
    fit = [sys.executable, "-m", "domainfm.cli", "fit"]
    return [*fit, "--config", str(AUDIO_CONFIG), "--config", str(overrides), *extra]


@pytest.mark.slow
def test_byol_with_ema_teacher_resumes_exactly_in_later_epochs(
    tmp_path: Path, data_root: Path, kill_resume: Callable[..., int]
) -> None:
    """BYOL-A on the audio files (file-based, an EMA teacher whose momentum follows the
    step): killed mid-epoch 1, and resumed from the last batch of epoch 0 and mid-epoch 2."""
    env = {**os.environ, "DOMAINFM_DATA": str(data_root), "OMP_NUM_THREADS": "1"}
    kill_resume(
        _audio_cmd,
        tmp_path,
        max_steps=12,
        kill_after_step=6,
        steps_per_epoch=4,
        env=env,
        resume_steps=(4, 10),
    )
