from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import nibabel as nib
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from domainfm.core.vit import VisionTransformerND
from domainfm.domains.audio.ntt import AudioNTT2020
from domainfm.pretrained.registry import RELEASED
from domainfm.tasks.finetune_module import FinetuneModule, load_finetuned
from domainfm.tasks.task_module import checkpoint_metadata

CT = "medical/totalsegmentator_examples/ct_labeled/example_ct_sm.nii.gz"
SEG = "medical/totalsegmentator_examples/ct_labeled/example_seg.nii.gz"


def _vit(dims: int = 3) -> VisionTransformerND:
    return VisionTransformerND(
        in_chans=1, spatial_dims=dims, patch_size=8, embed_dim=32, depth=2, num_heads=4
    )


def _trainer(steps: int, **kw: object) -> L.Trainer:
    return L.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        num_sanity_val_steps=0,
        **kw,
    )  # type: ignore[arg-type]


def test_linear_probe_trains_only_the_head() -> None:
    torch.manual_seed(0)
    module = FinetuneModule(
        backbone=_vit(2), task="classification", num_classes=3, mode="linear_probe", lr=1e-2
    )
    before = {k: v.clone() for k, v in module.backbone.state_dict().items()}
    head_before = module.head[1].weight.clone()
    data = [{"input": torch.randn(1, 16, 16), "label": torch.tensor(i % 3)} for i in range(16)]
    _trainer(4).fit(module, DataLoader(data, batch_size=4))  # type: ignore[arg-type]
    for key, value in module.backbone.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not torch.equal(module.head[1].weight, head_before)


def test_classification_validation_metrics_match_manual() -> None:
    torch.manual_seed(0)
    module = FinetuneModule(backbone=_vit(2), task="classification", num_classes=3)
    data = [{"input": torch.randn(1, 16, 16), "label": torch.tensor(i % 3)} for i in range(12)]
    trainer = _trainer(1, limit_val_batches=3)
    metrics = trainer.validate(module, DataLoader(data, batch_size=4), verbose=False)[0]  # type: ignore[arg-type]
    module.eval()
    with torch.no_grad():
        preds = torch.cat(
            [
                module(torch.stack([d["input"] for d in data[i : i + 4]])).argmax(1)
                for i in range(0, 12, 4)
            ]
        )
    labels = torch.tensor([i % 3 for i in range(12)])
    assert metrics["val/acc"] == pytest.approx((preds == labels).float().mean().item())
    per_class = [(preds[labels == c] == c).float().mean().item() for c in range(3)]
    assert metrics["val/macc"] == pytest.approx(float(np.mean(per_class)))
    tested = trainer.test(module, DataLoader(data, batch_size=4), verbose=False)[0]  # type: ignore[arg-type]
    assert tested["test/acc"] == pytest.approx(metrics["val/acc"])
    assert tested["test/loss"] == pytest.approx(metrics["val/loss"])


def test_segmentation_fits_a_real_ct_crop(data_root: Path) -> None:
    """A few dozen steps on one real labeled crop must reach a clearly non-trivial Dice."""
    image = np.asarray(nib.load(data_root / CT).dataobj, dtype=np.float32)
    seg = np.asarray(nib.load(data_root / SEG).dataobj)
    fg = np.argwhere(seg > 0).mean(axis=0).astype(int)
    lo = [max(0, min(c - 16, s - 32)) for c, s in zip(fg[:2], image.shape[:2], strict=True)]
    region = (slice(lo[0], lo[0] + 32), slice(lo[1], lo[1] + 32), slice(0, 16))
    x = np.clip((image[region] + 1000) / 2000, 0, 1)[None]
    y = (seg[region] > 0).astype(np.int64)
    assert 0.05 < y.mean() < 0.95  # both classes present
    item = {"input": torch.from_numpy(x), "label": torch.from_numpy(y)}
    data = [item] * 4
    torch.manual_seed(0)
    vit = VisionTransformerND(
        in_chans=1, spatial_dims=3, patch_size=8, embed_dim=32, depth=2, num_heads=4
    )
    module = FinetuneModule(
        backbone=vit, task="segmentation", num_classes=2, num_maps=2, decoder_dim=16, lr=3e-3
    )
    trainer = _trainer(80)
    trainer.fit(module, DataLoader(data, batch_size=2))  # type: ignore[arg-type]
    metrics = trainer.validate(module, DataLoader(data[:2], batch_size=2), verbose=False)[0]
    assert metrics["val/dice/class_1"] > 0.6, metrics
    assert metrics["val/dice/mean"] > 0.6


