"""UPerNet: a pyramid-pooling + feature-pyramid segmentation decoder over a backbone's maps.

UPerNet (Xiao et al. 2018, "Unified Perceptual Parsing for Scene Understanding",
arXiv:1807.10221) is the decoder behind most published remote-sensing and ViT segmentation
numbers (BEiT, MAE, SatMAE, Prithvi, SSL4EO fine-tuning use UPerNet heads). Over ``n`` maps
ordered from fine to coarse:

1. **Lateral** 1×1 convs bring each map to ``channels`` (conv + norm + ReLU).
2. **PPM** on the coarsest map (PSPNet, Zhao et al. 2017, arXiv:1612.01105): adaptive
   average pooling to ``pool_scales`` (1, 2, 3, 6) per axis, a 1×1 conv each, upsampled
   back, concatenated with the map and fused by a 3×3 conv; it replaces the coarsest lateral.
3. **Top-down FPN** (Lin et al. 2017, arXiv:1612.03144): from coarse to fine, each lateral
   adds the upsampled coarser one, then a 3×3 conv.
4. **Fuse**: every level upsampled to the finest, concatenated, a 3×3 conv, a 1×1
   classifier, and logits upsampled to the input size.

A plain ViT gives maps at one stride; :class:`SimpleFeaturePyramid` (ViTDet, Li et al. 2022,
arXiv:2203.16527, as used with UPerNet in BEiT/MAE) rescales ``n`` of them to strides
``p/4, p/2, p, 2p`` first (×4: two stride-2 transposed convs; ×2: one; ×1: identity; ×½:
max-pool), so UPerNet sees a pyramid. Everything is N-D (1–3 axes): the same decoder serves
2D rasters and 3D volumes.

Shapes::

    maps     n × (B, C_i, *grid_i)        fine → coarse
    x        (B, C_in, *spatial)          only its spatial size is used
    output   (B, num_classes, *spatial)

Example::

    >>> pyramid = SimpleFeaturePyramid(embed_dim=64, spatial_dims=2)
    >>> maps = pyramid([torch.randn(2, 64, 4, 4)] * 4)     # grids 16, 8, 4, 2
    >>> head = UPerNetDecoder(in_channels=(64,) * 4, num_classes=5, spatial_dims=2)
    >>> head(maps, torch.randn(2, 13, 32, 32)).shape
    torch.Size([2, 5, 32, 32])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_DECONV = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_POOL = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}
_MAXPOOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
_MODE = {1: "linear", 2: "bilinear", 3: "trilinear"}


def _dims(spatial_dims: int) -> int:
    if spatial_dims not in _CONV:
        raise ValueError(f"spatial_dims={spatial_dims!r}: must be 1, 2 or 3")
    return spatial_dims


def _conv_norm_act(
    dims: int, cin: int, cout: int, kernel: int, groups: int | None = None
) -> nn.Sequential:
    """Conv (no bias) + GroupNorm + ReLU; GroupNorm rather than BatchNorm so that small
    fine-tuning batches (and batch 1 at inference) behave. ``groups`` defaults to
    ``gcd(32, cout)``; what runs on the coarsest map (the PPM's pooled branches and its
    bottleneck) uses 1 group: that map can be 1×1 (a small window's top level), where
    per-channel groups hold one value each and would normalize every channel to 0."""
    return nn.Sequential(
        _CONV[dims](cin, cout, kernel_size=kernel, padding=kernel // 2, bias=False),
        nn.GroupNorm(num_groups=groups or math.gcd(32, cout), num_channels=cout),
        nn.ReLU(inplace=True),
    )


def _resize(x: Tensor, size: Sequence[int], mode: str) -> Tensor:
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x, size=list(size), mode=mode, align_corners=False)


class SimpleFeaturePyramid(nn.Module):
    """Single-stride ViT maps → a 4-level pyramid (strides ×4, ×2, ×1, ×½ of the grid).

    Args:
        embed_dim: channels ``D`` of the ViT maps (kept at every level).
        spatial_dims: grid axes (1–3).
        scales: one rescale factor per input map, from ``(4, 2, 1, 0.5)``.
    """

    def __init__(
        self,
        *,
        embed_dim: int,
        spatial_dims: int,
        scales: Sequence[float] = (4, 2, 1, 0.5),
    ) -> None:
        super().__init__()
        dims = _dims(spatial_dims)
        deconv = _DECONV[dims]
        self.scales = tuple(float(s) for s in scales)
        levels: list[nn.Module] = []
        for scale in self.scales:
            if scale == 4:
                levels.append(
                    nn.Sequential(
                        deconv(embed_dim, embed_dim, kernel_size=2, stride=2),
                        nn.GroupNorm(1, embed_dim),
                        nn.GELU(),
                        deconv(embed_dim, embed_dim, kernel_size=2, stride=2),
                    )
                )
            elif scale == 2:
                levels.append(deconv(embed_dim, embed_dim, kernel_size=2, stride=2))
            elif scale == 1:
                levels.append(nn.Identity())
            elif scale == 0.5:
                levels.append(_MAXPOOL[dims](kernel_size=2, stride=2, ceil_mode=True))
            else:
                raise ValueError(f"scales={tuple(scales)!r}: each must be 4, 2, 1 or 0.5")
        self.levels = nn.ModuleList(levels)

    def forward(self, maps: Sequence[Tensor]) -> list[Tensor]:
        """``n × (B, D, *grid)`` (one per scale) → ``n × (B, D, *grid · scale)``."""
        if len(maps) != len(self.levels):
            raise ValueError(f"got {len(maps)} maps for {len(self.levels)} pyramid scales")
        return [level(m) for level, m in zip(self.levels, maps, strict=True)]


_PYRAMID_SCALES = {1: (1.0,), 2: (2.0, 1.0), 3: (4.0, 2.0, 1.0), 4: (4.0, 2.0, 1.0, 0.5)}
"""Rescale factors of a plain ViT's maps, by number of maps."""


def backbone_pyramid(
    backbone: nn.Module, num_maps: int
) -> tuple[list[int], SimpleFeaturePyramid | None, tuple[int, ...], tuple[float, ...]]:
    """How to read a fine → coarse pyramid off ``backbone``.

    A multi-scale backbone (declaring ``feature_channels`` / ``feature_strides``: Swin,
    CNNs) gives all its maps; a plain ViT gives ``num_maps`` (at most 4) evenly spaced blocks
    (the last included: 3, 6, 9, 12 of 12) that a :class:`SimpleFeaturePyramid` rescales.

    Returns:
        ``(indices, pyramid, channels, strides)``: the ``forward_intermediates`` indices,
        the rescaling module (``None`` for a multi-scale backbone), each level's channels
        and stride in input pixels (along the first axis), fine → coarse.
    """
    patch = tuple(getattr(backbone, "patch_size"))  # noqa: B009 - part of the contract
    if hasattr(backbone, "feature_channels"):
        channels = tuple(int(c) for c in getattr(backbone, "feature_channels"))  # noqa: B009
        strides = tuple(float(s) for s in getattr(backbone, "feature_strides"))  # noqa: B009
        return list(range(len(channels))), None, channels, strides
    depth = len(getattr(backbone, "blocks", [])) or num_maps
    count = max(1, min(num_maps, depth, 4))
    indices = [round((i + 1) * depth / count) - 1 for i in range(count)]
    embed_dim = int(getattr(backbone, "embed_dim"))  # noqa: B009
    scales = _PYRAMID_SCALES[count]
    pyramid = SimpleFeaturePyramid(embed_dim=embed_dim, spatial_dims=len(patch), scales=scales)
    return indices, pyramid, (embed_dim,) * count, tuple(patch[0] / s for s in scales)


class UPerNetDecoder(nn.Module):
    """PPM + FPN decoder (see the module docstring).

    Args:
        in_channels: channels of each input map, fine → coarse.
        num_classes: output classes.
        spatial_dims: grid axes (1–3).
        channels: decoder width.
        pool_scales: PPM output sizes per axis.
        dropout: dropout before the classifier.
    """

    def __init__(
        self,
        *,
        in_channels: Sequence[int],
        num_classes: int,
        spatial_dims: int,
        channels: int = 64,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        dims = _dims(spatial_dims)
        if not in_channels:
            raise ValueError("in_channels is empty: UPerNet needs at least one map")
        self.mode = _MODE[dims]
        self.lateral = nn.ModuleList(
            _conv_norm_act(dims, int(c), channels, 1) for c in in_channels[:-1]
        )
        top = int(in_channels[-1])
        self.ppm = nn.ModuleList(
            nn.Sequential(_POOL[dims](int(s)), _conv_norm_act(dims, top, channels, 1, groups=1))
            for s in pool_scales
        )
        self.bottleneck = _conv_norm_act(
            dims, top + len(pool_scales) * channels, channels, 3, groups=1
        )
        self.fpn = nn.ModuleList(
            _conv_norm_act(dims, channels, channels, 3) for _ in in_channels[:-1]
        )
        self.fuse = _conv_norm_act(dims, len(in_channels) * channels, channels, 3)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = _CONV[dims](channels, num_classes, kernel_size=1)

    def _ppm(self, top: Tensor) -> Tensor:
        size = top.shape[2:]
        pooled = [_resize(branch(top), size, self.mode) for branch in self.ppm]
        return self.bottleneck(torch.cat([top, *pooled], dim=1))  # (B, channels, *grid)

    def forward(self, maps: Sequence[Tensor], x: Tensor) -> Tensor:
        """Maps fine → coarse ``n × (B, C_i, *grid_i)`` and the input → logits
        ``(B, num_classes, *x.shape[2:])``."""
        if len(maps) != len(self.lateral) + 1:
            raise ValueError(f"got {len(maps)} maps, built for {len(self.lateral) + 1}")
        laterals = [lat(m) for lat, m in zip(self.lateral, maps[:-1], strict=True)]
        laterals.append(self._ppm(maps[-1]))
        for i in range(len(laterals) - 1, 0, -1):  # top-down: coarse into fine
            laterals[i - 1] = laterals[i - 1] + _resize(
                laterals[i], laterals[i - 1].shape[2:], self.mode
            )
        outs = [conv(lat) for conv, lat in zip(self.fpn, laterals[:-1], strict=True)]
        outs.append(laterals[-1])
        finest = outs[0].shape[2:]
        fused = self.fuse(torch.cat([_resize(o, finest, self.mode) for o in outs], dim=1))
        logits = self.classifier(self.dropout(fused))  # (B, num_classes, *finest)
        return _resize(logits, x.shape[2:], self.mode)
