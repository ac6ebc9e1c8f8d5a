"""Token grids: how an N-D input of shape ``(B, C, *spatial)`` is cut into patches.

A :class:`TokenGrid` is the one object that connects a backbone, a masking generator and an
objective. It knows the input's spatial shape, the patch size per axis and the names of the
axes (``("h", "w")`` for an image, ``("d", "h", "w")`` for a volume, ``("t", "h", "w")`` for an
image time series, ``("f", "t")`` for a spectrogram). Tokens are flattened in C order over the
grid (last axis fastest), as ``Tensor.flatten`` does.

Example::

    >>> grid = TokenGrid.from_input((96, 96, 96), patch_size=16)
    >>> grid.shape, grid.num_tokens
    ((6, 6, 6), 216)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_AXES = {1: ("t",), 2: ("h", "w"), 3: ("d", "h", "w")}


def to_ntuple(value: int | Sequence[int], n: int, *, name: str) -> tuple[int, ...]:
    """Broadcast an int to an ``n``-tuple, or check a sequence has length ``n``.

    Raises:
        ValueError: naming ``name`` when the length is wrong or a value is not positive.
    """
    out = (int(value),) * n if isinstance(value, int) else tuple(int(v) for v in value)
    if len(out) != n:
        raise ValueError(f"{name} must have {n} values (one per spatial dim), got {out}")
    if any(v <= 0 for v in out):
        raise ValueError(f"{name} must be positive, got {out}")
    return out


@dataclass(frozen=True)
class TokenGrid:
    """The patch grid of one input shape.

    Attributes:
        shape: number of tokens along each axis, e.g. ``(6, 6, 6)``.
        patch_size: input elements per token along each axis, e.g. ``(16, 16, 16)``.
        axes: axis names, e.g. ``("d", "h", "w")``.
    """

    shape: tuple[int, ...]
    patch_size: tuple[int, ...]
    axes: tuple[str, ...]

    def __post_init__(self) -> None:
        if not (len(self.shape) == len(self.patch_size) == len(self.axes)):
            raise ValueError(
                f"shape {self.shape}, patch_size {self.patch_size} and axes {self.axes} "
                "must have the same length"
            )

    @classmethod
    def from_input(
        cls,
        spatial_shape: Sequence[int],
        patch_size: int | Sequence[int],
        axes: Sequence[str] | None = None,
    ) -> TokenGrid:
        """The grid of an input with the given spatial shape (no batch/channel dims).

        Raises:
            ValueError: if a patch size does not divide the matching input size.
        """
        spatial = tuple(int(s) for s in spatial_shape)
        ndim = len(spatial)
        if not 1 <= ndim <= 3:
            raise ValueError(f"spatial_shape must have 1 to 3 dims, got {spatial}")
        patch = to_ntuple(patch_size, ndim, name="patch_size")
        bad = [(s, p) for s, p in zip(spatial, patch, strict=True) if s % p]
        if bad:
            raise ValueError(
                f"patch_size {patch} does not divide the input's spatial shape {spatial}"
            )
        names = tuple(axes) if axes is not None else DEFAULT_AXES[ndim]
        grid = tuple(s // p for s, p in zip(spatial, patch, strict=True))
        return cls(shape=grid, patch_size=patch, axes=names)

    @property
    def ndim(self) -> int:
        """Number of grid axes."""
        return len(self.shape)

    @property
    def num_tokens(self) -> int:
        """Total number of tokens ``prod(shape)``."""
        return math.prod(self.shape)

    @property
    def patch_volume(self) -> int:
        """Input elements per token and channel ``prod(patch_size)``."""
        return math.prod(self.patch_size)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The spatial input shape this grid covers."""
        return tuple(g * p for g, p in zip(self.shape, self.patch_size, strict=True))

    def axis(self, name: str) -> int:
        """Index of the axis called ``name``; ``ValueError`` listing the axes otherwise."""
        if name not in self.axes:
            raise ValueError(f"axis {name!r} is not one of the grid's axes {self.axes}")
        return self.axes.index(name)
