"""Histograms of oriented gradients (HOG) as a masked-modeling target.

MaskFeat (Wei et al. 2022, "Masked Feature Prediction for Self-Supervised Visual
Pre-Training", arXiv:2112.09133) predicts the HOG features of masked patches instead of their
pixels; FG-MAE (Wang et al. 2023, "Feature Guided Masked Autoencoder for Self-supervised
Learning in Remote Sensing", arXiv:2310.18653) uses the same HOG target for multispectral and
SAR imagery (plus normalized-difference indices for multispectral, see
:mod:`domainfm.domains.geospatial.fgmae_targets`). The computation follows MaskFeat's
reference ``HOGLayerC``, per input channel:

1. Pad by 1 pixel (reflect), gradients ``gx``, ``gy`` with the Sobel kernels
   ``[[1, 0, -1], [2, 0, -2], [1, 0, -1]]`` and its transpose.
2. Magnitude ``sqrt(gx² + gy²)``, orientation ``atan2(gx, gy)`` mapped to
   ``floor(angle / π · num_bins) mod num_bins``: unsigned orientation (0–180°) in
   ``num_bins`` hard bins.
3. Each pixel's magnitude added to its bin; bins summed over ``cell_size × cell_size`` cells.
4. Each cell's histogram L2-normalized over its bins.

A token's target is its patch's cells, concatenated: ``(p / cell_size)² × C × num_bins``
values. 2D grids only.

Shapes::

    x        (B, C, H, W)
    hog(x)   (B, C, num_bins, H / cell, W / cell)
    target   (B, N, (p / cell)² · C · num_bins)

Example::

    >>> target = HOGTarget(cell_size=8, num_bins=9)
    >>> grid = TokenGrid.from_input((32, 32), patch_size=16)
    >>> target(torch.randn(2, 3, 32, 32), grid).shape, target.out_dim(3, (16, 16))
    (torch.Size([2, 4, 108]), 108)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from domainfm.core.grid import TokenGrid
from domainfm.core.objectives.mae_targets import MAETarget

_SOBEL_X = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])


class HOGTarget(MAETarget):
    """Per-patch HOG features (see the module docstring).

    Args:
        cell_size: cell side in pixels; must divide the patch size.
        num_bins: orientation bins over 0–180°.
    """

    def __init__(self, *, cell_size: int = 8, num_bins: int = 9) -> None:
        if cell_size < 1 or num_bins < 1:
            raise ValueError(f"cell_size={cell_size} and num_bins={num_bins} must be >= 1")
        self.cell_size = cell_size
        self.num_bins = num_bins

    def _cells(self, patch_size: Sequence[int]) -> int:
        patch = tuple(patch_size)
        if len(patch) != 2 or any(p % self.cell_size for p in patch):
            raise ValueError(
                f"HOGTarget needs a 2D patch size divisible by cell_size={self.cell_size}, "
                f"got {patch}"
            )
        return (patch[0] // self.cell_size) * (patch[1] // self.cell_size)

    def out_dim(self, in_chans: int, patch_size: Sequence[int]) -> int:
        return self._cells(patch_size) * in_chans * self.num_bins

    def hog(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` → cell histograms ``(B, C, num_bins, H / cell, W / cell)``."""
        b, c, h, w = x.shape
        if h % self.cell_size or w % self.cell_size:
            raise ValueError(f"input {h}x{w} is not divisible by cell_size={self.cell_size}")
        weight_x = _SOBEL_X.to(x.device, x.dtype).expand(c, 1, 3, 3)
        weight_y = weight_x.transpose(2, 3)
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        gx = F.conv2d(padded, weight_x, groups=c)  # (B, C, H, W)
        gy = F.conv2d(padded, weight_y, groups=c)
        magnitude = torch.sqrt(gx * gx + gy * gy)
        phase = torch.atan2(gx, gy) / math.pi * self.num_bins  # (-num_bins, num_bins]
        bins = torch.floor(phase).long() % self.num_bins  # unsigned orientation
        hist = x.new_zeros(b, c, self.num_bins, h, w)
        hist.scatter_add_(2, bins[:, :, None], magnitude[:, :, None])
        cells = rearrange(
            hist, "b c k (gh s) (gw t) -> b c k gh gw s t", s=self.cell_size, t=self.cell_size
        ).sum(dim=(-2, -1))  # (B, C, K, H / cell, W / cell)
        return F.normalize(cells, p=2, dim=2)

    def __call__(self, x: Tensor, grid: TokenGrid) -> Tensor:
        """``(B, C, H, W)`` → ``(B, N, out_dim)``: each token's cells, concatenated."""
        self._cells(grid.patch_size)
        per_h, per_w = (p // self.cell_size for p in grid.patch_size)
        cells = self.hog(x.float())  # (B, C, K, H/cell, W/cell)
        return rearrange(
            cells, "b c k (gh ch) (gw cw) -> b (gh gw) (ch cw c k)", ch=per_h, cw=per_w
        )
