"""I-JEPA in the pretraining module: the target encoder gets no gradient and no optimizer
slot, moves by EMA of the backbone after each step, and resumes exactly from a checkpoint."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torchdata.stateful_dataloader import StatefulDataLoader

from domainfm.core.ema import cosine_momentum
from domainfm.core.objectives import IJEPA
from domainfm.core.vit import VisionTransformerND
from domainfm.tasks.pretrain_module import PretrainModule, TeacherUpdate

STEPS = 4


def _module() -> PretrainModule:
    torch.manual_seed(0)
    vit = VisionTransformerND(
        in_chans=1,
        spatial_dims=2,
        patch_size=4,
        embed_dim=16,
        depth=2,
        num_heads=2,
        class_token=False,
        global_pool="avg",
    )
    ijepa = IJEPA(predictor_dim=12, predictor_depth=1, predictor_heads=3, min_context=4)
    return PretrainModule(
        backbone=vit, objectives={"ijepa": ijepa}, lr=1e-2, warmup_steps=1, ema_momentum=0.9
    )


def _data() -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [{"input": torch.randn(1, 24, 32, generator=g)} for _ in range(2 * STEPS)]  # 6 x 8


def _trainer(root: Path | None, steps: int, callbacks: list[L.Callback]) -> L.Trainer:
    return L.Trainer(
        max_steps=steps,
        default_root_dir=root,
        logger=False,
        enable_checkpointing=root is not None,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        callbacks=callbacks,
    )


def _loader() -> StatefulDataLoader[Any]:
    """In order; resumable mid-epoch (as the data modules' loaders)."""
    return StatefulDataLoader(_data(), batch_size=2)  # type: ignore[arg-type]


class _EMAProbe(L.Callback):
    """Per step: the target encoder before it, the backbone after the optimizer step (this
    callback runs before :class:`TeacherUpdate`) and the momentum of the EMA update."""

    def __init__(self) -> None:
        self.targets: list[list[torch.Tensor]] = []
        self.students: list[list[torch.Tensor]] = []
        self.momenta: list[float] = []

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, *_: Any) -> None:
        self.targets.append(_target(module))

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *_: Any) -> None:
        assert isinstance(module, PretrainModule)
        target = module.objectives["ijepa"].target_encoder
        assert all(p.grad is None for p in target.parameters()), "gradient in the target"
        unchanged = zip(self.targets[-1], _target(module), strict=True)
        assert all(torch.equal(a, b) for a, b in unchanged), "the optimizer moved the target"
        self.students.append([p.detach().clone() for p in module.backbone.parameters()])
        total = int(trainer.estimated_stepping_batches)
        self.momenta.append(cosine_momentum(module.global_step, total, base=module.ema_momentum))


def _target(module: L.LightningModule) -> list[torch.Tensor]:
    target = module.objectives["ijepa"].target_encoder  # type: ignore[union-attr,index]
    return [p.detach().clone() for p in target.teacher.parameters()]


def test_target_encoder_gets_no_gradient_and_follows_the_backbone_by_ema() -> None:
    module = _module()
    target = module.objectives["ijepa"].target_encoder
    assert isinstance(target, torch.nn.Module)
    assert isinstance(module.configure_callbacks()[0], TeacherUpdate)
    assert not module.projectors and not module.teachers  # a batch objective, own heads
    start = _target(module)
    probe = _EMAProbe()
    _trainer(None, STEPS, [probe]).fit(module, _loader())

    optimizer = module.optimizers().optimizer  # type: ignore[union-attr]
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not any(id(p) in optimized for p in target.parameters())
    assert all(not p.requires_grad for p in target.parameters())
    after = _target(module)
    assert 0.9 < probe.momenta[0] < 1.0 and len(probe.momenta) == STEPS
    for step, m in enumerate(probe.momenta):  # θ̄ <- m θ̄ + (1 - m) θ after every step
        new = probe.targets[step + 1] if step + 1 < STEPS else after
        for t_new, t_old, student in zip(
            new, probe.targets[step], probe.students[step], strict=True
        ):
            torch.testing.assert_close(t_new, m * t_old + (1 - m) * student, rtol=0, atol=1e-6)
    # it moved, but lags behind the backbone
    backbone = [p.detach() for p in module.backbone.parameters()]
    assert not all(torch.equal(a, b) for a, b in zip(after, start, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(after, backbone, strict=True))


def test_target_encoder_is_checkpointed_and_a_resume_is_exact(tmp_path: Path) -> None:
    every = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_top_k=-1)
    full = _module()
    _trainer(tmp_path, STEPS, [every]).fit(full, _loader())
    (checkpoint,) = (tmp_path / "ckpt").glob("*step=2.ckpt")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    assert any(k.startswith("objectives.ijepa.target_encoder.teacher.blocks.") for k in state)

    resumed = _module()
    _trainer(tmp_path / "resumed", STEPS, []).fit(resumed, _loader(), ckpt_path=checkpoint)
    expected = full.state_dict()
    got = resumed.state_dict()
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


def test_bf16_mixed_precision_steps() -> None:
    module = _module()
    trainer = L.Trainer(
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        precision="bf16-mixed",
    )
    trainer.fit(module, _loader())
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    target = module.objectives["ijepa"].target_encoder
    assert all(p.dtype == torch.float32 for p in target.parameters())  # type: ignore[union-attr]


REPO = Path(__file__).resolve().parents[2]
CT_OVERRIDES = """\
trainer:
  max_steps: 10
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
    backbone:
      init_args: {{embed_dim: 32, depth: 2, num_heads: 4, drop_path_rate: 0.1}}
data:
  init_args: {{samples_per_volume: 4, batch_size: 2, num_workers: 1}}
"""


def _ct_cmd(root: Path, extra: list[str]) -> list[str]:
    overrides = root / "overrides.yaml"
    overrides.write_text(CT_OVERRIDES.format(root=root))
    config = REPO / "configs/medical3d/ijepa_ct.yaml"
    fit = [sys.executable, "-m", "domainfm.cli", "fit"]
    return [*fit, "--config", str(config), "--config", str(overrides), *extra]


@pytest.mark.slow
def test_ijepa_ct_config_resumes_exactly(
    tmp_path: Path, data_root: Path, kill_resume: Callable[..., int]
) -> None:
    """The CT config through the CLI (blocks drawn in the training step from the restored
    RNG, the EMA target in the checkpoint): killed mid-epoch 1, and resumed from the last
    batch of epoch 0 and mid-epoch 1, every run ends bit-identical to the uninterrupted one."""
    env = {**os.environ, "DOMAINFM_DATA": str(data_root), "OMP_NUM_THREADS": "1"}
    kill_resume(
        _ct_cmd,
        tmp_path,
        max_steps=10,
        kill_after_step=6,
        steps_per_epoch=4,
        env=env,
        resume_steps=(4, 7),
    )
