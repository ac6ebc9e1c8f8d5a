from __future__ import annotations

import itertools
import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from domainfm.core.ema import EMATeacher
from domainfm.core.masking import MaskingCollate, RandomMasking
from domainfm.core.objectives import (
    BYOL,
    MAE,
    BarlowTwins,
    InfoNCE,
    Inpainting,
    MoCo,
    RotationPrediction,
    VICReg,
    VoCo,
)
from domainfm.core.registry import init_config
from domainfm.core.vit import VisionTransformerND
from domainfm.tasks.lr_schedule import warmup_cosine
from domainfm.tasks.param_groups import param_groups
from domainfm.tasks.pretrain_module import PretrainModule


def _vit() -> VisionTransformerND:
    return VisionTransformerND(
        in_chans=1, spatial_dims=2, patch_size=8, embed_dim=32, depth=2, num_heads=4
    )


def _pairs(n: int = 8) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    base = [torch.randn(1, 16, 16, generator=g) for _ in range(n)]
    return [
        {
            "view1": b + 0.1 * torch.randn(1, 16, 16, generator=g),
            "view2": b + 0.1 * torch.randn(1, 16, 16, generator=g),
        }
        for b in base
    ]


def _fit(module: PretrainModule, data: list, steps: int = 3, **kw: object) -> L.Trainer:
    trainer = L.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        **kw,
    )  # type: ignore[arg-type]
    trainer.fit(module, DataLoader(data, batch_size=4, drop_last=True))  # type: ignore[arg-type]
    return trainer


@pytest.mark.parametrize(
    "objective",
    [InfoNCE(temperature=0.2), BarlowTwins(), VICReg(), BYOL(), MoCo(dim=16, queue_size=32)],
    ids=["infonce", "barlow", "vicreg", "byol", "moco"],
)
def test_two_view_objectives_train(objective: torch.nn.Module) -> None:
    torch.manual_seed(0)
    module = PretrainModule(
        backbone=_vit(),
        objectives={"ssl": objective},
        projector_hidden_dim=32,
        projector_dim=16,
        lr=1e-3,
        warmup_steps=1,
    )
    before = module.backbone.patch_embed.proj.weight.clone()
    trainer = _fit(module, _pairs())
    assert not torch.equal(before, module.backbone.patch_embed.proj.weight)
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))
    if isinstance(objective, BYOL | MoCo):
        teacher = module.teachers["ssl"]
        assert isinstance(teacher, EMATeacher)
        assert all(not p.requires_grad for p in teacher.parameters())
        # the teacher followed the student, but lags behind it
        t_w = teacher.teacher[0].patch_embed.proj.weight  # type: ignore[index]
        s_w = module.backbone.patch_embed.proj.weight
        assert not torch.equal(t_w, before) and not torch.equal(t_w, s_w)
        assert "train/ema_momentum" in trainer.callback_metrics


def test_weighted_sum_of_objectives() -> None:
    torch.manual_seed(0)
    module = PretrainModule(
        backbone=_vit(),
        objectives={
            "mae": MAE(
                embed_dim=32,
                in_chans=1,
                patch_size=(8, 8),
                decoder_dim=32,
                decoder_depth=1,
                decoder_heads=4,
            ),
            "nce": InfoNCE(),
        },
        weights={"mae": 2.0, "nce": 0.5},
        projector_hidden_dim=32,
        projector_dim=16,
    )
    batch = _pairs(4)
    x = torch.stack([b["view1"] for b in batch])
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[:, :3] = True
    data = {
        "view1": x,
        "view2": torch.stack([b["view2"] for b in batch]),
        "input": x,
        "mask": mask,
        "keep_idx": torch.full((4, 1), 3),
    }
    torch.manual_seed(1)
    total, logs = module.compute_losses(data)
    assert total.item() == pytest.approx(
        2.0 * logs["mae"].item() + 0.5 * logs["nce"].item(), rel=1e-5
    )
    assert "nce/top1_acc" in logs


def test_bad_configuration_errors() -> None:
    with pytest.raises(ValueError, match="objectives is empty"):
        PretrainModule(backbone=_vit(), objectives={})
    with pytest.raises(ValueError, match=r"weights name objectives that do not exist: \['x'\]"):
        PretrainModule(backbone=_vit(), objectives={"nce": InfoNCE()}, weights={"x": 1.0})
    mae = MAE(embed_dim=32, in_chans=1, patch_size=(4, 4))
    with pytest.raises(ValueError, match=r"patch_size \(4, 4\) differs from the backbone's"):
        PretrainModule(backbone=_vit(), objectives={"mae": mae})


def _sized_from_backbone() -> dict[str, torch.nn.Module]:
    return {
        "mae": MAE(decoder_dim=16, decoder_depth=1, decoder_heads=4),
        "inpaint": Inpainting(),
        "rotation": RotationPrediction(),
        "voco": VoCo(hidden_dim=16, out_dim=8),
    }


