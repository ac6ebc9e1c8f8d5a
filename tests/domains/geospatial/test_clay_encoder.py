"""ClayEncoder: kept tokens equal the full embedding's, GSD and metadata change the codes, any
band list works with the same weights, bad arguments refused."""

from __future__ import annotations

import pytest
import torch

from domainfm.domains.geospatial.clay_encoder import ClayEncoder, gsd_pos_table

SMALL = {"wavelengths_um": [0.665, 0.56, 0.493], "patch_size": 4, "embed_dim": 32}
SMALL.update({"depth": 1, "num_heads": 2, "dim_head": 16})


def test_kept_tokens_grid_and_metadata() -> None:
    torch.manual_seed(0)
    enc = ClayEncoder(**SMALL).eval()
    x = torch.randn(2, 3, 16, 24)  # non-square: an h x w grid
    grid = enc.token_grid(x.shape[2:])
    assert grid.shape == (4, 6)
    with torch.no_grad():
        full = enc._embed(x, grid, None)
        keep = torch.tensor([[0, 7], [23, 3]])
        kept = enc._embed(x, grid, keep)
        torch.testing.assert_close(
            kept[:, 1:], torch.gather(full[:, 1:], 1, keep[..., None].expand(-1, -1, 32))
        )
        meta = enc._embed(x, grid, None, torch.ones(2, 8))
    torch.testing.assert_close(meta[:, 1:, -8:] - full[:, 1:, -8:], torch.ones(2, 24, 8))
    torch.testing.assert_close(meta[:, 1:, :-8], full[:, 1:, :-8])
    assert enc.forward_tokens(x, keep)[0].shape == (2, 3, 32)
    with pytest.raises(ValueError, match=r"latlon must be \(B=2, 4\)"):
        enc(x, latlon=torch.zeros(2, 2))


def test_gsd_scales_the_position_table() -> None:
    a, b = gsd_pos_table(2, 3, 24, 10.0), gsd_pos_table(2, 3, 24, 30.0)
    assert a.shape == (6, 24) and not torch.allclose(a, b)
    torch.testing.assert_close(a[0], torch.cat([torch.zeros(6), torch.ones(6)] * 2))


def test_any_bands_and_bad_arguments() -> None:
    enc = ClayEncoder(**{**SMALL, "wavelengths_um": [0.842]})
    assert enc(torch.randn(1, 1, 8, 8)).shape == (1, 32)
    with pytest.raises(ValueError, match="dim_head"):
        ClayEncoder(**{**SMALL, "dim_head": 8})
    with pytest.raises(ValueError, match="gsd_m"):
        ClayEncoder(**{**SMALL, "gsd_m": 0.0})
