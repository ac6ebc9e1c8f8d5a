"""UPerNet decoder and the simple feature pyramid: shapes in 1-3 D, every map reaches the
logits, PPM/FPN wiring, and FinetuneModule(decoder="upernet") on a ViT and a multi-scale
backbone (evenly spaced blocks, fits a fixed batch, checkpoint round trip)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from domainfm.core.vit import VisionTransformerND
from domainfm.tasks.finetune_module import FinetuneModule, load_finetuned
from domainfm.tasks.heads.upernet import SimpleFeaturePyramid, UPerNetDecoder


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_pyramid_and_decoder_shapes(dims: int) -> None:
    grid = (4,) * dims
    pyramid = SimpleFeaturePyramid(embed_dim=32, spatial_dims=dims)
    maps = pyramid([torch.randn(2, 32, *grid) for _ in range(4)])
    assert [tuple(m.shape[2:]) for m in maps] == [(s,) * dims for s in (16, 8, 4, 2)]
    head = UPerNetDecoder(in_channels=(32,) * 4, num_classes=5, spatial_dims=dims, channels=16)
    x = torch.randn(2, 3, *(32,) * dims)
    assert head(maps, x).shape == (2, 5, *(32,) * dims)


def test_every_map_reaches_the_logits_and_coarse_maps_are_pooled() -> None:
    torch.manual_seed(0)
    head = UPerNetDecoder(
        in_channels=(8, 16, 24), num_classes=3, spatial_dims=2, channels=16, dropout=0.0
    ).eval()
    maps = [torch.randn(1, c, s, s, requires_grad=True) for c, s in ((8, 16), (16, 8), (24, 4))]
    logits = head(maps, torch.zeros(1, 1, 32, 32))
    assert logits.shape == (1, 3, 32, 32)
    logits[0, :, 5, 7].sum().backward()  # one output pixel
    for m in maps:
        assert m.grad is not None and m.grad.abs().sum() > 0
    # the PPM's global (1x1) branch lets the coarsest map reach a pixel from anywhere
    assert (maps[2].grad[0].abs().sum(0) > 0).all()
    assert len(head.ppm) == 4 and len(head.lateral) == len(head.fpn) == 2
    with pytest.raises(ValueError, match="got 2 maps"):
        head(maps[:2], torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="scales"):
        SimpleFeaturePyramid(embed_dim=8, spatial_dims=2, scales=(3,))


def _vit(depth: int) -> VisionTransformerND:
    return VisionTransformerND(
        in_chans=4, spatial_dims=2, patch_size=8, embed_dim=32, depth=depth, num_heads=4
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


def test_finetune_module_upernet_picks_evenly_spaced_blocks() -> None:
    assert FinetuneModule(
        backbone=_vit(12), task="segmentation", num_classes=3, decoder="upernet"
    ).map_indices == [2, 5, 8, 11]
    assert FinetuneModule(
        backbone=_vit(2), task="segmentation", num_classes=3, decoder="upernet"
    ).map_indices == [0, 1]
    with pytest.raises(ValueError, match="decoder='unet'"):
        FinetuneModule(backbone=_vit(2), task="segmentation", num_classes=3, decoder="unet")  # type: ignore[arg-type]


def test_finetune_module_upernet_fits_a_batch_and_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = FinetuneModule(
        backbone=_vit(4),
        task="segmentation",
        num_classes=3,
        decoder="upernet",
        lr=3e-3,
        decoder_dim=32,
    )
    blocks = torch.randint(0, 3, (4, 1, 8, 8))  # a class per 4x4 block
    label = blocks.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)  # (4, 1, 32, 32)
    x = torch.cat([(label == k).float() for k in range(3)] + [torch.zeros_like(label).float()], 1)
    x = x + 0.3 * torch.randn_like(x)
    data = [{"input": x[i], "label": label[i]} for i in range(4)]
    loader = DataLoader(data, batch_size=4)  # type: ignore[arg-type]
    module.eval()
    with torch.no_grad():
        before = module._loss(module(x), label[:, 0]).item()
    trainer = _trainer(25)
    trainer.fit(module, loader)
    module.eval()
    with torch.no_grad():
        after = module._loss(module(x), label[:, 0]).item()
    assert after < 0.5 * before, (before, after)
    ckpt = tmp_path / "upernet.ckpt"
    trainer.save_checkpoint(ckpt)
    loaded, meta = load_finetuned(ckpt)
    assert meta["recipe"]["finetune"]["decoder"] == "upernet"
    with torch.no_grad():
        assert torch.equal(loaded(x), module(x))


def test_a_one_by_one_top_map_keeps_information_at_batch_one():
    """The coarsest level of a small window is 1x1: no norm group may hold a single value
    (it would raise at batch 1 and normalize every channel to 0 otherwise)."""
    torch.manual_seed(0)
    head = UPerNetDecoder(in_channels=(16, 16), num_classes=3, spatial_dims=2, channels=32).eval()
    x = torch.randn(1, 3, 16, 16)
    a = head([torch.randn(1, 16, 2, 2), torch.randn(1, 16, 1, 1)], x)
    b = head([torch.randn(1, 16, 2, 2), torch.randn(1, 16, 1, 1)], x)
    assert a.shape == (1, 3, 16, 16)
    assert not torch.allclose(a, b)  # the inputs reach the logits
