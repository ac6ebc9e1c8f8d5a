"""Reading windows of georeferenced rasters (GeoTIFF and anything GDAL reads), with clear errors.

:func:`read_raster` returns a :class:`Raster`: a float32 array ``(bands, H, W)`` of one pixel
window, with the file's per-band scale/offset applied, and a ``(H, W)`` validity ``mask``;
:func:`raster_info` reads the header only (size, CRS, transform, band names, nodata, dtype).

* **Windows**: a :class:`rasterio.windows.Window` (``col_off, row_off, width, height``) or a
  tuple ``(row_off, col_off, height, width)`` (numpy order). Only the window is read from disk,
  never the whole raster. A window reaching outside the raster is an error unless
  ``boundless=True``, which pads the outside with invalid pixels (``mask`` False).
* **Bands**: ``bands`` are **1-based** band indices (the rasterio/GDAL convention: band 1 is the
  first band) or band names, not both. Names come from ``band_names=`` (one per band), else
  the file's band descriptions (when every band has a distinct one), else ``("B1", "B2", ...)``.
  :data:`SENTINEL2_L1C_BANDS` and :data:`LANDSAT_RGB` are ready-made ``band_names``.
* **Validity**: a pixel is valid when, in every selected band, it is not the band's nodata
  value, is finite, is not masked by the file's internal mask or alpha band (GDAL mask flags
  ``per_dataset`` / ``alpha``, read with ``read_masks``) and lies inside the raster. Invalid
  pixels are set to ``fill`` in every band.
* **Several rasters together** (:func:`open_aligned`, :func:`check_same_grid`): rasters on
  different CRSs or resolutions are an error naming both files, unless ``reproject=True``,
  which reads every file through a :class:`rasterio.vrt.WarpedVRT` onto one pixel lattice
  (the target CRS and resolution, the first file's by default).

**Worker safety**: nothing here keeps a dataset open. Every read opens the file
(``with rasterio.open(...)``) and closes it before returning, and :class:`RasterInfo`,
:class:`Raster` and :class:`AlignedRasters` hold paths and numbers only. GDAL dataset handles
are not fork-safe (a handle inherited by forked DataLoader workers shares its file offset and
block cache with the parent and reads garbage or crashes) and cannot be pickled, so datasets
built on these functions can be sent to workers as they are. Opening a local GeoTIFF costs
about a millisecond (header parsing), the price of that safety.

Everything wrong with an input is a ``ValueError`` (``FileNotFoundError`` when it does not
exist) whose message names the file and the problem, never a bare rasterio/GDAL error:
an unreadable, truncated or corrupt file, a raster without a CRS or geotransform, a band index
out of range or an unknown band name (listing the available names), a window outside the
raster, a window (or raster) without a single valid pixel (``require_valid=True``), rasters
on different grids.

Example::

    >>> info = raster_info("S2_L1C_2015-07-11.tif")
    >>> info.count, info.crs.to_string(), info.band_names[:3]
    (13, 'EPSG:32633', ('B01', 'B02', 'B03'))
    >>> r = read_raster("S2_L1C_2015-07-11.tif", (10, 20, 32, 32), bands=["B04", "B03", "B02"])
    >>> r.array.shape, r.array.dtype, r.mask.shape
    ((3, 32, 32), dtype('float32'), (32, 32))
    >>> rgb = read_raster("RGB.byte.tif", band_names=LANDSAT_RGB, bands=["red"])
    >>> rgb.mask.mean()          # the black nodata border is invalid
    0.67...
    >>> both = open_aligned(["RGB.byte.tif", "shade.tif"], reproject=True)
    >>> both.read(1).crs.to_string()      # shade.tif warped onto RGB.byte.tif's CRS and pixels
    'EPSG:32618'
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, NoReturn, TypeAlias

import numpy as np
import rasterio
import rasterio.crs
import rasterio.errors
import rasterio.windows
from affine import Affine
from rasterio.coords import BoundingBox
from rasterio.enums import MaskFlags, Resampling
from rasterio.windows import Window

SENTINEL2_L1C_BANDS: tuple[str, ...] = (
    "B01",
    "B02",
    "B03",
    "B04",
    "B05",
    "B06",
    "B07",
    "B08",
    "B8A",
    "B09",
    "B10",
    "B11",
    "B12",
)
"""The 13 Sentinel-2 Level-1C bands in the usual file order (also the band order of the
example ``S2_L1C_*.tif`` files)."""

LANDSAT_RGB: tuple[str, ...] = ("red", "green", "blue")
"""Band names of a 3-band true-colour raster such as rasterio's ``RGB.byte.tif`` (which has
no band descriptions): pass as ``band_names=LANDSAT_RGB``."""

RASTER_SUFFIXES: tuple[str, ...] = (".tif", ".tiff")
"""File suffixes (case-insensitive) taken as rasters when a folder is listed."""

WINDOW_ATOL = 1e-6
"""A window offset or size this close to an integer is rounded to it; further is an error."""
GRID_ATOL_PIXELS = 1e-3
"""Largest difference between two grids' origins, in pixels, that still counts as equal."""
RES_RTOL = 1e-6
"""Relative tolerance when comparing resolutions."""

