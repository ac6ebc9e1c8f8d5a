"""Reading windows of georeferenced rasters (GeoTIFF and anything GDAL reads) as float32
arrays with validity masks, with clear errors.

:func:`read_raster` returns a :class:`Raster`: a float32 array ``(bands, H, W)`` of one pixel
window, with the file's per-band scale/offset applied, and a ``(H, W)`` validity ``mask``.
Headers and band selection (``bands=``, ``band_names=``) are
:mod:`~domainfm.domains.geospatial.raster_header`.

* **Windows**: a :class:`rasterio.windows.Window` (``col_off, row_off, width, height``) or a
  tuple ``(row_off, col_off, height, width)`` (numpy order). Only the window is read from disk,
  never the whole raster. A window reaching outside the raster is an error unless
  ``boundless=True``, which pads the outside with invalid pixels (``mask`` False).
* **Validity**: a pixel is valid when, in every selected band, it is not the band's nodata
  value, is finite, is not masked by the file's internal mask or alpha band (GDAL mask flags
  ``per_dataset`` / ``alpha``, read with ``read_masks``) and lies inside the raster. Invalid
  pixels are set to ``fill`` in every band.
* **Layers**: :func:`read_dataset_window` reads a window of an already open dataset (or
  :class:`~rasterio.vrt.WarpedVRT`) into a :class:`BandRead` (per-band values and validity);
  :func:`read_bands` opens the file (optionally warping it onto a grid) around it;
  :func:`merge_validity` turns a :class:`BandRead` into a :class:`Raster`. The cached
  :class:`~domainfm.domains.geospatial.raster_reader.RasterReader`, band statistics, aligned
  stacks and tiled inference reuse these.

**Worker safety**: :func:`read_raster` and :func:`read_bands` open the file and close it
before returning; :class:`Raster` holds arrays, paths and numbers only (see
:mod:`~domainfm.domains.geospatial.raster_header`).

**Size guard**: before a window is read, its arrays (bands × rows × cols in the file's
dtype, their float32 copy and the validity mask) are estimated and refused above the
per-allocation limit (:func:`~domainfm.core.size_guard.check_allocation`, an
:class:`~domainfm.core.size_guard.AllocationTooLarge` naming the file and the estimate), so a
huge window (or ``window=None`` on a huge raster) never reaches numpy's "Unable to allocate".

Everything wrong with an input is a ``ValueError`` (``FileNotFoundError`` when it does not
exist) whose message names the file and the problem: a window outside the raster, a window
(or raster) without a single valid pixel (``require_valid=True``), a window too large for the
size guard, unreadable pixels (GDAL's ``RasterioError`` / ``CPLE_*`` errors while reading or
warping, with their cause), and the header errors of
:func:`~domainfm.domains.geospatial.raster_header.raster_info`.

Example::

    >>> r = read_raster("S2_L1C_2015-07-11.tif", (10, 20, 32, 32), bands=["B04", "B03", "B02"])
    >>> r.array.shape, r.array.dtype, r.mask.shape
    ((3, 32, 32), dtype('float32'), (32, 32))
    >>> rgb = read_raster("RGB.byte.tif", band_names=LANDSAT_RGB, bands=["red"])
    >>> rgb.mask.mean()          # the black nodata border is invalid
    0.67...
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeAlias

import numpy as np
import rasterio
import rasterio.crs
import rasterio.errors
import rasterio.windows
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.enums import MaskFlags, Resampling
from rasterio.windows import Window

from domainfm.core.size_guard import check_allocation
from domainfm.domains.geospatial.raster_header import (
    BandsLike,
    Grid,
    RasterInfo,
    crs_name,
    dataset_info,
    existing_raster,
    gdal_failed,
    open_raster,
    resolve_bands,
)

WINDOW_ATOL = 1e-6
"""A window offset or size this close to an integer is rounded to it; further is an error."""


GDAL_ERRORS: tuple[type[Exception], ...] = (rasterio.errors.RasterioError, CPLE_BaseError)
"""What rasterio raises when GDAL fails (``CPLE_*`` errors are not ``RasterioError``s)."""


WindowLike: TypeAlias = "Window | tuple[int, int, int, int]"
"""A :class:`~rasterio.windows.Window` or ``(row_off, col_off, height, width)``."""


@dataclass(frozen=True, eq=False)
class Raster:
    """One window of a raster, read and validated.

    Attributes:
        array: ``(bands, H, W)`` float32, scale/offset applied; pixels where ``mask`` is False
            hold the ``fill`` value in every band.
        mask: ``(H, W)`` bool, True where every selected band is valid (not nodata, finite,
            not masked by the file's mask/alpha, inside the raster).
        crs: coordinate reference system.
        transform: the window's own transform (``rasterio.windows.transform(window, ...)``):
            ``array[:, i, j]`` covers the pixel whose corner is ``transform @ (j, i)``.
        band_names: the names of the selected bands, in ``array`` order.
        path: the file it was read from.
        window: the window read (offsets may be negative / beyond the raster when boundless).
    """

    array: np.ndarray
    mask: np.ndarray
    crs: rasterio.crs.CRS
    transform: Affine
    band_names: tuple[str, ...]
    path: Path
    window: Window

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of the window."""
        return (int(self.array.shape[1]), int(self.array.shape[2]))


class BandRead(NamedTuple):
    """A window before the bands' validity is merged: values ``(b, H, W)`` float32 with
    scale/offset applied (invalid pixels hold arbitrary values) and validity ``(b, H, W)``."""

    values: np.ndarray
    valid: np.ndarray
    crs: rasterio.crs.CRS
    transform: Affine
    band_names: tuple[str, ...]
    window: Window


def as_window(window: WindowLike) -> Window:
    """``window`` as an integer :class:`~rasterio.windows.Window`.

    Args:
        window: a ``Window`` (``col_off, row_off, width, height``), or a tuple
            ``(row_off, col_off, height, width)`` (numpy order; note the swap).

    Raises:
        ValueError: not a window, not whole pixels, or an empty size.
    """
    if isinstance(window, Window):
        col, row, width, height = window.col_off, window.row_off, window.width, window.height
    elif isinstance(window, Sequence) and not isinstance(window, str) and len(window) == 4:
        row, col, height, width = window
    else:
        raise ValueError(
            f"window={window!r}: expected a rasterio Window or (row_off, col_off, height, width)"
        )
    values = []
    for v in (col, row, width, height):
        if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
            raise ValueError(f"window={window!r}: offsets and sizes must be numbers")
        if not math.isfinite(float(v)) or abs(float(v) - round(float(v))) > WINDOW_ATOL:
            raise ValueError(
                f"window={window!r} is not on whole pixels; round it first "
                "(e.g. window.round_offsets().round_lengths())"
            )
        values.append(round(float(v)))
    col, row, width, height = values
    if width <= 0 or height <= 0:
        raise ValueError(f"window={window!r} is empty (height {height}, width {width})")
    return Window(col, row, width, height)


def read_raster(
    path: str | Path,
    window: WindowLike | None = None,
    bands: BandsLike = None,
    *,
    band_names: Sequence[str] | None = None,
    fill: float = 0.0,
    boundless: bool = False,
    require_valid: bool = True,
) -> Raster:
    """Read one window of a raster as float32, with its validity mask.

    Args:
        path: a GeoTIFF (or any raster GDAL reads).
        window: a :class:`~rasterio.windows.Window` or ``(row_off, col_off, height, width)``;
            ``None`` reads the whole raster. Only this window is read from disk.
        bands: **1-based** band indices (rasterio convention) or band names, one or a
            sequence, not mixed; ``None`` is every band, in file order.
        band_names: one name per band of the file (e.g.
            :data:`~domainfm.domains.geospatial.raster_header.LANDSAT_RGB`), overriding its
            band descriptions; ``bands`` names refer to these.
        fill: the value of invalid pixels in ``array`` (every band).
        boundless: allow a window reaching outside the raster; outside pixels are invalid.
        require_valid: raise if the window has no valid pixel at all.

    Returns:
        A :class:`Raster`: ``array`` ``(bands, H, W)`` float32, ``mask`` ``(H, W)`` bool,
        ``crs``, the window's ``transform``, ``band_names``, ``path``, ``window``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: naming the file and the problem (see the module docstring).

    Example::

        >>> r = read_raster("RGB.byte.tif", (0, 0, 64, 64), [3, 2, 1], boundless=True)
        >>> r.array.shape, r.mask.dtype
        ((3, 64, 64), dtype('bool'))
    """
    source = existing_raster(path)
    read = read_bands(source, window, bands, band_names=band_names, boundless=boundless)
    return merge_validity(source, read, fill=fill, require_valid=require_valid)


def read_bands(
    source: Path,
    window: WindowLike | None,
    bands: BandsLike,
    *,
    band_names: Sequence[str] | None = None,
    boundless: bool = False,
    grid: Grid | None = None,
    resampling: Resampling = Resampling.nearest,
) -> BandRead:
    """Open ``source`` and read ``window`` of the selected bands with per-band validity.

    Args:
        source: an existing raster file (see :func:`~domainfm.domains.geospatial.
            raster_header.existing_raster`).
        window, bands, band_names, boundless: as in :func:`read_raster`.
        grid: read the file warped onto this grid (through a
            :class:`~rasterio.vrt.WarpedVRT`; ``window`` is on ``grid``); ``None``: its own.
        resampling: resampling of the warp.

    Returns:
        A :class:`BandRead` (see :func:`merge_validity` for the :class:`Raster`).
    """
    with open_raster(source) as ds:
        info = dataset_info(source, ds, band_names)
        indexes = resolve_bands(info, bands)
        names = tuple(info.band_names[i - 1] for i in indexes)
        if grid is None:
            return read_dataset_window(source, ds, info, window, indexes, names, boundless, None)
        from rasterio.vrt import WarpedVRT

        alpha = ds.nodata is None  # no nodata value: an alpha band marks warped-in pixels
        # the grid's crs, transform, width and height: the warp's target, the header's fields
        target = {f.name: getattr(grid, f.name) for f in dataclasses.fields(grid)}
        try:
            vrt = WarpedVRT(ds, resampling=resampling, add_alpha=alpha, **target)
        except GDAL_ERRORS as err:
            gdal_failed(source, f"could not reproject to {crs_name(grid.crs)}", err)
        with vrt:
            warped = dataclasses.replace(info, res=grid.res, **target)  # its bands on the grid
            return read_dataset_window(
                source, vrt, warped, window, indexes, names, boundless, vrt.count if alpha else None
            )


def read_dataset_window(
    source: Path,
    ds: Any,
    info: RasterInfo,
    window: WindowLike | None,
    indexes: tuple[int, ...],
    names: tuple[str, ...],
    boundless: bool,
    alpha_band: int | None,
) -> BandRead:
    """Read ``window`` of an open dataset (or WarpedVRT) ``ds``: the part of the window
    inside the raster, padded with invalid pixels outside.

    Args:
        source: the file, named in errors.
        ds: the open dataset; left open.
        info: its header (:func:`~domainfm.domains.geospatial.raster_header.dataset_info`).
        window: as in :func:`read_raster`; ``None`` is the whole raster.
        indexes: 1-based band indices
            (:func:`~domainfm.domains.geospatial.raster_header.resolve_bands`).
        names: the names of those bands.
        boundless: allow a window reaching outside the raster.
        alpha_band: a band of ``ds`` whose zeros mark invalid pixels (a warp's alpha), or
            ``None``.

    Raises:
        ValueError: the window reaches outside the raster without ``boundless``, or GDAL
            fails to read the pixels (naming ``source``).
        AllocationTooLarge: (a ``ValueError``) naming ``source`` and the estimate, when the
            window's arrays would exceed the per-allocation limit (nothing is read).
    """
    win = Window(0, 0, info.width, info.height) if window is None else as_window(window)
    col0, row0, width, height = int(win.col_off), int(win.row_off), int(win.width), int(win.height)
    r0, r1 = max(row0, 0), min(row0 + height, info.height)  # the part inside the raster
    c0, c1 = max(col0, 0), min(col0 + width, info.width)
    inside = r0 < r1 and c0 < c1
    if (r0, r1, c0, c1) != (row0, row0 + height, col0, col0 + width) and not boundless:
        where = "lies outside" if not inside else "reaches outside"
        raise ValueError(
            f"window (row_off={row0}, col_off={col0}, height={height}, width={width}) {where} "
            f"{source}, which has {info.height}x{info.width} pixels (rows x cols); pass "
            "boundless=True to pad it with invalid pixels"
        )
    check_window_size(source, ds, win, indexes)
    values = np.zeros((len(indexes), height, width), dtype=np.float32)  # (b, H, W)
    valid = np.zeros((len(indexes), height, width), dtype=bool)  # outside: invalid
    if inside:
        inner = Window(c0, r0, c1 - c0, r1 - r0)
        rows, cols = slice(r0 - row0, r1 - row0), slice(c0 - col0, c1 - col0)
        try:
            raw = ds.read(list(indexes), window=inner)  # (b, h, w) on-disk dtype
            ok = np.ones(raw.shape, dtype=bool)
            all_flags = ds.mask_flag_enums  # decodes every band's flags: read it once
            flags = [all_flags[i - 1] for i in indexes]
            if any(MaskFlags.per_dataset in f or MaskFlags.alpha in f for f in flags):
                ok &= ds.read_masks(list(indexes), window=inner) > 0
            if alpha_band is not None:
                ok &= ds.read(alpha_band, window=inner)[None] > 0
        except GDAL_ERRORS as err:
            gdal_failed(source, "could not read its pixels", err)
        nodatas = ds.nodatavals
        ok &= ~nodata_pixels(raw, [nodatas[i - 1] for i in indexes])[None]
        band = raw.astype(np.float32, copy=False)
        if np.issubdtype(raw.dtype, np.floating):
            ok &= np.isfinite(band)
        scales = np.asarray([info.scales[i - 1] for i in indexes], dtype=np.float32)
        offsets = np.asarray([info.offsets[i - 1] for i in indexes], dtype=np.float32)
        if np.any(scales != 1) or np.any(offsets != 0):
            band = band * scales[:, None, None] + offsets[:, None, None]
        if inner == Window(col0, row0, width, height):
            values, valid = band, ok  # no padding needed
        else:
            values[:, rows, cols] = band
            valid[:, rows, cols] = ok
    transform = rasterio.windows.transform(win, info.transform)
    return BandRead(values, valid, info.crs, transform, names, win)


def check_window_size(source: Path, ds: Any, window: Window, indexes: Sequence[int]) -> None:
    """Refuse (:class:`~domainfm.core.size_guard.AllocationTooLarge`, naming ``source``) a
    read of ``window`` of the bands ``indexes`` of the open dataset ``ds`` whose arrays would
    exceed the per-allocation limit: bands × rows × cols × (the widest selected on-disk
    dtype + 4 for the float32 copy + 1 for the validity mask)."""
    dtypes = {np.dtype(ds.dtypes[i - 1]) for i in indexes}
    itemsize = max(d.itemsize for d in dtypes)
    names = "/".join(sorted(d.name for d in dtypes))
    height, width = int(window.height), int(window.width)
    check_allocation(
        float(len(indexes)) * height * width * (itemsize + 4 + 1),
        what=f"the window (row_off={int(window.row_off)}, col_off={int(window.col_off)}, "
        f"height={height}, width={width}) of {len(indexes)} band(s) ({names} read as "
        "float32, with its validity mask)",
        source=source,
    )


def merge_validity(source: Path, read: BandRead, *, fill: float, require_valid: bool) -> Raster:
    """The :class:`Raster` of a :class:`BandRead`: a pixel is valid when it is valid in every
    band; invalid pixels are set to ``fill``.

    Raises:
        ValueError: ``require_valid`` and no pixel of the window is valid (naming ``source``).
    """
    mask: np.ndarray = np.all(read.valid, axis=0)  # (H, W)
    array = read.values
    if not mask.all():
        array[:, ~mask] = fill
    if require_valid and not mask.any():
        win = read.window
        raise ValueError(
            f"window (row_off={int(win.row_off)}, col_off={int(win.col_off)}, "
            f"height={int(win.height)}, width={int(win.width)}) of {source} has no valid pixel "
            f"in bands {list(read.band_names)} (all nodata, masked, non-finite or outside the "
            "raster); pass require_valid=False to accept it"
        )
    return Raster(
        array=array,
        mask=mask,
        crs=read.crs,
        transform=read.transform,
        band_names=read.band_names,
        path=source,
        window=read.window,
    )


def nodata_pixels(raw: np.ndarray, nodatas: Sequence[float | None]) -> np.ndarray:
    """``(H, W)`` bool: pixels where every band that has a nodata value holds it (GDAL's
    dataset-mask convention: the ``(0, 0, 0)`` border of an RGB raster is nodata, a dark
    pixel with one zero channel is not). NaN nodata is left to the finiteness check."""
    hit: np.ndarray | None = None
    for band, nodata in zip(raw, nodatas, strict=True):
        if nodata is None or math.isnan(nodata):
            continue
        if _fits(nodata, raw.dtype):
            equal = np.asarray(band == raw.dtype.type(nodata))
        else:
            equal = np.zeros(band.shape, dtype=bool)  # no stored value can equal it
        hit = equal if hit is None else hit & equal
    if hit is None:
        return np.zeros(raw.shape[1:], dtype=bool)
    return np.broadcast_to(hit, raw.shape[1:])


def _fits(value: float, dtype: np.dtype) -> bool:
    """Whether ``value`` is representable in ``dtype`` (else no pixel can equal it)."""
    if np.issubdtype(dtype, np.integer):
        limits = np.iinfo(dtype)
        return float(value).is_integer() and limits.min <= value <= limits.max
    return True