def _ct_crop_32(data_root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """A 32³ crop of the real labeled CT around its foreground: input ``(1, 1, 32, 32, 32)``
    in [0, 1] and binary label ``(1, 32, 32, 32)`` (label > 0). The volume has 30 slices,
    so one edge slice is repeated at each end of the slice axis."""
    image = np.asarray(nib.load(data_root / CT).dataobj, dtype=np.float32)
    seg = np.asarray(nib.load(data_root / SEG).dataobj)
    fg = np.argwhere(seg > 0).mean(axis=0).astype(int)
    lo = [max(0, min(c - 16, s - 32)) for c, s in zip(fg[:2], image.shape[:2], strict=True)]
    region = (slice(lo[0], lo[0] + 32), slice(lo[1], lo[1] + 32), slice(None))
    pad = [(0, 0), (0, 0), ((32 - image.shape[2]) // 2, (33 - image.shape[2]) // 2)]
    x = np.pad(np.clip((image[region] + 1000) / 2000, 0, 1), pad, mode="edge")
    y = np.pad((seg[region] > 0).astype(np.int64), pad, mode="edge")
    assert x.shape == y.shape == (32, 32, 32)
    assert 0.05 < y.mean() < 0.95  # both classes present
    return torch.from_numpy(x)[None, None], torch.from_numpy(y)[None]


def _fit_losses(
    module: FinetuneModule, x: torch.Tensor, y: torch.Tensor, steps: int
) -> list[float]:
    """Plain AdamW steps on one crop through the module's own forward and loss."""
    optimizer = torch.optim.AdamW(module.parameters(), lr=module.lr)
    losses: list[float] = []
    for _ in range(steps):
        logits = module(x)
        assert logits.shape == (1, 2, 32, 32, 32)
        loss = module._loss(logits, module._labels({"input": x, "label": y}))
        optimizer.zero_grad()
        loss.backward()
        if not losses:  # the first backward reaches the whole network
            for name, param in module.named_parameters():
                if name.startswith("head.") or name.endswith(("conv_init.weight", "proj.weight")):
                    assert param.grad is not None and param.grad.abs().sum() > 0, name
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("arch", ["swin", "segresnet"])
def test_multiscale_segmentation_uses_the_unet_decoder_and_fits_a_ct_crop(
    data_root: Path, arch: str
) -> None:
    from domainfm.domains.medical3d import SegResNetEncoder3D, SwinViT3D
    from domainfm.tasks.heads.unet_decoder import UNetDecoder

    x, y = _ct_crop_32(data_root)
    torch.manual_seed(0)
    backbone: torch.nn.Module
    if arch == "swin":
        backbone = SwinViT3D(in_chans=1, feature_size=12)
    else:
        backbone = SegResNetEncoder3D(in_chans=1, init_filters=8, norm="instance")
    module = FinetuneModule(
        backbone=backbone, task="segmentation", num_classes=2, decoder_dim=8, lr=1e-2
    )
    assert isinstance(module.head, UNetDecoder)
    assert module.num_maps == len(backbone.feature_channels)
    losses = _fit_losses(module, x, y, steps=6)
    assert losses[-1] < 0.85 * losses[0], losses


# -- a released file as pretrained weights ---------------------------------------------------

BYOLA = "byola-audiontt2020-d512"


def _byola_file(folder: Path) -> Path:
    """BYOL-A's ``AudioNTT2020-BYOLA-64x96d512.pth`` as published (5 M parameters), random
    weights."""
    torch.manual_seed(0)
    path = folder / "AudioNTT2020-BYOLA-64x96d512.pth"
    torch.save(AudioNTT2020(n_mels=64, d=512).state_dict(), path)
    return path


def test_a_release_file_fine_tunes_with_its_contract_recorded(tmp_path: Path) -> None:
    """``pretrained=`` a release file, no ``released=``: identified by its layout, loaded
    strictly; with a data module recording no contract, the checkpoint records the release's
    input contract, and the release (with its licence) as provenance."""
    path = _byola_file(tmp_path)
    module = FinetuneModule(pretrained=str(path), task="classification", num_classes=2)
    assert isinstance(module.backbone, AudioNTT2020)
    entry = RELEASED.get(BYOLA)
    assert module.pretrained_input == dict(entry.input)
    torch.manual_seed(1)
    data = [{"input": torch.randn(1, 64, 96), "label": torch.tensor(i % 2)} for i in range(4)]
    trainer = _trainer(1)
    trainer.fit(module, train_dataloaders=DataLoader(data, batch_size=2))  # type: ignore[arg-type]
    ckpt = tmp_path / "finetuned.ckpt"
    trainer.save_checkpoint(ckpt)
    restored, meta = load_finetuned(ckpt)
    assert meta["input"] == json.loads(json.dumps(dict(entry.input)))
    origin = meta["provenance"]["initialized_from"]
    assert (origin["released"], origin["candidates"], origin["file"]) == (BYOLA, [BYOLA], str(path))
    assert meta["license"] == entry.license
    for key, value in module.backbone.state_dict().items():
        torch.testing.assert_close(restored.backbone.state_dict()[key], value)


def test_the_data_modules_contract_wins_over_the_releases() -> None:
    recorded = {"kind": "audio", "sample_rate": 8000}
    trainer = SimpleNamespace(datamodule=SimpleNamespace(input_contract=lambda: recorded))
    meta = checkpoint_metadata(
        AudioNTT2020(n_mels=64, d=16),
        trainer,  # type: ignore[arg-type]
        {},
        default_input={"kind": "audio", "sample_rate": 16000},
    )
    assert meta["input"] == recorded and "provenance" not in meta


def test_a_release_file_builds_its_own_backbone(tmp_path: Path) -> None:
    path = _byola_file(tmp_path)
    with pytest.raises(ValueError, match="released weights build their own backbone"):
        FinetuneModule(
            backbone=AudioNTT2020(n_mels=64, d=512),
            pretrained=str(path),
            task="classification",
            num_classes=2,
        )
