"""DetectionModule: torchvision Faster R-CNN over domainfm backbones — batches, losses and
gradients, a detector that learns to find squares, checkpoint layout and strict reload."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from domainfm.core.vit import VisionTransformerND
from domainfm.data.collate import collate_detection
from domainfm.tasks.detection_module import (
    BackboneFPN,
    DetectionModule,
    load_detector,
)


def _vit(in_chans: int = 4, depth: int = 2) -> VisionTransformerND:
    return VisionTransformerND(
        in_chans=in_chans, spatial_dims=2, patch_size=8, embed_dim=32, depth=depth, num_heads=2
    )


class _Squares(Dataset):
    """4-band 32 × 32 images with one bright square (class 1) or a bright bar (class 2)."""

    def __init__(self, count: int, seed: int) -> None:
        self.count, self.seed = count, seed

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1000 + i)
        x = 0.1 * torch.randn(4, 32, 32, generator=g)
        cls = 1 + i % 2
        h, w = (10, 10) if cls == 1 else (6, 16)
        r = int(torch.randint(0, 32 - h + 1, (), generator=g))
        c = int(torch.randint(0, 32 - w + 1, (), generator=g))
        x[:, r : r + h, c : c + w] += 2.0
        return {
            "input": x,
            "boxes": torch.tensor([[c, r, c + w, r + h]], dtype=torch.float32),
            "labels": torch.tensor([cls]),
        }


def test_collate_keeps_per_image_boxes() -> None:
    ds = _Squares(3, 0)
    samples = [ds[0], ds[1], {**ds[2], "boxes": torch.zeros(0, 4), "labels": torch.zeros(0)}]
    batch = collate_detection(samples)
    assert batch["input"].shape == (3, 4, 32, 32)
    assert [b.shape for b in batch["boxes"]] == [(1, 4), (1, 4), (0, 4)]
    assert batch["labels"][2].dtype == torch.long


def test_losses_reach_backbone_and_eval_returns_detections() -> None:
    torch.manual_seed(0)
    module = DetectionModule(backbone=_vit(), num_classes=3, image_size=32)
    batch = collate_detection([_Squares(2, 0)[i] for i in range(2)])
    module.train()
    losses = module(batch["input"], module._targets(batch))
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    total = torch.stack(list(losses.values())).sum()
    assert torch.isfinite(total)
    total.backward()
    assert module.backbone.patch_embed.proj.weight.grad.abs().sum() > 0
    module.eval()
    with torch.no_grad():
        out = module(batch["input"])
    assert len(out) == 2 and out[0]["boxes"].shape[1] == 4
    assert out[0]["labels"].shape == out[0]["scores"].shape


def test_pyramid_levels_and_anchor_check() -> None:
    features = BackboneFPN(_vit(depth=4), num_maps=4, out_channels=16)
    maps = features(torch.randn(1, 4, 32, 32))
    assert list(maps) == ["0", "1", "2", "3", "pool"]
    assert [tuple(m.shape[2:]) for m in maps.values()] == [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    assert features.strides == (2.0, 4.0, 8.0, 16.0, 32.0)
    with pytest.raises(ValueError, match="anchor_sizes has 2 values for 5 pyramid levels"):
        DetectionModule(backbone=_vit(depth=4), num_classes=2, image_size=32, anchor_sizes=[4, 8])
    vol = VisionTransformerND(
        in_chans=1, spatial_dims=3, patch_size=4, embed_dim=32, depth=2, num_heads=2
    )
    with pytest.raises(ValueError, match="2D backbone"):
        DetectionModule(backbone=vol, num_classes=2, image_size=16)


@pytest.mark.slow  # keeps the default suite under ~10 min on 2 cores
def test_learns_to_detect_squares_and_reloads(tmp_path: Path) -> None:
    """Trained briefly on synthetic squares and bars, the detector finds held-out ones
    (mAP@0.5 well above an untrained model's); its checkpoint has the backbone once, under
    ``backbone.*``, and reloads strictly with identical detections."""
    L.seed_everything(0)
    module = DetectionModule(
        backbone=_vit(),
        num_classes=3,
        image_size=32,
        fpn_dim=32,
        lr=2e-3,
        anchor_sizes=[8, 16, 32],
    )
    train = DataLoader(_Squares(64, 0), batch_size=8, shuffle=True, collate_fn=collate_detection)
    val = DataLoader(_Squares(16, 1), batch_size=8, collate_fn=collate_detection)
    trainer = L.Trainer(
        max_steps=120,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        check_val_every_n_epoch=100,
        enable_checkpointing=False,
    )
    before = trainer.validate(module, val, verbose=False)[0]["val/map_50"]
    trainer.fit(module, train)
    after = trainer.validate(module, val, verbose=False)[0]["val/map_50"]
    print(f"mAP@0.5 before {before:.3f} after {after:.3f}")
    assert after > 0.5 and after > before + 0.3, (before, after)

    ckpt = tmp_path / "det.ckpt"
    trainer.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert "backbone.patch_embed.proj.weight" in state
    assert not any(k.startswith("model.backbone.encoder") for k in state)
    reloaded, meta = load_detector(ckpt)
    assert meta["recipe"]["detect"]["anchor_sizes"] == [8.0, 16.0, 32.0]
    batch = next(iter(val))
    module.eval()
    with torch.no_grad():
        a, b = module(batch["input"]), reloaded(batch["input"])
    torch.testing.assert_close(a[0]["boxes"], b[0]["boxes"])


def test_load_detector_refuses_other_checkpoints(tmp_path: Path) -> None:
    path = tmp_path / "x.ckpt"
    torch.save({"state_dict": {}, "domainfm": {"recipe": {"finetune": {}}}}, path)
    with pytest.raises(ValueError, match="not a checkpoint written by DetectionModule"):
        load_detector(path)
