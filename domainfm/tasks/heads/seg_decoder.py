"""A light N-D segmentation decoder over a backbone's intermediate feature maps.

Takes ``n`` maps ``(B, D, *grid)`` from ``forward_intermediates`` (as UNETR, Hatamizadeh et
al. 2022, arXiv:2103.10504, reads several depths of a plain ViT), fuses them with a 1×1 conv,
upsamples by the patch size in ``log2`` steps of ×2 (conv + norm + GELU each), joins a
full-resolution conv stem of the raw input (UNETR's first skip, which carries the edges
patch tokens cannot) and predicts logits ``(B, num_classes, *spatial)``.

Example::

    >>> dec = SegmentationDecoder(embed_dim=64, num_maps=2, num_classes=3, in_chans=1,
    ...                           patch_size=(8, 8, 8))
    >>> dec([torch.randn(1, 64, 2, 2, 2)] * 2, torch.randn(1, 1, 16, 16, 16)).shape
    torch.Size([1, 3, 16, 16, 16])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_MODE = {1: "linear", 2: "bilinear", 3: "trilinear"}


class SegmentationDecoder(nn.Module):
    """Fuse intermediate maps and upsample to input resolution.

    Args:
        embed_dim: channel width ``D`` of the maps.
        num_maps: number of intermediate maps fused.
        num_classes: output classes.
        in_chans: channels of the raw input (for the full-resolution skip).
        patch_size: the backbone's patch size per axis (the upsampling factor).
        hidden_dim: decoder width.
    """

    def __init__(
        self,
        *,
        embed_dim: int,
        num_maps: int,
        num_classes: int,
        in_chans: int,
        patch_size: Sequence[int],
        hidden_dim: int = 64,
    ) -> None:
        super().__init__()
        dims = len(patch_size)
        if dims not in _CONV:
            raise ValueError(f"patch_size must have 1 to 3 values, got {tuple(patch_size)}")
        conv = _CONV[dims]
        self.patch_size = tuple(patch_size)
        self.mode = _MODE[dims]
        self.fuse = conv(embed_dim * num_maps, hidden_dim, kernel_size=1)
        steps = max(1, math.ceil(math.log2(max(self.patch_size))))
        self.up = nn.ModuleList(self._block(conv, hidden_dim, hidden_dim) for _ in range(steps))
        self.stem = self._block(conv, in_chans, hidden_dim)
        self.merge = self._block(conv, 2 * hidden_dim, hidden_dim)
        self.head = conv(hidden_dim, num_classes, kernel_size=1)

    @staticmethod
    def _block(conv: type[nn.Module], cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(
            conv(cin, cout, kernel_size=3, padding=1),
            nn.GroupNorm(num_groups=min(8, cout), num_channels=cout),
            nn.GELU(),
        )

    def forward(self, maps: Sequence[Tensor], x: Tensor) -> Tensor:
        """Maps ``n × (B, D, *grid)`` and the input ``(B, C, *spatial)`` → logits."""
        y = self.fuse(torch.cat(list(maps), dim=1))  # (B, hidden, *grid)
        grid = y.shape[2:]
        target = [g * p for g, p in zip(grid, self.patch_size, strict=True)]
        for i, block in enumerate(self.up, start=1):
            size = [min(t, g * 2**i) for g, t in zip(grid, target, strict=True)]
            if i == len(self.up):
                size = target
            y = block(F.interpolate(y, size=size, mode=self.mode, align_corners=False))
        y = self.merge(torch.cat([y, self.stem(x)], dim=1))  # (B, hidden, *spatial)
        logits: Tensor = self.head(y)  # (B, num_classes, *spatial)
        return logits
