"""HOGTarget against a per-pixel loop of MaskFeat's HOGLayerC formula, and its behaviour:
edge orientation bins, unsigned orientation, per-cell L2 norm, token layout."""

from __future__ import annotations

import math

import pytest
import torch

from domainfm.core.grid import TokenGrid
from domainfm.core.objectives.hog_target import HOGTarget

SOBEL = [[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]


def _reference(x: torch.Tensor, cell: int, bins: int) -> torch.Tensor:
    """Plain loops: reflect-pad, Sobel correlation, atan2(gx, gy) binned, cell sums, L2."""
    b, c, h, w = x.shape
    out = torch.zeros(b, c, bins, h // cell, w // cell, dtype=torch.float64)
    padded = torch.nn.functional.pad(x.double(), (1, 1, 1, 1), mode="reflect")
    for n in range(b):
        for ch in range(c):
            for i in range(h):
                for j in range(w):
                    gx = sum(
                        SOBEL[u][v] * padded[n, ch, i + u, j + v]
                        for u in range(3)
                        for v in range(3)
                    )
                    gy = sum(
                        SOBEL[v][u] * padded[n, ch, i + u, j + v]
                        for u in range(3)
                        for v in range(3)
                    )
                    magnitude = math.sqrt(gx * gx + gy * gy)
                    k = math.floor(math.atan2(gx, gy) / math.pi * bins) % bins
                    out[n, ch, k, i // cell, j // cell] += magnitude
    norm = out.norm(dim=2, keepdim=True).clamp_min(1e-12)
    return (out / norm).float()


def test_matches_the_reference_formula() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 2, 8, 8)
    target = HOGTarget(cell_size=4, num_bins=9)
    torch.testing.assert_close(target.hog(x), _reference(x, 4, 9), atol=1e-5, rtol=1e-5)


def test_edges_land_in_their_orientation_bins() -> None:
    vertical = torch.zeros(1, 1, 8, 8)
    vertical[..., 4:] = 1.0  # a vertical edge: horizontal gradient
    horizontal = vertical.transpose(2, 3)
    target = HOGTarget(cell_size=8, num_bins=8)
    v_bin = int(target.hog(vertical)[0, 0, :, 0, 0].argmax())
    h_bin = int(target.hog(horizontal)[0, 0, :, 0, 0].argmax())
    assert (v_bin, h_bin) == (4, 0)  # 90 degrees apart = num_bins / 2 bins (0-180 range)
    flipped = 1.0 - vertical  # the opposite gradient sign has the same unsigned orientation
    assert int(target.hog(flipped)[0, 0, :, 0, 0].argmax()) == v_bin


def test_cells_are_unit_norm_and_tokens_concatenate_their_cells() -> None:
    torch.manual_seed(1)
    x = torch.rand(2, 3, 32, 32)
    target = HOGTarget(cell_size=8, num_bins=9)
    cells = target.hog(x)  # (B, C, K, 4, 4)
    torch.testing.assert_close(cells.norm(dim=2), torch.ones(2, 3, 4, 4))
    grid = TokenGrid.from_input((32, 32), 16)
    tokens = target(x, grid)
    assert tokens.shape == (2, 4, target.out_dim(3, (16, 16))) == (2, 4, 4 * 3 * 9)
    # token 1 = patch (row 0, col 1) = cells (0..1, 2..3); layout (cell row, cell col, c, k)
    expected = cells[0, :, :, 0:2, 2:4].permute(2, 3, 0, 1).reshape(-1)
    torch.testing.assert_close(tokens[0, 1], expected)
    with pytest.raises(ValueError, match="divisible by cell_size=8"):
        target.out_dim(3, (12, 12))
