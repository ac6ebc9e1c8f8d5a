"""Patchify / unpatchify between ``(B, C, *spatial)`` inputs and ``(B, N, P*C)`` tokens.

Token order matches :class:`~domainfm.core.grid.TokenGrid` (C order over the grid) and the
per-token vector is ordered ``(patch elements..., channel)`` as in the MAE reference code.

Example::

    >>> grid = TokenGrid.from_input((16, 16, 16), patch_size=8)
    >>> patchify(torch.randn(2, 1, 16, 16, 16), grid).shape
    torch.Size([2, 8, 512])
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor

from domainfm.core.grid import TokenGrid

_IN = {1: "b c (g0 p0)", 2: "b c (g0 p0) (g1 p1)", 3: "b c (g0 p0) (g1 p1) (g2 p2)"}
_OUT = {1: "b (g0) (p0 c)", 2: "b (g0 g1) (p0 p1 c)", 3: "b (g0 g1 g2) (p0 p1 p2 c)"}


def _sizes(grid: TokenGrid) -> dict[str, int]:
    sizes = {f"g{i}": g for i, g in enumerate(grid.shape)}
    sizes.update({f"p{i}": p for i, p in enumerate(grid.patch_size)})
    return sizes


def patchify(x: Tensor, grid: TokenGrid) -> Tensor:
    """``(B, C, *spatial)`` → ``(B, N, prod(patch) * C)``."""
    if x.ndim != grid.ndim + 2:
        raise ValueError(
            f"x must have {grid.ndim} spatial dims for grid {grid.shape}, "
            f"got shape {tuple(x.shape)}"
        )
    if tuple(x.shape[2:]) != grid.input_shape:
        raise ValueError(
            f"x has spatial shape {tuple(x.shape[2:])}, grid covers {grid.input_shape}"
        )
    return rearrange(x, f"{_IN[grid.ndim]} -> {_OUT[grid.ndim]}", **_sizes(grid))


def unpatchify(tokens: Tensor, grid: TokenGrid, channels: int) -> Tensor:
    """``(B, N, prod(patch) * C)`` → ``(B, C, *spatial)``; the inverse of :func:`patchify`."""
    return rearrange(tokens, f"{_OUT[grid.ndim]} -> {_IN[grid.ndim]}", c=channels, **_sizes(grid))


def patchify_at(x: Tensor, grid: TokenGrid, index: Tensor, *, channels_last: bool = True) -> Tensor:
    """``patchify(x, grid)`` at the tokens ``index`` ``(B, M)`` only: ``(B, M, prod(patch) * C)``.

    Only the selected patches are copied. ``channels_last=True`` gives :func:`patchify`'s
    per-token layout ``(p0, p1, ..., c)``; ``False`` gives ``(c, p0, p1, ...)``, the layout of
    a conv weight flattened per output channel.
    """
    if tuple(x.shape[2:]) != grid.input_shape:
        raise ValueError(
            f"x has spatial shape {tuple(x.shape[2:])}, grid covers {grid.input_shape}"
        )
    b, c = x.shape[:2]
    n = grid.ndim
    split = [s for pair in zip(grid.shape, grid.patch_size, strict=True) for s in pair]
    view = x.reshape(b, c, *split)  # (B, C, g0, p0, g1, p1, ...)
    grid_axes, patch_axes = range(2, 2 + 2 * n, 2), range(3, 3 + 2 * n, 2)
    if channels_last:
        view = view.permute(0, *grid_axes, *patch_axes, 1)  # (B, *g, *p, C)
    else:
        view = view.permute(0, *grid_axes, 1, *patch_axes)  # (B, *g, C, *p)
    coords = torch.unravel_index(index, grid.shape)  # n x (B, M)
    rows = torch.arange(b, device=x.device)[:, None]
    return view[(rows, *coords)].reshape(b, index.shape[1], -1)