def test_objectives_are_sized_from_the_backbone() -> None:
    """Objectives left without backbone sizes are bound at construction: their heads exist
    before a state dict is loaded (a resumed checkpoint), and given sizes are checked."""
    module = PretrainModule(backbone=_vit(), objectives=_sized_from_backbone())
    mae, inpaint = module.objectives["mae"], module.objectives["inpaint"]
    assert isinstance(mae, MAE) and isinstance(inpaint, Inpainting)
    assert (mae.embed_dim, mae.in_chans, mae.patch_size) == (32, 1, (8, 8))
    assert inpaint.head.out_features == 64
    assert module.objectives["rotation"].head.in_features == 32
    fresh = PretrainModule(backbone=_vit(), objectives=_sized_from_backbone())
    fresh.load_state_dict(module.state_dict())  # strict: every key exists
    recipe = module.export_metadata()["recipe"]["objectives"]
    assert recipe["mae"]["patch_size"] == [8, 8] and recipe["voco"]["embed_dim"] == 32
    with pytest.raises(ValueError, match=r"objective 'mae': MAE embed_dim 64 differs"):
        PretrainModule(
            backbone=_vit(), objectives={"mae": MAE(embed_dim=64, decoder_dim=16, decoder_heads=4)}
        )
    with pytest.raises(ValueError, match=r"objective 'rot': RotationPrediction embed_dim 8 diff"):
        PretrainModule(backbone=_vit(), objectives={"rot": RotationPrediction(embed_dim=8)})


class _MaskedImages(L.LightningDataModule):
    """A data module drawing MAE masks on a patch-16 grid of its own (not the backbone's)."""

    def __init__(self) -> None:
        super().__init__()
        self.collate = MaskingCollate(masking=RandomMasking(ratio=0.5), patch_size=16)

    def train_dataloader(self) -> DataLoader:
        images = [torch.randn(1, 16, 16) for _ in range(8)]
        return DataLoader(images, batch_size=4, collate_fn=self.collate)  # type: ignore[arg-type]


def test_masks_drawn_on_the_backbone_grid() -> None:
    """With a masked objective the data module's masks follow the backbone's patch size
    (8 here), whatever its own masking says."""
    torch.manual_seed(0)
    module = PretrainModule(
        backbone=_vit(), objectives={"mae": MAE(decoder_dim=16, decoder_heads=4)}, lr=1e-3
    )
    data = _MaskedImages()
    trainer = L.Trainer(
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        accelerator="cpu",
    )
    trainer.fit(module, datamodule=data)
    assert data.collate.patch_size == (8, 8)
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))


def test_layer_decay_groups() -> None:
    module = PretrainModule(
        backbone=_vit(), objectives={"nce": InfoNCE()}, projector_hidden_dim=32, projector_dim=16
    )
    groups = param_groups(module, weight_decay=0.05, layer_decay=0.5, depth=2)
    scale_of = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    named = dict(module.named_parameters())
    assert scale_of[id(named["backbone.patch_embed.proj.weight"])] == 0.125  # 0.5 ** 3
    assert scale_of[id(named["backbone.blocks.0.attn.qkv.weight"])] == 0.25
    assert scale_of[id(named["backbone.blocks.1.mlp.fc1.weight"])] == 0.5
    assert scale_of[id(named["backbone.norm.weight"])] == 1.0
    assert scale_of[id(named["projectors.nce.net.0.weight"])] == 1.0
    assert decay_of[id(named["backbone.blocks.0.attn.qkv.weight"])] == 0.05
    assert decay_of[id(named["backbone.blocks.0.attn.qkv.bias"])] == 0.0
    assert decay_of[id(named["backbone.cls_token"])] == 0.0
    assert decay_of[id(named["backbone.blocks.0.norm1.weight"])] == 0.0
    with pytest.raises(ValueError, match="layer_decay must be in"):
        param_groups(module, weight_decay=0.0, layer_decay=1.5, depth=2)


def test_warmup_cosine_schedule() -> None:
    f = [warmup_cosine(s, warmup_steps=4, total_steps=12) for s in range(13)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0]
    assert f[4] == 1.0 and f[8] == pytest.approx(0.5) and f[12] == pytest.approx(0.0)
    assert all(a >= b for a, b in itertools.pairwise(f[4:]))


def test_bf16_mixed_precision_step() -> None:
    torch.manual_seed(0)
    module = PretrainModule(
        backbone=_vit(),
        objectives={"nce": InfoNCE(temperature=0.1)},
        projector_hidden_dim=32,
        projector_dim=16,
    )
    trainer = _fit(module, _pairs(), steps=2, precision="bf16-mixed")
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))
    assert module.backbone.patch_embed.proj.weight.dtype == torch.float32


def test_registered_classes_record_their_kwargs() -> None:
    vit = _vit()
    assert init_config(vit)["kwargs"]["embed_dim"] == 32
    assert init_config(InfoNCE(temperature=0.3)) == {
        "architecture": "infonce",
        "kwargs": {"temperature": 0.3, "gather_distributed": True},
    }
    with pytest.raises(TypeError, match="not a registered class"):
        init_config(torch.nn.Linear(2, 2))
