"""Detection3DModule: MONAI's RetinaNet over 3D domainfm backbones (ViT through the simple
pyramid, SegResNet and Swin stages) — pyramid levels and checks, losses reaching the backbone,
eval detections, sliding windows over larger volumes, learning bright cubes (loss falls, the
cube found), validation metrics logged, checkpoint layout, strict reload and the detector
loader of ``domainfm detect``."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from domainfm.core.vit import VisionTransformerND
from domainfm.domains.medical3d.boxed_volumes import collate_boxes
from domainfm.domains.medical3d.cnn import SegResNetEncoder3D
from domainfm.domains.medical3d.swin import SwinViT3D
from domainfm.tasks.detection3d_module import (
    Detection3DModule,
    VolumeFeaturePyramid,
    load_detector3d,
)
from domainfm.tasks.detector_checkpoint import detector_task, load_any_detector


def _vit(depth: int = 2, embed_dim: int = 32) -> VisionTransformerND:
    return VisionTransformerND(
        in_chans=1, spatial_dims=3, patch_size=8, embed_dim=embed_dim, depth=depth, num_heads=2
    )


BACKBONES = {
    "vit": lambda: _vit(depth=4),
    "segresnet": lambda: SegResNetEncoder3D(
        in_chans=1, init_filters=8, blocks_down=(1, 1, 1, 1), norm=("group", {"num_groups": 4})
    ),
    "swin": lambda: SwinViT3D(
        in_chans=1, feature_size=12, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), window_size=4
    ),
}


class _Cubes(Dataset):
    """1-channel 32³ volumes with one bright cube of side 8-12 at a random place."""

    def __init__(self, count: int, seed: int) -> None:
        self.count, self.seed = count, seed

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1000 + i)
        x = 0.1 * torch.randn(1, 32, 32, 32, generator=g)
        side = [int(torch.randint(8, 13, (), generator=g)) for _ in range(3)]
        low = [int(torch.randint(0, 32 - s + 1, (), generator=g)) for s in side]
        x[:, low[0] : low[0] + side[0], low[1] : low[1] + side[1], low[2] : low[2] + side[2]] += 1
        box = torch.tensor([[*low, *(lo + s for lo, s in zip(low, side, strict=True))]])
        return {"input": x, "boxes": box.float(), "labels": torch.tensor([0])}


@pytest.mark.parametrize(
    ("name", "strides"),
    [
        ("vit", [2.0, 4.0, 8.0, 16.0]),
        ("segresnet", [2.0, 4.0, 8.0]),
        ("swin", [2.0, 4.0, 8.0, 16.0, 32.0]),
    ],
)
def test_pyramid_levels(name: str, strides: list[float]) -> None:
    features = VolumeFeaturePyramid(BACKBONES[name](), out_channels=16)
    assert [s[0] for s in features.strides] == strides
    maps = features(torch.randn(1, 1, 32, 32, 32))
    assert [tuple(m.shape[1:]) for m in maps] == [(16, *(int(32 / s),) * 3) for s in strides]
    coarse = VolumeFeaturePyramid(BACKBONES[name](), out_channels=16, min_stride=8)
    assert (
        coarse.strides[0][0] == 8.0
        and len(coarse(torch.randn(1, 1, 32, 32, 32))) == len(strides) - 2
    )


@pytest.mark.parametrize("name", list(BACKBONES))
def test_losses_reach_the_backbone_and_eval_gives_detections(name: str) -> None:
    torch.manual_seed(0)
    module = Detection3DModule(backbone=BACKBONES[name](), num_classes=2, roi_size=32, fpn_dim=16)
    batch = collate_boxes([_Cubes(2, 0)[i] for i in range(2)])
    batch["labels"][1] = torch.tensor([1])
    module.train()
    losses = module.losses(batch)
    assert set(losses) == {"loss_cls", "loss_box"}
    total = losses["loss_cls"] + losses["loss_box"]
    assert torch.isfinite(total) and losses["loss_box"] > 0
    total.backward()
    grads = [p.grad for p in module.backbone.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0
    module.eval()
    module.configure_inference(score_threshold=0.0)
    with torch.no_grad():
        out = module(torch.randn(1, 1, 48, 40, 32))  # larger than the window: sliding windows
    assert len(out) == 1 and set(out[0]) == {"boxes", "labels", "scores"}
    boxes = out[0]["boxes"]
    assert boxes.shape[1] == 6 and len(boxes) > 0
    assert (boxes[:, 3:] <= torch.tensor([48.0, 40.0, 32.0])).all() and (boxes >= 0).all()


def test_refused_settings() -> None:
    with pytest.raises(ValueError, match="divide by"):
        Detection3DModule(backbone=_vit(), num_classes=1, roi_size=20)
    with pytest.raises(ValueError, match="multiple of 8"):
        Detection3DModule(backbone=_vit(), num_classes=1, roi_size=32, fpn_dim=12)
    with pytest.raises(ValueError, match="3D backbone"):
        flat = VisionTransformerND(
            in_chans=1, spatial_dims=2, patch_size=8, embed_dim=32, depth=1, num_heads=2
        )
        Detection3DModule(backbone=flat, num_classes=1, roi_size=32)
    with pytest.raises(ValueError, match="num_classes"):
        Detection3DModule(backbone=_vit(), num_classes=0, roi_size=32)
    with pytest.raises(ValueError, match="anchor_shapes"):
        Detection3DModule(backbone=_vit(), num_classes=1, roi_size=32, anchor_shapes=[[4, 4]])
    module = Detection3DModule(backbone=_vit(), num_classes=1, roi_size=32)
    with pytest.raises(ValueError, match="nms_iou"):
        module.configure_inference(nms_iou=0.0)
    with pytest.raises(ValueError, match="unknown inference settings: roi"):
        module.configure_inference(roi=3)


def test_learns_cubes_logs_metrics_and_reloads(tmp_path: Path) -> None:
    """Trained briefly on bright cubes, the loss falls and the top detection of a held-out
    volume overlaps its cube; validation logs mAP and FROC; the checkpoint holds the backbone
    once (``backbone.*``) and reloads strictly with identical detections."""
    L.seed_everything(0)
    module = Detection3DModule(
        backbone=_vit(depth=2), num_classes=1, roi_size=32, fpn_dim=16, lr=2e-3, warmup_steps=2
    )
    losses: list[float] = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
            losses.append(float(outputs["loss"]))

    train = DataLoader(_Cubes(48, 0), batch_size=4, shuffle=True, collate_fn=collate_boxes)
    val = DataLoader(_Cubes(4, 1), batch_size=1, collate_fn=collate_boxes)
    trainer = L.Trainer(
        max_steps=36,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
        check_val_every_n_epoch=100,
        callbacks=[Record()],
    )
    trainer.fit(module, train)
    first, last = sum(losses[:6]) / 6, sum(losses[-6:]) / 6
    print(f"loss {first:.3f} -> {last:.3f}")
    assert last < 0.7 * first, losses
    metrics = trainer.validate(module, val, verbose=False)[0]
    assert {"val/map", "val/map_10", "val/map_25", "val/map_50", "val/froc", "val/froc_fp8"} <= set(
        metrics
    )
    assert metrics["val/map_10"] > 0.5, metrics

    ckpt = tmp_path / "det3d.ckpt"
    trainer.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert "backbone.patch_embed.proj.weight" in state
    assert {k.split(".")[0] for k in state} == {"backbone", "detector"}
    assert not any(".encoder." in k for k in state)
    reloaded, meta = load_detector3d(ckpt)
    recipe = meta["recipe"]["detect3d"]
    assert recipe["roi_size"] == [32, 32, 32] and recipe["num_classes"] == 1
    assert recipe["anchor_shapes"] == [[16.0, 16.0, 16.0]]  # 4 x the finest stride (4)
    assert detector_task(ckpt) == "detect3d"
    loaded, _ = load_any_detector(ckpt, score_threshold=0.3)
    assert isinstance(loaded, Detection3DModule) and loaded.head_kwargs["score_threshold"] == 0.3
    x = _Cubes(1, 2)[0]["input"][None]
    module.eval()
    with torch.no_grad():
        a, b = module(x), reloaded(x)
    torch.testing.assert_close(a[0]["boxes"], b[0]["boxes"])


def test_detector_loader_refuses_other_files(tmp_path: Path) -> None:
    path = tmp_path / "x.ckpt"
    torch.save({"state_dict": {}, "domainfm": {"recipe": {"finetune": {}}}}, path)
    with pytest.raises(
        ValueError, match="not a checkpoint written by DetectionModule or Detection3DModule"
    ):
        load_any_detector(path)
    with pytest.raises(ValueError, match="export holds only the backbone"):
        load_any_detector(tmp_path)
    with pytest.raises(ValueError, match="not a checkpoint written by Detection3DModule"):
        load_detector3d(path)
