"""The small decoder of :class:`~domainfm.core.objectives.global_local.LocalContrast`: the
"decoder feature maps" its local loss compares, over the backbone's last feature map.

Chaitanya et al. 2020 (arXiv:2006.10511, Sec. 3.2) train the first blocks of a U-Net decoder
and a ``g_2`` head of two 1×1 convolutions with the local loss. Over a backbone with one scale
(a ViT's token grid, or a CNN's deepest map) this decoder is: a 1×1 convolution ``D →
decoder_dim``; ``upsample`` blocks of ×2 linear upsampling, a 3^n convolution, GroupNorm and
ReLU; then ``g_2`` (1×1 conv, GroupNorm, ReLU, 1×1 conv to ``out_dim``). GroupNorm (per-sample
statistics) stands in for the paper's BatchNorm so that the loss stays per-sample under data
parallelism. Generic over 1 to 3 spatial axes.

Shapes::

    x         (B, D, *grid)                            the backbone's map
    output    (B, out_dim, *grid * 2**upsample)

Example::

    >>> decoder = LocalDecoder(in_dim=96, spatial_dims=3, decoder_dim=64, out_dim=64, upsample=1)
    >>> decoder(torch.randn(2, 96, 4, 4, 2)).shape
    torch.Size([2, 64, 8, 8, 4])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TypeVar

from torch import Tensor, nn

Op = TypeVar("Op")

CONVS: tuple[Callable[..., nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def spatial_op(ops: Sequence[Op], spatial_dims: int) -> Op:
    """The entry of ``ops`` (one per 1, 2, 3 spatial axes) for ``spatial_dims`` axes."""
    if not 1 <= spatial_dims <= len(ops):
        raise ValueError(f"spatial_dims must be 1..{len(ops)}, got {spatial_dims}")
    return ops[spatial_dims - 1]


def _group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups that divide ``channels`` (per-sample statistics)."""
    return nn.GroupNorm(math.gcd(8, channels), channels)


class LocalDecoder(nn.Module):
    """The decoder of :class:`~domainfm.core.objectives.global_local.LocalContrast`:
    ``(B, D, *grid)`` → ``(B, out_dim, *grid * 2**upsample)`` (see the module docstring).

    Args:
        in_dim: the backbone's channels ``D``.
        spatial_dims: spatial axes of the maps (1 to 3).
        decoder_dim: the decoder's width.
        out_dim: the output width of ``g_2``.
        upsample: ×2 upsampling blocks.
    """

    def __init__(
        self, *, in_dim: int, spatial_dims: int, decoder_dim: int, out_dim: int, upsample: int
    ) -> None:
        super().__init__()
        conv = spatial_op(CONVS, spatial_dims)
        mode = ("linear", "bilinear", "trilinear")[spatial_dims - 1]
        layers: list[nn.Module] = [conv(in_dim, decoder_dim, 1)]
        for _ in range(upsample):
            layers += [
                nn.Upsample(scale_factor=2, mode=mode, align_corners=False),
                conv(decoder_dim, decoder_dim, 3, padding=1, bias=False),
                _group_norm(decoder_dim),
                nn.ReLU(inplace=True),
            ]
        self.blocks = nn.Sequential(*layers)
        self.head = nn.Sequential(  # g_2: two 1x1 convolutions
            conv(decoder_dim, decoder_dim, 1, bias=False),
            _group_norm(decoder_dim),
            nn.ReLU(inplace=True),
            conv(decoder_dim, out_dim, 1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.head(self.blocks(x))
        return out
