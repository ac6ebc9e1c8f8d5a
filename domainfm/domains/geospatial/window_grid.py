"""Regular grids of windows over rasters, without the windows that are (mostly) nodata.

:func:`valid_grid_windows` lists the windows of ``size`` pixels at ``stride`` over a raster
(the last row/column of windows shifted back to end on the raster's edge, so every pixel is
covered) whose fraction of valid pixels is at least ``min_valid``. Validity is that of
:func:`~domainfm.domains.geospatial.raster_read.read_raster` (every selected band valid: not nodata,
not masked, finite).

The raster is read once, in strips of rows (memory ``O(strip × width)``, never the whole
raster), and its validity reduced to counts per ``cell × cell`` block, ``cell =
gcd(window sides, strides)``: every window on the regular lattice is a union of whole cells,
so its count is exact from a summed-area table of the cells (``O(H W / cell²)`` integers).
The few edge-aligned windows off the lattice are counted by reading their mask. The table
and the list of windows are estimated first and refused above the size guard's limit
(:func:`~domainfm.core.size_guard.check_allocation`, naming the file).

Example::

    >>> windows = valid_grid_windows("S2_L1C_2015-07-11.tif", size=32, stride=16,
    ...                              min_valid=0.5)
    >>> windows[:2]
    [(0, 0), (0, 16)]
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

from domainfm.core.grid import to_ntuple
from domainfm.core.size_guard import check_allocation
from domainfm.domains.geospatial.raster_header import BandsLike, raster_info
from domainfm.domains.geospatial.raster_read import read_raster

POSITION_BYTES = 120
"""Bytes of one listed ``(row, col)`` window in a Python list (tuple, two ints, pointer)."""


class WindowStarts(Sequence[int]):
    """The offsets of :func:`window_starts`, computed on demand: ``O(1)`` memory whatever the
    length, with ``O(1)`` ``len``, indexing and :meth:`index` (a tile plan over a
    200000-pixel axis at stride 1 is never listed).

    Example::

        >>> starts = WindowStarts(101, 64, 48)
        >>> len(starts), list(starts), starts.index(37)
        (2, [0, 37], 1)
    """

    def __init__(self, length: int, size: int, stride: int) -> None:
        if size < 1 or stride < 1:
            raise ValueError(f"size={size!r} and stride={stride!r} must be >= 1")
        self._steps = range(0, length - size, stride) if length > size else range(0)
        self._last = max(length - size, 0)

    def __len__(self) -> int:
        return len(self._steps) + 1

    @overload
    def __getitem__(self, index: int) -> int: ...

    @overload
    def __getitem__(self, index: slice) -> list[int]: ...

    def __getitem__(self, index: int | slice) -> int | list[int]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self)
        i = index + n if index < 0 else index
        if not 0 <= i < n:
            raise IndexError(f"window start {index} out of range ({n} starts)")
        return self._last if i == n - 1 else self._steps[i]

    def __iter__(self) -> Iterator[int]:
        yield from self._steps
        yield self._last

    def __contains__(self, value: object) -> bool:
        return value == self._last or value in self._steps

    def index(self, value: Any, start: int = 0, stop: int | None = None) -> int:
        """The position of the start ``value`` (``ValueError`` when it is not one)."""
        i = len(self._steps) if value == self._last else self._steps.index(value)
        if not start <= i < (len(self) if stop is None else stop):
            raise ValueError(f"{value!r} is not in the window starts [{start}:{stop}]")
        return i

    def __repr__(self) -> str:
        return f"WindowStarts({self._steps!r} + [{self._last}])"


def window_starts(length: int, size: int, stride: int) -> list[int]:
    """Offsets of the windows covering ``length`` pixels: ``0, stride, 2 stride, ...`` then
    one window ending exactly on the edge; ``[0]`` when ``length <= size`` (one window,
    padded by the caller). A list; :class:`WindowStarts` gives the same offsets lazily.

    Example::

        >>> window_starts(101, 64, 48)
        [0, 37]
    """
    return list(WindowStarts(length, size, stride))


def valid_grid_windows(
    path: str | Path,
    *,
    size: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    bands: BandsLike = None,
    band_names: Sequence[str] | None = None,
    min_valid: float = 0.5,
    strip_rows: int = 512,
) -> list[tuple[int, int]]:
    """``(row, col)`` of the grid windows of ``path`` with at least ``min_valid`` valid
    pixels, in row-major order.

    Args:
        path: the raster.
        size: window ``(h, w)`` (or one int).
        stride: step between windows (default: ``size``, no overlap).
        bands: bands whose validity counts (1-based indices or names; default all).
        band_names: names of the file's bands.
        min_valid: least fraction of valid pixels, in ``[0, 1]`` (``0`` keeps every window,
            all-nodata ones included; any value above 0 drops all-nodata windows).
        strip_rows: rows read at a time (rounded up to a multiple of the cell).

    Raises:
        ValueError: naming the file when it is smaller than a window; bad arguments.
        AllocationTooLarge: naming the file, when the count table or the list of windows
            would exceed the per-allocation limit.
    """
    h, w = to_ntuple(size, 2, name="size")
    sh, sw = to_ntuple(stride if stride is not None else (h, w), 2, name="stride")
    if min(h, w, sh, sw) < 1:
        raise ValueError(f"size={size!r} and stride={stride!r} must be >= 1")
    if not 0.0 <= min_valid <= 1.0:
        raise ValueError(f"min_valid={min_valid!r}: must be in [0, 1]")
    source = Path(path)
    info = raster_info(source, band_names=band_names)
    if info.height < h or info.width < w:
        raise ValueError(
            f"{source} ({info.height}x{info.width} pixels) is smaller than the window {(h, w)}"
        )
    rows = WindowStarts(info.height, h, sh)
    cols = WindowStarts(info.width, w, sw)
    cell = math.gcd(h, w, sh, sw)
    check_allocation(
        float(len(rows)) * len(cols) * POSITION_BYTES,
        what=f"the list of up to {len(rows)} x {len(cols)} grid windows of {(h, w)} pixels",
        source=source,
    )
    check_allocation(
        (float(info.height // cell) + 1) * (info.width // cell + 1) * 8,
        what=f"the valid-pixel counts per {cell} x {cell} cell (int64)",
        source=source,
    )
    table = _cell_table(source, info.height, info.width, cell, bands, band_names, strip_rows)
    need = min_valid * h * w
    out = []
    for row in rows:
        for col in cols:
            if row % cell == 0 and col % cell == 0:
                r, c = row // cell, col // cell
                count = (
                    table[r + h // cell, c + w // cell]
                    - table[r, c + w // cell]
                    - table[r + h // cell, c]
                    + table[r, c]
                )
            else:  # an edge-aligned window off the lattice: count it directly
                raster = read_raster(
                    source,
                    window=(row, col, h, w),
                    bands=bands,
                    band_names=band_names,
                    require_valid=False,
                )
                count = int(raster.mask.sum())
            if count >= need and (min_valid == 0.0 or count > 0):
                out.append((row, col))
    return out


def _cell_table(
    source: Path,
    height: int,
    width: int,
    cell: int,
    bands: BandsLike,
    band_names: Sequence[str] | None,
    strip_rows: int,
) -> np.ndarray:
    """Summed-area table ``(H // cell + 1, W // cell + 1)`` of valid-pixel counts per cell
    (entry ``[i, j]``: valid pixels in the first ``i`` rows and ``j`` columns of cells)."""
    n_rows, n_cols = height // cell, width // cell
    counts = np.zeros((n_rows, n_cols), dtype=np.int64)
    step = max(cell, -(-strip_rows // cell) * cell)
    for top in range(0, n_rows * cell, step):
        rows = min(step, n_rows * cell - top)
        mask = read_raster(
            source,
            window=(top, 0, rows, n_cols * cell),
            bands=bands,
            band_names=band_names,
            require_valid=False,
        ).mask  # (rows, n_cols * cell)
        blocks = mask.reshape(rows // cell, cell, n_cols, cell)  # (r, cell, c, cell)
        counts[top // cell : top // cell + rows // cell] = blocks.sum(axis=(1, 3))
    table = np.zeros((n_rows + 1, n_cols + 1), dtype=np.int64)
    table[1:, 1:] = counts.cumsum(axis=0).cumsum(axis=1)
    return table
