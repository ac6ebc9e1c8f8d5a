"""The multi-node recipe (configs/scale/) runs end to end on CPU: ``torchrun`` with 2
processes (gloo) pretrains on prepared real CT shards, checkpoints, and resumes; the FSDP
variant's strategy block instantiates (Lightning runs FSDP on GPUs only)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml
from jsonargparse import ArgumentParser
from lightning.pytorch.strategies import FSDPStrategy, Strategy
from timm.models.vision_transformer import Block

from domainfm.core.vit import VisionTransformerND
from domainfm.data.shards import prepare_shards
from domainfm.domains.medical3d.shards import VolumePreparer

REPO = Path(__file__).resolve().parents[1]
DDP = REPO / "configs/scale/vit_b_mae_ct_ddp.yaml"
FSDP = REPO / "configs/scale/vit_b_mae_ct_fsdp.yaml"

CPU_OVERRIDES = """\
trainer:
  accelerator: cpu
  devices: 2
  num_nodes: 1
  precision: 32-true
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
model:
  init_args:
    backbone:
      init_args: {{embed_dim: 32, depth: 2, num_heads: 4}}
    objectives:
      mae:
        init_args: {{embed_dim: 32, decoder_dim: 32, decoder_depth: 1, decoder_heads: 4}}
data:
  init_args:
    shards: {shards}
    crop_size: 32
    samples_per_volume: 2
    batch_size: 1
    num_workers: 2
"""


def _torchrun(root: Path, shards: Path, max_steps: int, *extra: str) -> str:
    overrides = root / f"cpu_{max_steps}.yaml"
    overrides.write_text(CPU_OVERRIDES.format(max_steps=max_steps, root=root, shards=shards))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "domainfm.cli",
        "fit",
        "--config",
        str(DDP),
        "--config",
        str(overrides),
        "--trainer.strategy.init_args.process_group_backend=gloo",
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def test_ddp_recipe_two_processes_fit_and_resume(tmp_path: Path, data_root: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    ts = data_root / "medical/totalsegmentator_examples"
    for name in ("ct_full/example_ct.nii.gz", "ct_labeled/example_ct_sm.nii.gz"):
        (src / Path(name).name).symlink_to(ts / name)
    shards = tmp_path / "prepared"
    prepare_shards(VolumePreparer(spacing=3.0, modality="ct"), src, shards)

    out = _torchrun(tmp_path, shards, 3)
    summaries = [line for line in out.splitlines() if line.startswith("domainfm fit:")]
    assert len(summaries) == 1 and "3 steps" in summaries[0], out[-2000:]  # rank 0 reports
    last = tmp_path / "ckpt" / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=True)
    assert saved["global_step"] == 3
    # every rank's loader position is in the checkpoint; resuming continues the same run
    assert saved["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    out = _torchrun(tmp_path, shards, 5, f"--ckpt_path={last}")
    assert "5 steps" in out, out[-2000:]
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 5


def test_fsdp_recipe_strategy_instantiates_and_wraps_the_backbone_blocks() -> None:
    block = yaml.safe_load(FSDP.read_text())["trainer"]["strategy"]
    parser = ArgumentParser()
    parser.add_argument("--strategy", type=Strategy)
    strategy = parser.instantiate_classes(parser.parse_object({"strategy": block})).strategy
    assert isinstance(strategy, FSDPStrategy)
    assert strategy._state_dict_type == "full"
    policy = strategy.kwargs["auto_wrap_policy"]
    wrapped = getattr(policy, "_module_classes", None) or set(policy)
    assert Block in wrapped
    # the recipe's backbone is built from those blocks, so each becomes one FSDP unit
    ddp = yaml.safe_load(DDP.read_text())["model"]["init_args"]["backbone"]["init_args"]
    vit = VisionTransformerND(**{**ddp, "embed_dim": 64, "depth": 2, "num_heads": 4})
    assert sum(isinstance(m, Block) for m in vit.modules()) == 2
