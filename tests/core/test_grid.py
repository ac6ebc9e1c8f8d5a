from __future__ import annotations

import pytest
import torch

from domainfm.core.grid import TokenGrid
from domainfm.core.patching import patchify, patchify_at, unpatchify


def test_grid_from_input_shapes() -> None:
    grid = TokenGrid.from_input((96, 64, 32), patch_size=(16, 16, 8))
    assert grid.shape == (6, 4, 4)
    assert grid.num_tokens == 96
    assert grid.input_shape == (96, 64, 32)
    assert grid.axes == ("d", "h", "w")
    assert grid.axis("h") == 1


def test_grid_errors_name_argument_and_values() -> None:
    with pytest.raises(ValueError, match=r"patch_size \(16, 16\) does not divide .*\(40, 32\)"):
        TokenGrid.from_input((40, 32), patch_size=16)
    with pytest.raises(ValueError, match=r"patch_size must have 3 values.*\(16, 16\)"):
        TokenGrid.from_input((32, 32, 32), patch_size=(16, 16))
    with pytest.raises(ValueError, match=r"spatial_shape must have 1 to 3 dims"):
        TokenGrid.from_input((4, 4, 4, 4), patch_size=2)
    with pytest.raises(ValueError, match=r"axis 'f' is not one of"):
        TokenGrid.from_input((4, 4), patch_size=2).axis("f")


@pytest.mark.parametrize("spatial", [(12,), (8, 12), (4, 8, 12)])
def test_patchify_roundtrip_and_layout(spatial: tuple[int, ...]) -> None:
    grid = TokenGrid.from_input(spatial, patch_size=4)
    x = torch.randn(2, 3, *spatial)
    tokens = patchify(x, grid)
    assert tokens.shape == (2, grid.num_tokens, 3 * grid.patch_volume)
    torch.testing.assert_close(unpatchify(tokens, grid, channels=3), x)
    # token 1 is the second patch along the last axis; channel is the fastest index
    first = x[0, :, *(slice(0, 4) for _ in spatial[:-1]), slice(4, 8)]  # (C, *patch)
    torch.testing.assert_close(tokens[0, 1], first.movedim(0, -1).reshape(-1))


def test_patchify_rejects_wrong_shape() -> None:
    grid = TokenGrid.from_input((8, 8), patch_size=4)
    with pytest.raises(ValueError, match="spatial shape"):
        patchify(torch.randn(1, 1, 8, 12), grid)


@pytest.mark.parametrize("spatial", [(12,), (8, 12), (4, 8, 12)])
def test_patchify_at_equals_gathered_patchify(spatial: tuple[int, ...]) -> None:
    grid = TokenGrid.from_input(spatial, patch_size=4)
    x = torch.randn(2, 3, *spatial)
    index = torch.stack([torch.randperm(grid.num_tokens)[:2] for _ in range(2)])
    full = patchify(x, grid)  # (B, N, P * C), channel fastest
    expected = torch.gather(full, 1, index[..., None].expand(-1, -1, full.shape[-1]))
    torch.testing.assert_close(patchify_at(x, grid, index), expected)
    # channels_last=False: (C, *patch) per token, as a conv weight flattens
    chan_first = patchify_at(x, grid, index, channels_last=False).view(2, 2, 3, -1)  # (C, P)
    torch.testing.assert_close(chan_first.transpose(2, 3).reshape(2, 2, -1), expected)
