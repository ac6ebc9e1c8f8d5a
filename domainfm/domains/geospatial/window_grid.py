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
The few edge-aligned windows off the lattice are counted by reading their mask.

Example::

    >>> windows = valid_grid_windows("S2_L1C_2015-07-11.tif", size=32, stride=16,
    ...                              min_valid=0.5)
    >>> windows[:2]
    [(0, 0), (0, 16)]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from domainfm.core.grid import to_ntuple
from domainfm.domains.geospatial.raster_header import BandsLike, raster_info
from domainfm.domains.geospatial.raster_read import read_raster


def window_starts(length: int, size: int, stride: int) -> list[int]:
    """Offsets of the windows covering ``length`` pixels: ``0, stride, 2 stride, ...`` then
    one window ending exactly on the edge; ``[0]`` when ``length <= size`` (one window,
    padded by the caller).

    Example::

        >>> window_starts(101, 64, 48)
        [0, 37]
    """
    if length <= size:
        return [0]
    return [*range(0, length - size, stride), length - size]


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
    rows = window_starts(info.height, h, sh)
    cols = window_starts(info.width, w, sw)
    cell = math.gcd(h, w, sh, sw)
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
