from __future__ import annotations

import pytest
import torch
from torch import Tensor

from domainfm.domains.medical3d.cnn import SegResNetEncoder3D
from domainfm.domains.medical3d.swin import SwinViT3D
from domainfm.tasks.heads.unet_decoder import UNetDecoder


def _maps(
    channels: tuple[int, ...], strides: tuple[int, ...], spatial: tuple[int, ...]
) -> list[Tensor]:
    return [
        torch.randn(2, c, *(n // s for n in spatial), requires_grad=True)
        for c, s in zip(channels, strides, strict=True)
    ]


@pytest.mark.parametrize(
    ("spatial", "strides"),
    [
        ((32,), (1, 2, 4)),
        ((32,), (2, 4, 8)),
        ((16, 24), (1, 2, 4)),
        ((16, 24), (2, 4, 8)),
        ((8, 16, 8), (1, 2, 4)),
        ((8, 16, 8), (2, 4, 8)),
        ((16, 16, 16), (4, 8, 8)),  # stride ratio 1 between the last two maps
    ],
)
def test_logits_at_full_resolution_and_every_map_is_used(
    spatial: tuple[int, ...], strides: tuple[int, ...]
) -> None:
    torch.manual_seed(0)
    channels = (4, 8, 16)
    dec = UNetDecoder(
        spatial_dims=len(spatial),
        feature_channels=channels,
        feature_strides=strides,
        in_chans=1,
        num_classes=3,
        hidden=(4, 8, 8),
    )
    maps = _maps(channels, strides, spatial)
    x = torch.randn(2, 1, *spatial, requires_grad=True)
    out = dec(maps, x)
    assert out.shape == (2, 3, *spatial)
    out.square().mean().backward()
    for m in maps:
        assert m.grad is not None and m.grad.abs().sum() > 0
    # a stride-1 first map is already full resolution: no stem, the raw input is not read
    assert (dec.stem is None) == (strides[0] == 1)
    if strides[0] == 1:
        assert x.grad is None
    else:
        assert x.grad is not None and x.grad.abs().sum() > 0


def test_over_real_swin_maps_matches_swin_unetr_layout() -> None:
    """SwinViT3D's declared channels/strides are what a forward pass returns; the decoder turns
    its five maps (F..16F at /2../32) into full-resolution logits, with a raw-input stem."""
    torch.manual_seed(0)
    swin = SwinViT3D(in_chans=1, feature_size=12)
    assert swin.feature_channels == (12, 24, 48, 96, 192)
    assert swin.feature_strides == (2, 4, 8, 16, 32)
    x = torch.randn(1, 1, 32, 64, 32)
    maps = swin.forward_intermediates(x, indices=len(swin.feature_channels))
    for m, c, s in zip(maps, swin.feature_channels, swin.feature_strides, strict=True):
        assert m.shape == (1, c, 32 // s, 64 // s, 32 // s)
    dec = UNetDecoder(
        spatial_dims=3,
        feature_channels=swin.feature_channels,
        feature_strides=swin.feature_strides,
        in_chans=1,
        num_classes=4,
    )
    assert dec.stem is not None  # Swin UNETR's encoder1
    assert len(dec.ups) == 4  # decoder5..decoder2, then decoder1 (up_full) to full resolution
    assert dec(maps, x).shape == (1, 4, 32, 64, 32)


def test_over_real_segresnet_maps() -> None:
    torch.manual_seed(0)
    cnn = SegResNetEncoder3D(in_chans=2, init_filters=4, blocks_down=(1, 1, 1))
    x = torch.randn(2, 2, 16, 8, 16)
    maps = cnn.forward_intermediates(x, indices=len(cnn.feature_channels))
    dec = UNetDecoder(
        spatial_dims=3,
        feature_channels=cnn.feature_channels,
        feature_strides=cnn.feature_strides,
        in_chans=2,
        num_classes=2,
    )
    assert dec.stem is None
    assert dec(maps, x).shape == (2, 2, 16, 8, 16)


def test_monai_norm_names_pass_through() -> None:
    dec = UNetDecoder(
        spatial_dims=2,
        feature_channels=(4, 8),
        feature_strides=(2, 4),
        in_chans=1,
        num_classes=2,
        norm="instance",
    )
    assert any(isinstance(m, torch.nn.InstanceNorm2d) for m in dec.modules())
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in dec.modules())
    assert dec(_maps((4, 8), (2, 4), (8, 8)), torch.randn(2, 1, 8, 8)).shape == (2, 2, 8, 8)


def test_group_norm_trains_on_single_voxel_deep_maps() -> None:
    """The default norm works where instance norm cannot (a 1-voxel deepest map, e.g. Swin's
    /32 map of a 32³ crop), for widths that 8 does not divide."""
    dec = UNetDecoder(
        spatial_dims=3,
        feature_channels=(12, 20),
        feature_strides=(16, 32),
        in_chans=1,
        num_classes=2,
    )
    out = dec(_maps((12, 20), (16, 32), (32, 32, 32)), torch.randn(2, 1, 32, 32, 32))
    assert out.shape == (2, 2, 32, 32, 32) and torch.isfinite(out).all()


def test_bad_arguments_and_inputs_raise() -> None:
    kw: dict[str, object] = {"spatial_dims": 2, "in_chans": 1, "num_classes": 2}
    with pytest.raises(ValueError, match="spatial_dims"):
        UNetDecoder(**{**kw, "spatial_dims": 4}, feature_channels=(4,), feature_strides=(1,))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="equal length"):
        UNetDecoder(**kw, feature_channels=(4, 8), feature_strides=(2,))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="divide the next"):
        UNetDecoder(**kw, feature_channels=(4, 8), feature_strides=(2, 3))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="hidden"):
        UNetDecoder(**kw, feature_channels=(4, 8), feature_strides=(2, 4), hidden=(4,))  # type: ignore[arg-type]
    dec = UNetDecoder(**kw, feature_channels=(4, 8), feature_strides=(2, 4))  # type: ignore[arg-type]
    x = torch.randn(1, 1, 16, 16)
    with pytest.raises(ValueError, match="expected 2 maps"):
        dec(_maps((4,), (2,), (16, 16)), x)
    with pytest.raises(ValueError, match="map 1"):
        dec(_maps((4, 8), (2, 2), (16, 16)), x)