WindowLike: TypeAlias = "Window | tuple[int, int, int, int]"
"""A :class:`~rasterio.windows.Window` or ``(row_off, col_off, height, width)``."""
BandsLike: TypeAlias = "int | str | Sequence[int] | Sequence[str] | None"
"""1-based band indices or band names (one or a sequence); ``None`` is every band."""


@dataclass(frozen=True, eq=False)
class RasterInfo:
    """The header of a raster (no pixels read).

    Attributes:
        path: the file.
        width, height: size in pixels (columns, rows).
        count: number of bands.
        crs: coordinate reference system.
        transform: pixel ``(col, row)`` → CRS coordinates ``(x, y)`` of the pixel's corner.
        res: pixel size ``(x, y)`` in CRS units (both positive).
        band_names: one name per band (see the module docstring).
        nodata: the nodata value of band 1 (``None``: no nodata value).
        dtype: on-disk data type of band 1, e.g. ``"uint8"``.
        scales, offsets: per band; physical value = stored value × scale + offset.
    """

    path: Path
    width: int
    height: int
    count: int
    crs: rasterio.crs.CRS
    transform: Affine
    res: tuple[float, float]
    band_names: tuple[str, ...]
    nodata: float | None
    dtype: str
    scales: tuple[float, ...]
    offsets: tuple[float, ...]

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` in pixels."""
        return (self.height, self.width)

    @property
    def bounds(self) -> BoundingBox:
        """``(left, bottom, right, top)`` in CRS units."""
        return BoundingBox(*_bounds(self.transform, self.width, self.height))

    @property
    def grid(self) -> Grid:
        """The raster's pixel grid."""
        return Grid(crs=self.crs, transform=self.transform, width=self.width, height=self.height)

    def band_indices(self, bands: BandsLike = None) -> tuple[int, ...]:
        """The 1-based indices of ``bands`` (indices or names, see :func:`read_raster`)."""
        return resolve_bands(self, bands)


@dataclass(frozen=True)
class Grid:
    """A pixel grid: CRS, geotransform and size.

    Attributes:
        crs: coordinate reference system.
        transform: pixel ``(col, row)`` → ``(x, y)``.
        width, height: size in pixels.
    """

    crs: rasterio.crs.CRS
    transform: Affine
    width: int
    height: int

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size ``(x, y)``, positive."""
        return _res(self.transform)

    @property
    def bounds(self) -> BoundingBox:
        """``(left, bottom, right, top)`` in CRS units."""
        return BoundingBox(*_bounds(self.transform, self.width, self.height))


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


class _BandRead(NamedTuple):
    """A window before the bands' validity is merged: values ``(b, H, W)`` float32 with
    scale/offset applied (invalid pixels hold arbitrary values) and validity ``(b, H, W)``."""

    values: np.ndarray
    valid: np.ndarray
    crs: rasterio.crs.CRS
    transform: Affine
    band_names: tuple[str, ...]
    window: Window


def raster_info(path: str | Path, *, band_names: Sequence[str] | None = None) -> RasterInfo:
    """The header of a raster: size, CRS, transform, band names, nodata, dtype, scale/offset.

    Args:
        path: a GeoTIFF (or any raster GDAL reads).
        band_names: one name per band, overriding the file's band descriptions.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unreadable/corrupt file, no CRS or geotransform, bad ``band_names``.

    Example::

        >>> raster_info("RGB.byte.tif", band_names=LANDSAT_RGB).band_names
        ('red', 'green', 'blue')
    """
    source = _existing(path)
    with _open(source) as ds:
        return _info(source, ds, band_names)


def resolve_bands(info: RasterInfo, bands: BandsLike) -> tuple[int, ...]:
    """The 1-based band indices meant by ``bands``.

    Args:
        info: the raster's header.
        bands: ``None`` (every band), a 1-based index or a band name, or a sequence of
            indices or of names (not mixed). Repeats are allowed.

    Raises:
        ValueError: an index outside ``1..count``, an unknown name (the message lists the
            available names), mixed indices and names, an empty selection.
    """
    if bands is None:
        return tuple(range(1, info.count + 1))
    items: list[Any] = [bands] if isinstance(bands, str | int | np.integer) else list(bands)
    if not items:
        raise ValueError(f"bands={bands!r}: select at least one band of {info.path}")
    kinds = {"name" if isinstance(b, str) else "index" for b in items}
    for b in items:
        if isinstance(b, bool) or not isinstance(b, str | int | np.integer):
            raise ValueError(
                f"bands={bands!r}: bands are 1-based indices (int) or band names (str), "
                f"not {type(b).__name__}"
            )
    if len(kinds) > 1:
        raise ValueError(f"bands={bands!r} mixes band indices and band names; use one or the other")
    if kinds == {"name"}:
        lookup = {name: i + 1 for i, name in enumerate(info.band_names)}
        unknown = [b for b in items if b not in lookup]
        if unknown:
            raise ValueError(
                f"{info.path} has no band named {', '.join(repr(u) for u in unknown)}; "
                f"its bands are {list(info.band_names)} (pass band_names= to rename them)"
            )
        return tuple(lookup[b] for b in items)
    indices = tuple(int(b) for b in items)
    bad = [i for i in indices if not 1 <= i <= info.count]
    if bad:
        hint = " (band indices are 1-based: band 1 is the first)" if 0 in bad else ""
        raise ValueError(
            f"band index {bad[0]} is out of range for {info.path}, which has {info.count} "
            f"bands (valid indices 1..{info.count}: {list(info.band_names)}){hint}"
        )
    return indices


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
        band_names: one name per band of the file (e.g. :data:`LANDSAT_RGB`), overriding its
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
    source = _existing(path)
    read = _read_bands(source, window, bands, band_names=band_names, boundless=boundless)
    return _merge(source, read, fill=fill, require_valid=require_valid)


def check_same_grid(infos: Sequence[RasterInfo], *, same_extent: bool = True) -> None:
    """Check that rasters meant to be used together lie on one pixel grid.

    Every raster is compared with the first: same CRS, same resolution, and either the same
    transform and size (``same_extent=True``) or origins on the same pixel lattice (whole
    pixels apart, ``same_extent=False``; the rasters may cover different areas).

    Raises:
        ValueError: naming both files and both CRSs / resolutions / grids.

    Example::

        >>> check_same_grid([raster_info(p) for p in s2_dates])     # one S2 tile, 5 dates
    """
    if not infos:
        return
    ref = infos[0]
    for info in infos[1:]:
        names = f"{info.path} and {ref.path}"
        if info.crs != ref.crs:
            raise ValueError(
                f"{names} have different CRSs: {_crs_name(info.crs)} vs {_crs_name(ref.crs)}; "
                "reproject them (open_aligned(..., reproject=True)) or use rasters on one grid"
            )
        if not _same_res(info.res, ref.res):
            raise ValueError(
                f"{names} have different resolutions: {info.res} vs {ref.res} "
                f"({_crs_name(ref.crs)} units); resample them (open_aligned(..., "
                "reproject=True)) or use rasters on one grid"
            )
        if same_extent:
            if info.shape != ref.shape or not _same_origin(info.transform, ref.transform):
                raise ValueError(
                    f"{names} are not on the same grid: {info.height}x{info.width} pixels "
                    f"from {_origin(info.transform)} vs {ref.height}x{ref.width} from "
                    f"{_origin(ref.transform)} ({_crs_name(ref.crs)})"
                )
        elif not _on_lattice(info.transform, ref.transform):
            raise ValueError(
                f"{names} are not pixel-aligned: origins {_origin(info.transform)} and "
                f"{_origin(ref.transform)} are not a whole number of {ref.res} pixels apart; "
                "resample them (open_aligned(..., reproject=True))"
            )
        rotated = _rotated(info.transform) or _rotated(ref.transform)
        if rotated and not info.transform.almost_equals(ref.transform, precision=1e-9):
            raise ValueError(f"{names}: rotated geotransforms differ")


@dataclass(frozen=True, eq=False)
class AlignedRasters:
    """Rasters on one pixel lattice (made by :func:`open_aligned`); picklable, no open handles.

    Every file keeps its own grid (``grids[i]``: its footprint on the lattice), all sharing
    ``crs`` and ``res`` with origins whole pixels apart, so pixel windows of different files
    are related by integer offsets; :meth:`window_for` finds the window of a place.

    Attributes:
        paths: the files.
        infos: their headers (their own CRS/transform, before any reprojection).
        crs, res: the lattice's CRS and pixel size.
        grids: per file, the grid its reads are on.
        resampling: how reprojected reads are resampled.
    """

    paths: tuple[Path, ...]
    infos: tuple[RasterInfo, ...]
    crs: rasterio.crs.CRS
    res: tuple[float, float]
    grids: tuple[Grid, ...]
    resampling: Resampling = Resampling.nearest

    def __len__(self) -> int:
        return len(self.paths)

    def read(
        self,
        index: int,
        window: WindowLike | None = None,
        bands: BandsLike = None,
        *,
        fill: float = 0.0,
        boundless: bool = False,
        require_valid: bool = True,
    ) -> Raster:
        """Read a window of file ``index`` on its grid ``grids[index]`` (arguments as in
        :func:`read_raster`). Files not already on the lattice are warped on the fly
        through a :class:`~rasterio.vrt.WarpedVRT` (only the window is computed)."""
        info, grid = self.infos[index], self.grids[index]
        target = None if _grid_equal(info.grid, grid) else grid
        read = _read_bands(
            info.path,
            window,
            bands,
            band_names=info.band_names,
            boundless=boundless,
            grid=target,
            resampling=self.resampling,
        )
        return _merge(info.path, read, fill=fill, require_valid=require_valid)

    def window_for(self, index: int, bounds: tuple[float, float, float, float]) -> Window:
        """The pixel window of file ``index`` that covers ``(left, bottom, right, top)`` (in
        :attr:`crs`), rounded outwards to whole pixels; may reach outside the file (read it
        with ``boundless=True``)."""
        window = rasterio.windows.from_bounds(*bounds, transform=self.grids[index].transform)
        col0 = math.floor(window.col_off + WINDOW_ATOL)
        row0 = math.floor(window.row_off + WINDOW_ATOL)
        col1 = math.ceil(window.col_off + window.width - WINDOW_ATOL)
        row1 = math.ceil(window.row_off + window.height - WINDOW_ATOL)
        return Window(col0, row0, max(col1 - col0, 1), max(row1 - row0, 1))


def open_aligned(
    paths: Sequence[str | Path],
    *,
    reproject: bool = False,
    crs: rasterio.crs.CRS | str | int | None = None,
    res: float | tuple[float, float] | None = None,
    resampling: Resampling = Resampling.nearest,
    band_names: Sequence[str] | None = None,
) -> AlignedRasters:
    """Rasters to be used together, checked (or warped) onto one pixel lattice.

    Without ``reproject`` every file must already share the first file's CRS, resolution and
    pixel lattice (:func:`check_same_grid` with ``same_extent=False``), and ``crs`` / ``res``,
    when given, must match it. With ``reproject=True`` the lattice is ``crs`` (default: the
    first file's) at ``res`` (default: the first file's resolution, or the resolution GDAL
    picks for the first file in ``crs``), anchored at the first file's (reprojected) origin;
    each file's grid is its footprint on that lattice, and files not already on it are read
    through a :class:`~rasterio.vrt.WarpedVRT`.

    Args:
        paths: the rasters.
        reproject: warp files onto the lattice instead of rejecting mismatches.
        crs: target CRS (a ``CRS``, ``"EPSG:32633"``, an EPSG code or WKT).
        res: target pixel size in ``crs`` units (one number or ``(x, y)``).
        resampling: resampling of warped reads; nearest (the default) keeps label values
            and nodata intact, bilinear/cubic suit continuous images.
        band_names: one name per band, for every file (else each file's own names).

    Raises:
        ValueError: naming both files and both CRSs / resolutions / grids on a mismatch
            without ``reproject``; bad ``crs`` / ``res``; unreadable files.

    Example::

        >>> stack = open_aligned(["RGB.byte.tif", "shade.tif"], reproject=True)
        >>> stack.grids[1].crs == stack.crs, stack.res
        (True, (300.0379266750948, 300.041782729805))
    """
    if not paths:
        raise ValueError("paths=[]: open_aligned needs at least one raster")
    infos = tuple(raster_info(p, band_names=band_names) for p in paths)
    first = infos[0]
    target_crs = first.crs if crs is None else _as_crs(crs)
    target_res = None if res is None else _as_res(res)
    if not reproject:
        check_same_grid(infos, same_extent=False)
        if target_crs != first.crs:
            raise ValueError(
                f"crs={crs!r}: {first.path} is in {_crs_name(first.crs)}, not "
                f"{_crs_name(target_crs)}; pass reproject=True to warp it"
            )
        if target_res is not None and not _same_res(target_res, first.res):
            raise ValueError(
                f"res={res!r}: {first.path} has pixels of {first.res}; pass reproject=True "
                "to resample it"
            )
        return AlignedRasters(
            paths=tuple(i.path for i in infos),
            infos=infos,
            crs=first.crs,
            res=first.res,
            grids=tuple(i.grid for i in infos),
            resampling=resampling,
        )
    from rasterio.warp import calculate_default_transform

    if target_crs == first.crs:
        anchor_transform = first.transform
        lattice_res = first.res if target_res is None else target_res
    else:
        anchor_transform, _, _ = calculate_default_transform(
            first.crs,
            target_crs,
            first.width,
            first.height,
            *first.bounds,
            resolution=target_res,
        )
        lattice_res = _res(anchor_transform) if target_res is None else target_res
    anchor = (float(anchor_transform.c), float(anchor_transform.f))
    grids = tuple(_lattice_grid(info, target_crs, lattice_res, anchor) for info in infos)
    return AlignedRasters(
        paths=tuple(i.path for i in infos),
        infos=infos,
        crs=target_crs,
        res=lattice_res,
        grids=grids,
        resampling=resampling,
    )


# --- reading -------------------------------------------------------------------------------


def _read_bands(
    source: Path,
    window: WindowLike | None,
    bands: BandsLike,
    *,
    band_names: Sequence[str] | None = None,
    boundless: bool = False,
    grid: Grid | None = None,
    resampling: Resampling = Resampling.nearest,
) -> _BandRead:
    """Read ``window`` of the selected bands with per-band validity (``grid``: warp onto it)."""
    with _open(source) as ds:
        info = _info(source, ds, band_names)
        indexes = resolve_bands(info, bands)
        names = tuple(info.band_names[i - 1] for i in indexes)
        if grid is None:
            return _read_open(source, ds, info, window, indexes, names, boundless, None)
        from rasterio.vrt import WarpedVRT

        alpha = ds.nodata is None  # no nodata value: an alpha band marks warped-in pixels
        try:
            vrt = WarpedVRT(
                ds,
                crs=grid.crs,
                transform=grid.transform,
                width=grid.width,
                height=grid.height,
                resampling=resampling,
                add_alpha=alpha,
            )
        except rasterio.errors.RasterioError as err:
            _gdal_failed(source, f"could not reproject to {_crs_name(grid.crs)}", err)
        with vrt:
            warped = RasterInfo(
                path=source,
                width=grid.width,
                height=grid.height,
                count=info.count,
                crs=grid.crs,
                transform=grid.transform,
                res=grid.res,
                band_names=info.band_names,
                nodata=info.nodata,
                dtype=info.dtype,
                scales=info.scales,
                offsets=info.offsets,
            )
            return _read_open(
                source, vrt, warped, window, indexes, names, boundless, vrt.count if alpha else None
            )


def _read_open(
    source: Path,
    ds: Any,
    info: RasterInfo,
    window: WindowLike | None,
    indexes: tuple[int, ...],
    names: tuple[str, ...],
    boundless: bool,
    alpha_band: int | None,
) -> _BandRead:
    """Read from an open dataset (or WarpedVRT): the part of the window inside the raster,
    padded with invalid pixels outside."""
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
        except rasterio.errors.RasterioError as err:
            _gdal_failed(source, "could not read its pixels", err)
        nodatas = ds.nodatavals
        ok &= ~_nodata_pixels(raw, [nodatas[i - 1] for i in indexes])[None]
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
    return _BandRead(values, valid, info.crs, transform, names, win)


def _merge(source: Path, read: _BandRead, *, fill: float, require_valid: bool) -> Raster:
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


def _nodata_pixels(raw: np.ndarray, nodatas: Sequence[float | None]) -> np.ndarray:
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


# --- opening and headers -------------------------------------------------------------------


def _existing(path: str | Path) -> Path:
    source = Path(path)
    if not source.exists():
        raise FileNotFoundError(f"raster {source} does not exist")
    if source.is_dir():
        raise ValueError(f"{source} is a folder, not a raster file")
    return source


def _open_dataset(source: Path) -> Any:
    """``rasterio.open(source)`` read-only, GDAL open errors turned into a ValueError naming
    it; the caller closes it."""
    try:
        with warnings.catch_warnings():
            # a missing CRS/geotransform is reported by _info with a clearer message
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            return rasterio.open(source)
    except rasterio.errors.RasterioError as err:
        _gdal_failed(source, "could not open it as a raster", err)


@contextmanager
def _open(source: Path) -> Iterator[Any]:
    """Open ``source`` read-only for a ``with`` block (see :func:`_open_dataset`)."""
    with _open_dataset(source) as ds:
        yield ds


def _info(source: Path, ds: Any, band_names: Sequence[str] | None) -> RasterInfo:
    if ds.crs is None:
        raise ValueError(
            f"{source} has no CRS (coordinate reference system), so its pixels cannot be "
            "placed on the ground; set one (e.g. `gdal_edit.py -a_srs EPSG:32633`) or use a "
            "georeferenced copy"
        )
    transform = ds.transform
    if transform == Affine.identity():
        raise ValueError(
            f"{source} has a CRS but no geotransform (pixel → coordinates); rasters "
            "georeferenced only by GCPs/RPCs must be warped first (gdalwarp)"
        )
    return RasterInfo(
        path=source,
        width=int(ds.width),
        height=int(ds.height),
        count=int(ds.count),
        crs=ds.crs,
        transform=transform,
        res=_res(transform),
        band_names=_band_names(source, ds, band_names),
        nodata=None if ds.nodata is None else float(ds.nodata),
        dtype=str(ds.dtypes[0]),
        scales=tuple(float(s) for s in ds.scales),
        offsets=tuple(float(o) for o in ds.offsets),
    )


def _band_names(source: Path, ds: Any, band_names: Sequence[str] | None) -> tuple[str, ...]:
    count = int(ds.count)
    if band_names is not None:
        names = (band_names,) if isinstance(band_names, str) else tuple(band_names)
        if len(names) != count:
            raise ValueError(
                f"band_names={list(names)} has {len(names)} names but {source} has {count} bands"
            )
        if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
            raise ValueError(f"band_names={list(names)} must be distinct, non-empty strings")
        return names
    descriptions = tuple(ds.descriptions)
    if all(descriptions) and len(set(descriptions)) == count:
        return tuple(str(d) for d in descriptions)
    return tuple(f"B{i}" for i in range(1, count + 1))


def _gdal_failed(source: Path, what: str, err: Exception) -> NoReturn:
    detail, cause = str(err), err.__cause__
    if cause is not None and str(cause) not in detail:  # "Read failed. See previous exception"
        detail = str(cause) if "previous exception" in detail else f"{detail}: {cause}"
    raise ValueError(
        f"{source}: {what}: {detail} (the file is truncated, corrupt or not a raster "
        "format GDAL reads)"
    ) from err


# --- grids ---------------------------------------------------------------------------------


def _res(transform: Affine) -> tuple[float, float]:
    return (
        float(math.hypot(transform.a, transform.d)),
        float(math.hypot(transform.b, transform.e)),
    )


def _bounds(transform: Affine, width: int, height: int) -> tuple[float, float, float, float]:
    xs, ys = zip(*(transform @ (c, r) for c in (0, width) for r in (0, height)), strict=True)
    return (min(xs), min(ys), max(xs), max(ys))


def _origin(transform: Affine) -> tuple[float, float]:
    return (float(transform.c), float(transform.f))


def _rotated(transform: Affine) -> bool:
    return transform.b != 0 or transform.d != 0


def _same_res(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return all(math.isclose(x, y, rel_tol=RES_RTOL) for x, y in zip(a, b, strict=True))


def _same_origin(a: Affine, b: Affine) -> bool:
    rx, ry = _res(b)
    return abs(a.c - b.c) <= GRID_ATOL_PIXELS * rx and abs(a.f - b.f) <= GRID_ATOL_PIXELS * ry


def _on_lattice(a: Affine, b: Affine) -> bool:
    rx, ry = _res(b)
    dx, dy = (a.c - b.c) / rx, (a.f - b.f) / ry
    return abs(dx - round(dx)) <= GRID_ATOL_PIXELS and abs(dy - round(dy)) <= GRID_ATOL_PIXELS


def _grid_equal(a: Grid, b: Grid) -> bool:
    return (
        a.crs == b.crs
        and (a.width, a.height) == (b.width, b.height)
        and _same_res(a.res, b.res)
        and _same_origin(a.transform, b.transform)
    )


def _crs_name(crs: rasterio.crs.CRS) -> str:
    try:
        return str(crs.to_string())
    except Exception:  # CRS without an authority code
        return str(crs.to_wkt())[:80]


def _as_crs(crs: rasterio.crs.CRS | str | int) -> rasterio.crs.CRS:
    if isinstance(crs, rasterio.crs.CRS):
        return crs
    try:
        if isinstance(crs, int):
            return rasterio.crs.CRS.from_epsg(crs)
        return rasterio.crs.CRS.from_user_input(crs)
    except rasterio.errors.CRSError as err:
        raise ValueError(f"crs={crs!r} is not a CRS GDAL knows: {err}") from err


def _as_res(res: float | tuple[float, float]) -> tuple[float, float]:
    pair = (res, res) if isinstance(res, int | float) else tuple(res)
    if len(pair) != 2 or not all(isinstance(v, int | float) and v > 0 for v in pair):
        raise ValueError(f"res={res!r}: expected a positive pixel size or (x, y) pair")
    return (float(pair[0]), float(pair[1]))


def _lattice_grid(
    info: RasterInfo,
    crs: rasterio.crs.CRS,
    res: tuple[float, float],
    anchor: tuple[float, float],
) -> Grid:
    """The smallest north-up grid on the lattice (``crs``, ``res``, origin ``anchor`` plus
    whole pixels) that covers ``info``'s footprint."""
    from rasterio.warp import transform_bounds

    if info.crs == crs:
        left, bottom, right, top = info.bounds
    else:
        left, bottom, right, top = transform_bounds(info.crs, crs, *info.bounds, densify_pts=21)
    rx, ry = res
    ax, ay = anchor
    x0 = ax + math.floor((left - ax) / rx + GRID_ATOL_PIXELS) * rx
    y0 = ay - math.floor((ay - top) / ry + GRID_ATOL_PIXELS) * ry
    width = max(1, math.ceil((right - x0) / rx - GRID_ATOL_PIXELS))
    height = max(1, math.ceil((y0 - bottom) / ry - GRID_ATOL_PIXELS))
    return Grid(crs=crs, transform=Affine(rx, 0.0, x0, 0.0, -ry, y0), width=width, height=height)
