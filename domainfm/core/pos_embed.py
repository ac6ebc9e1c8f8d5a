"""N-D absolute positional embeddings: fixed sin-cos tables and resampling to a new grid.

* :func:`sincos_pos_embed` generalizes the 2D sin-cos table of MAE (He et al. 2022,
  arXiv:2111.06377) to any number of grid axes: the channel dim is split evenly across axes
  and each axis gets the 1D sin/cos encoding of its coordinate (channels that do not divide
  evenly are zero).
* :func:`resample_pos_embed` maps a learned table from one grid to another: timm's
  ``resample_abs_pos_embed`` (bicubic, antialiased) for 2D, linear / trilinear interpolation
  for 1D / 3D. Prefix (class) tokens are kept as they are.

Example::

    >>> sincos_pos_embed((6, 6, 6), dim=48).shape
    torch.Size([216, 48])
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from timm.layers import resample_abs_pos_embed
from torch import Tensor


def sincos_1d(positions: Tensor, dim: int, temperature: float = 10000.0) -> Tensor:
    """``(N,)`` positions → ``(N, dim)`` with ``[sin(p ω_k), cos(p ω_k)]``; ``dim`` even."""
    if dim % 2:
        raise ValueError(f"dim must be even for a sin-cos embedding, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / temperature**omega  # (dim/2,)
    angles = positions.double()[:, None] * omega[None, :]  # (N, dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def sincos_pos_embed(
    grid_shape: Sequence[int],
    dim: int,
    temperature: float = 10000.0,
    *,
    reverse_axes: bool = False,
) -> Tensor:
    """Fixed sin-cos table for a grid, flattened in C order: ``(prod(grid_shape), dim)``.

    Each of the ``n`` axes gets ``2 * (dim // (2 n))`` channels; the remainder is zero.
    ``reverse_axes`` gives the last axis the first channels (He et al.'s released MAE code
    puts the column coordinate first in its 2D table); tokens stay in C order.
    """
    shape = tuple(int(s) for s in grid_shape)
    per_axis = 2 * (dim // (2 * len(shape)))
    if per_axis == 0:
        raise ValueError(f"dim={dim} is too small for a {len(shape)}-D sin-cos embedding")
    coords = torch.meshgrid(*[torch.arange(s) for s in shape], indexing="ij")
    parts = [sincos_1d(c.reshape(-1), per_axis, temperature) for c in coords]
    if reverse_axes:
        parts = parts[::-1]
    table = torch.cat(parts, dim=1)  # (N, per_axis * ndim)
    return F.pad(table, (0, dim - table.shape[1]))


@functools.lru_cache(maxsize=64)
def cached_sincos_pos_embed(
    grid_shape: tuple[int, ...], dim: int, reverse_axes: bool = False
) -> Tensor:
    """:func:`sincos_pos_embed` as ``(1, N, dim)``, computed once per grid (read-only)."""
    return sincos_pos_embed(grid_shape, dim, reverse_axes=reverse_axes)[None]


def resample_pos_embed(
    pos_embed: Tensor,
    new_grid: Sequence[int],
    old_grid: Sequence[int],
    num_prefix_tokens: int = 0,
) -> Tensor:
    """Resample a ``(1, P + prod(old_grid), D)`` table to ``(1, P + prod(new_grid), D)``.

    Uses timm's ``resample_abs_pos_embed`` for 2D grids and ``F.interpolate`` (linear or
    trilinear, ``align_corners=False``) for 1D and 3D grids. Equal grids return the input.
    """
    new, old = tuple(int(s) for s in new_grid), tuple(int(s) for s in old_grid)
    if len(new) != len(old):
        raise ValueError(f"new_grid {new} and old_grid {old} have different numbers of dims")
    if new == old:
        return pos_embed
    if len(old) == 2:
        return resample_abs_pos_embed(
            pos_embed, new_size=list(new), old_size=list(old), num_prefix_tokens=num_prefix_tokens
        )
    prefix, table = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    axes = " ".join(f"g{i}" for i in range(len(old)))
    sizes = {f"g{i}": g for i, g in enumerate(old)}
    table = rearrange(table, f"1 ({axes}) d -> 1 d {axes}", **sizes)  # (1, D, *old)
    mode = "linear" if len(old) == 1 else "trilinear"
    table = F.interpolate(table.float(), size=new, mode=mode, align_corners=False)
    table = rearrange(table, f"1 d {axes} -> 1 ({axes}) d").to(pos_embed.dtype)  # (1, N', D)
    return torch.cat([prefix, table], dim=1)
