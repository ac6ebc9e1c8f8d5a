"""The local-contrast decoder: shapes over 1 to 3 spatial axes and per-sample outputs."""

from __future__ import annotations

import pytest
import torch

from domainfm.core.objectives.local_decoder import LocalDecoder, spatial_op


@pytest.mark.parametrize("grid", [(5,), (3, 4), (4, 4, 2)], ids=["1d", "2d", "3d"])
@pytest.mark.parametrize("upsample", [0, 2])
def test_shapes(grid: tuple[int, ...], upsample: int) -> None:
    decoder = LocalDecoder(
        in_dim=12, spatial_dims=len(grid), decoder_dim=8, out_dim=6, upsample=upsample
    )
    out = decoder(torch.randn(2, 12, *grid))
    assert out.shape == (2, 6, *(g * 2**upsample for g in grid))


def test_each_sample_is_decoded_on_its_own() -> None:
    """GroupNorm, not BatchNorm: a sample's output does not depend on the rest of the batch."""
    torch.manual_seed(0)
    decoder = LocalDecoder(in_dim=12, spatial_dims=3, decoder_dim=8, out_dim=6, upsample=1)
    x = torch.randn(3, 12, 2, 2, 2)
    torch.testing.assert_close(decoder(x)[:1], decoder(x[:1]))


def test_spatial_dims_out_of_range() -> None:
    assert spatial_op("abc", 2) == "b"
    with pytest.raises(ValueError, match=r"spatial_dims must be 1\.\.3, got 4"):
        LocalDecoder(in_dim=4, spatial_dims=4, decoder_dim=8, out_dim=8, upsample=0)
