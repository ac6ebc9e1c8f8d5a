"""N-D patch embedding: ``(B, C, *spatial)`` → ``(B, N, D)`` tokens in grid (C) order.

2D uses timm's ``PatchEmbed`` (so timm ViT ``patch_embed.proj.*`` weights load unchanged);
1D and 3D use a strided ``nn.Conv1d`` / ``nn.Conv3d`` under the same ``proj`` name.

Example::

    >>> build_patch_embed(in_chans=1, embed_dim=64, patch_size=(16, 16, 16))(
    ...     torch.randn(2, 1, 32, 32, 32)).shape
    torch.Size([2, 8, 64])
"""

from __future__ import annotations

from collections.abc import Sequence

from timm.layers import PatchEmbed
from torch import Tensor, nn


class ConvPatchEmbed(nn.Module):
    """Strided-conv patch embedding for 1D or 3D inputs.

    Args:
        in_chans: input channels ``C``.
        embed_dim: token width ``D``.
        patch_size: patch size per axis (1 or 3 values).
    """

    def __init__(self, *, in_chans: int, embed_dim: int, patch_size: Sequence[int]) -> None:
        super().__init__()
        size = tuple(patch_size)
        if len(size) == 1:
            self.proj: nn.Conv1d | nn.Conv3d = nn.Conv1d(
                in_chans, embed_dim, kernel_size=size[0], stride=size[0]
            )
        elif len(size) == 3:
            self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=size, stride=size)
        else:
            raise ValueError(f"ConvPatchEmbed takes 1 or 3 spatial dims, got patch_size {size}")

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, D, *grid) -> (B, N, D)


def build_patch_embed(*, in_chans: int, embed_dim: int, patch_size: Sequence[int]) -> nn.Module:
    """timm ``PatchEmbed`` for 2D, :class:`ConvPatchEmbed` otherwise."""
    if len(patch_size) == 2:
        return PatchEmbed(
            img_size=None,
            patch_size=tuple(patch_size),  # type: ignore[arg-type]
            in_chans=in_chans,
            embed_dim=embed_dim,
            strict_img_size=False,
        )
    return ConvPatchEmbed(in_chans=in_chans, embed_dim=embed_dim, patch_size=patch_size)
