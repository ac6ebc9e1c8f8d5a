"""SparK's dense side: the per-stage *densify* layers and the light hierarchical decoder.

Tian et al. 2023, "Designing BERT for Convolutional Networks: Sparse and Hierarchical Masked
Modeling", arXiv:2301.03580, §3.2-3.3, and the released code (github.com/keyu-tian/SparK,
``pretrain/spark.py``, ``pretrain/decoder.py``), generalized to 1 to 3 spatial axes.

**Levels.** The encoder's coarsest map has stride ``P`` (a power of 2); the decoder has
``L = log2(P)`` upsampling steps, and level ``j = 0..L`` has stride ``P / 2**j`` and width
``w_j = width // 2**j``. A stage of stride ``s`` feeds level ``log2(P / s)``.

**Densify** (one per stage ``i``, feeding level ``j``): the sparse map ``f_i`` (zero where
masked) is normalized, its masked positions are filled with a learned per-stage mask token
``m_i``, and a convolution projects it to the level's width::

    d_i = proj_i( where(a_i, norm_i(f_i), m_i) )     (B, C_i, ...) -> (B, w_j, *g * 2**j)

with ``proj_i`` a 1-wide convolution at level 0 and 3-wide below, as the released code.

**Decoder** (UNet-like, coarsest to finest)::

    h_0     = Σ_{i at level 0} d_i
    h_{j+1} = block_j(h_j) + Σ_{i at level j+1} d_i      block_j: (B, w_j, ...) -> (B, w_{j+1}, 2×)
    pred    = conv1x1(h_L)                                (B, out_chans, *g * P)

``block_j`` is the released ``UNetBlock``: a transposed convolution (kernel 4, stride 2)
upsamples, then conv3 → norm → ReLU6 → conv3 → norm. The released code adds the skips
*before* each block; a stage at stride 1 (e.g. MONAI's SegResNet) is added after the last
block, before the prediction, which is the same rule.

Normalization (deviations, both switchable): ``densify_norm="ln"`` normalizes each position
over its channels (the released ConvNeXt setting; its ResNet setting is a batch norm over the
visible positions); ``decoder_norm="group"`` uses ``GroupNorm`` (``gcd(8, w)`` groups) instead
of the released ``BatchNorm``. Both are per sample, so the objective's loss is a mean of
per-sample terms (the data-parallel ``LOCAL`` contract); ``decoder_norm="batch"`` is the
released choice.

Example::

    >>> dec = LightDecoder(spatial_dims=2, width=64, patch_stride=8, out_chans=3)
    >>> dec([torch.randn(2, 64, 4, 4), torch.randn(2, 32, 8, 8), None, None]).shape
    torch.Size([2, 3, 32, 32])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from domainfm.core.objectives.local_decoder import CONVS, spatial_op
from domainfm.core.sparse_masking import expand_mask

DensifyNorm = Literal["ln", "none"]
DecoderNorm = Literal["group", "batch"]

_UPS: tuple[Callable[..., nn.Module], ...] = (
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)
_BATCH_NORMS: tuple[Callable[..., nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
)


def decoder_levels(patch_stride: int) -> int:
    """``log2(P)``: the decoder's upsampling steps (``ValueError`` unless a power of 2)."""
    if patch_stride < 1 or patch_stride & (patch_stride - 1):
        raise ValueError(f"SparK needs the coarsest stride to be a power of 2, got {patch_stride}")
    return int(math.log2(patch_stride))


