"""SparK's light decoder over 1 to 3 spatial axes: layer kinds per axis count, the output
shape, and refused arguments."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from domainfm.core.objectives.spark_decoder import Densify, LightDecoder

CONVS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
UPS = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
BATCH_NORMS = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_layers_follow_the_spatial_axes(dims: int) -> None:
    dec = LightDecoder(spatial_dims=dims, width=8, patch_stride=4, out_chans=2, norm="batch")
    kinds = {type(m) for m in dec.modules()}
    assert {CONVS[dims], UPS[dims], BATCH_NORMS[dims]} <= kinds
    assert type(dec.proj) is CONVS[dims]
    assert dec.widths == (8, 4, 2)
    levels = [torch.randn(1, 8, *(2,) * dims), None, torch.randn(1, 2, *(8,) * dims)]
    assert dec(levels).shape == (1, 2, *(8,) * dims)
    densify = Densify(spatial_dims=dims, in_channels=3, out_channels=8, kernel_size=3)
    assert type(densify.proj) is CONVS[dims]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"spatial_dims must be 1\.\.3, got 4"):
        LightDecoder(spatial_dims=4, width=8, patch_stride=4, out_chans=1)
    with pytest.raises(ValueError, match="decoder_norm must be 'group' or 'batch'"):
        LightDecoder(spatial_dims=2, width=8, patch_stride=4, out_chans=1, norm="layer")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cannot be halved"):
        LightDecoder(spatial_dims=2, width=2, patch_stride=4, out_chans=1)
    with pytest.raises(ValueError, match="power of 2"):
        LightDecoder(spatial_dims=2, width=8, patch_stride=3, out_chans=1)
