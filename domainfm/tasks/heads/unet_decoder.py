"""A hierarchical N-D U-Net decoder over a multi-scale backbone's feature maps.

The decoder topology of Swin UNETR (Hatamizadeh et al. 2022, arXiv:2201.01266), itself a
U-Net (Ronneberger et al. 2015, arXiv:1505.04597), for any backbone that declares
``feature_channels`` and ``feature_strides`` (e.g. ``SwinViT3D``, ``SegResNetEncoder3D``):

1. every map ``i`` goes through a residual conv block to the decoder width ``hidden[i]``
   (Swin UNETR's ``encoder2..4`` / ``encoder10``);
2. from the deepest map, a transposed conv upsamples by ``stride[i+1] / stride[i]`` to the
   next map's resolution, the skip is concatenated and a residual block fuses them (MONAI
   ``UnetrUpBlock``, Swin UNETR's ``decoder5..2``);
3. if the shallowest map's stride is above 1, a full-resolution residual stem on the raw input
   (Swin UNETR's ``encoder1``) is the last skip, reached by one more up block
   (``decoder1``); a stride-1 first map (a CNN's) is already at full resolution;
4. a 1×1 conv gives the logits (``UnetOutBlock``).

Shapes (``n`` maps, map ``i`` of ``C_i`` channels and stride ``s_i``)::

    maps      n × (B, C_i, *spatial / s_i), shallow→deep
    x         (B, in_chans, *spatial)            the raw input (read only when s_0 > 1)
    output    (B, num_classes, *spatial)

Example::

    >>> dec = UNetDecoder(spatial_dims=3, feature_channels=(12, 24, 48),
    ...                   feature_strides=(2, 4, 8), in_chans=1, num_classes=2)
    >>> maps = [torch.randn(1, c, *(3 * (16 // s,))) for c, s in [(12, 2), (24, 4), (48, 8)]]
    >>> dec(maps, torch.randn(1, 1, 16, 16, 16)).shape
    torch.Size([1, 2, 16, 16, 16])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

from torch import Tensor, nn

NormName = str | tuple[str, dict[str, Any]]


class UNetDecoder(nn.Module):
    """Swin UNETR-style decoder: upsample, concatenate the skip, residual conv, per level.

    Args:
        spatial_dims: number of spatial axes (1–3).
        feature_channels: channels of each map, shallow→deep.
        feature_strides: input elements per map element along each axis, per map; each
            must divide the next (e.g. ``(2, 4, 8, 16, 32)`` for Swin, ``(1, 2, 4, 8)`` for a
            SegResNet encoder).
        in_chans: channels of the raw input (for the full-resolution stem).
        num_classes: output classes.
        hidden: decoder width per level, shallow→deep; ``None``: ``feature_channels`` (as
            Swin UNETR). The stem and the head use ``hidden[0]``.
        norm: ``"group"`` (default): GroupNorm with ``gcd(8, width)`` groups per block, which
            also trains on 1-voxel deep maps of small crops; anything else is passed to
            MONAI's blocks as ``norm_name`` (e.g. ``"instance"``, Swin UNETR's choice).
    """

    def __init__(
        self,
        *,
        spatial_dims: int,
        feature_channels: Sequence[int],
        feature_strides: Sequence[int],
        in_chans: int,
        num_classes: int,
        hidden: Sequence[int] | None = None,
        norm: NormName = "group",
    ) -> None:
        super().__init__()
        from monai.networks.blocks import UnetOutBlock, UnetResBlock, UnetrUpBlock

        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got spatial_dims={spatial_dims}")
        channels = tuple(int(c) for c in feature_channels)
        strides = tuple(int(s) for s in feature_strides)
        if not channels or len(channels) != len(strides):
            raise ValueError(
                "feature_channels and feature_strides must be non-empty and of equal length, "
                f"got feature_channels={channels}, feature_strides={strides}"
            )
        if any(s < 1 for s in strides) or any(b % a for a, b in pairwise(strides)):
            raise ValueError(
                f"feature_strides must be positive and each divide the next, got {strides}"
            )
        widths = channels if hidden is None else tuple(int(h) for h in hidden)
        if len(widths) != len(channels) or any(w < 1 for w in widths):
            raise ValueError(
                f"hidden must give one positive width per map ({len(channels)}), got {hidden}"
            )
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got num_classes={num_classes}")

        def norm_for(width: int) -> NormName:
            if norm == "group":
                return ("group", {"num_groups": math.gcd(8, width)})
            return norm

        self.spatial_dims = spatial_dims
        self.feature_strides = strides
        self.encoders = nn.ModuleList(
            UnetResBlock(spatial_dims, c, w, kernel_size=3, stride=1, norm_name=norm_for(w))
            for c, w in zip(channels, widths, strict=True)
        )
        # ups[i] takes level i + 1 to level i
        self.ups = nn.ModuleList(
            UnetrUpBlock(
                spatial_dims,
                in_channels=widths[i + 1],
                out_channels=widths[i],
                kernel_size=3,
                upsample_kernel_size=strides[i + 1] // strides[i],
                norm_name=norm_for(widths[i]),
                res_block=True,
            )
            for i in range(len(widths) - 1)
        )
        self.stem: nn.Module | None = None
        self.up_full: nn.Module | None = None
        if strides[0] > 1:
            self.stem = UnetResBlock(
                spatial_dims,
                in_chans,
                widths[0],
                kernel_size=3,
                stride=1,
                norm_name=norm_for(widths[0]),
            )
            self.up_full = UnetrUpBlock(
                spatial_dims,
                in_channels=widths[0],
                out_channels=widths[0],
                kernel_size=3,
                upsample_kernel_size=strides[0],
                norm_name=norm_for(widths[0]),
                res_block=True,
            )
        self.head = UnetOutBlock(spatial_dims, widths[0], num_classes)

    def forward(self, maps: Sequence[Tensor], x: Tensor) -> Tensor:
        """Maps ``n × (B, C_i, *spatial / s_i)`` and the input ``(B, C, *spatial)`` → logits."""
        if len(maps) != len(self.encoders):
            raise ValueError(f"expected {len(self.encoders)} maps, got {len(maps)}")
        spatial = tuple(x.shape[2:])
        for i, (m, s) in enumerate(zip(maps, self.feature_strides, strict=True)):
            want = tuple(n // s for n in spatial)
            if tuple(m.shape[2:]) != want or any(n % s for n in spatial):
                raise ValueError(
                    f"map {i} has spatial shape {tuple(m.shape[2:])}; stride {s} of input "
                    f"{spatial} needs {want}"
                )
        skips = [enc(m) for enc, m in zip(self.encoders, maps, strict=True)]  # (B, w_i, *grid_i)
        y = skips[-1]
        for i in range(len(self.ups) - 1, -1, -1):
            y = self.ups[i](y, skips[i])  # (B, w_i, *grid_i)
        if self.stem is not None and self.up_full is not None:
            y = self.up_full(y, self.stem(x))  # (B, w_0, *spatial)
        logits: Tensor = self.head(y)  # (B, num_classes, *spatial)
        return logits