def stage_level(stride: int, patch_stride: int) -> int:
    """The decoder level ``log2(P / s)`` of a stage of stride ``s`` (``ValueError`` unless a
    power of 2 dividing ``P``)."""
    if stride < 1 or patch_stride % stride:
        raise ValueError(
            f"a stage of stride {stride} does not divide the coarsest stride {patch_stride}"
        )
    return decoder_levels(patch_stride // stride)


def _norm(kind: DecoderNorm, spatial_dims: int, channels: int) -> nn.Module:
    if kind == "batch":
        return spatial_op(_BATCH_NORMS, spatial_dims)(channels)
    return nn.GroupNorm(math.gcd(8, channels), channels)


class ChannelNorm(nn.Module):
    """``LayerNorm`` over the channels of each position of a ``(B, C, *spatial)`` map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.norm(x.movedim(1, -1)).movedim(-1, 1)
        return out


class Densify(nn.Module):
    """Fill the masked positions of one stage's sparse map with its mask token and project it
    to the decoder width of its level (see the module docstring).

    Args:
        spatial_dims: spatial axes of the maps.
        in_channels: the stage's channels ``C_i``.
        out_channels: the level's decoder width ``w_j``.
        kernel_size: the projection's width (1 at level 0, 3 below).
        norm: ``"ln"`` (channels of each position) or ``"none"``.
    """

    def __init__(
        self,
        *,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        norm: DensifyNorm = "ln",
    ) -> None:
        super().__init__()
        if norm not in ("ln", "none"):
            raise ValueError(f"densify_norm must be 'ln' or 'none', got {norm!r}")
        self.norm: nn.Module = ChannelNorm(in_channels) if norm == "ln" else nn.Identity()
        self.mask_token = nn.Parameter(torch.zeros(1, in_channels, *(1,) * spatial_dims))
        nn.init.trunc_normal_(self.mask_token, mean=0.0, std=0.02, a=-0.02, b=0.02)
        self.proj = spatial_op(CONVS, spatial_dims)(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=True
        )

    def forward(self, sparse: Tensor, active: Tensor) -> Tensor:
        """``(B, C_i, *shape)`` map and ``(B, *g)`` visible-cell mask → ``(B, w_j, *shape)``."""
        visible = expand_mask(active, sparse.shape[2:])
        dense = torch.where(visible, self.norm(sparse), self.mask_token.to(sparse.dtype))
        out: Tensor = self.proj(dense)
        return out


class UNetBlock(nn.Module):
    """Upsample ×2 (transposed conv, kernel 4), then conv3 → norm → ReLU6 → conv3 → norm."""

    def __init__(
        self, *, spatial_dims: int, in_channels: int, out_channels: int, norm: DecoderNorm
    ) -> None:
        super().__init__()
        conv = spatial_op(CONVS, spatial_dims)
        up = spatial_op(_UPS, spatial_dims)
        self.up_sample = up(in_channels, in_channels, 4, stride=2, padding=1)
        self.conv = nn.Sequential(
            conv(in_channels, in_channels, 3, padding=1, bias=False),
            _norm(norm, spatial_dims, in_channels),
            nn.ReLU6(inplace=True),
            conv(in_channels, out_channels, 3, padding=1, bias=False),
            _norm(norm, spatial_dims, out_channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.conv(self.up_sample(x))
        return out


class LightDecoder(nn.Module):
    """The hierarchical decoder from stride ``P`` to the input resolution.

    Args:
        spatial_dims: spatial axes (1 to 3).
        width: ``w_0``, the width at the coarsest level (halved at every level).
        patch_stride: ``P``, the coarsest stride (a power of 2).
        out_chans: predicted channels (the input's).
        norm: ``"group"`` or ``"batch"`` (see the module docstring).
    """

    def __init__(
        self,
        *,
        spatial_dims: int,
        width: int,
        patch_stride: int,
        out_chans: int,
        norm: DecoderNorm = "group",
    ) -> None:
        super().__init__()
        conv = spatial_op(CONVS, spatial_dims)  # ValueError unless 1 to 3 axes
        if norm not in ("group", "batch"):
            raise ValueError(f"decoder_norm must be 'group' or 'batch', got {norm!r}")
        levels = decoder_levels(patch_stride)
        if width < 2**levels:
            raise ValueError(
                f"decoder_width={width} cannot be halved {levels} times (P={patch_stride})"
            )
        self.widths = tuple(width // 2**j for j in range(levels + 1))
        self.dec = nn.ModuleList(
            UNetBlock(spatial_dims=spatial_dims, in_channels=cin, out_channels=cout, norm=norm)
            for cin, cout in zip(self.widths[:-1], self.widths[1:], strict=True)
        )
        self.proj = conv(self.widths[-1], out_chans, 1, bias=True)
        self._initialize()

    def _initialize(self) -> None:
        """The released initialization: convs truncated-normal (std 0.02), transposed convs
        Kaiming (fan out), zero biases."""
        for m in self.modules():
            if isinstance(m, nn.modules.conv._ConvTransposeNd):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.modules.conv._ConvNd):
                nn.init.trunc_normal_(m.weight, std=0.02)
            else:
                continue
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, levels: Sequence[Tensor | None]) -> Tensor:
        """Densified skips per level ``0..L`` (``None`` where no stage feeds one; level 0
        must be given) → prediction ``(B, out_chans, *g * P)``."""
        if len(levels) != len(self.widths) or levels[0] is None:
            raise ValueError(
                f"need {len(self.widths)} levels with level 0 given, got {len(levels)} "
                f"({'level 0 missing' if levels and levels[0] is None else 'wrong count'})"
            )
        x: Tensor = levels[0]
        for block, skip in zip(self.dec, levels[1:], strict=True):
            x = block(x)
            if skip is not None:
                x = x + skip
        out: Tensor = self.proj(x)
        return out
