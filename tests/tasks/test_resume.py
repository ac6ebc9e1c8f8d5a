"""Kill a real CPU pretraining run mid-epoch (SIGKILL), resume it, compare loss sequences."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

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


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(
    tmp_path: Path, data_root: Path, kill_resume: Callable[..., int]
) -> None:
    env = {**os.environ, "DOMAINFM_DATA": str(data_root), "OMP_NUM_THREADS": "1"}
    kill_resume(
        _cmd,
        tmp_path,
        max_steps=MAX_STEPS,
        kill_after_step=KILL_AFTER_STEP,
        steps_per_epoch=6,
        env=env,
    )
