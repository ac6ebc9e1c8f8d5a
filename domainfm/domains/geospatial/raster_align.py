"""Several rasters used together on one pixel lattice: grid checks and on-the-fly reprojection.

:func:`check_same_grid` checks that rasters share a CRS, a resolution and a grid (or a pixel
lattice); :func:`open_aligned` returns an :class:`AlignedRasters` whose files all lie on one
lattice. Rasters on different CRSs or resolutions are an error naming both files, unless
``reproject=True``, which reads every file through a :class:`rasterio.vrt.WarpedVRT` onto one
pixel lattice (the target CRS and resolution, the first file's by default). Reads go through
:mod:`~domainfm.domains.geospatial.raster_read` and behave as
:func:`~domainfm.domains.geospatial.raster_read.read_raster`.

**Worker safety**: :class:`AlignedRasters` holds paths and numbers only (picklable, no open
handle); every read opens and closes its file.

Example::

    >>> both = open_aligned(["RGB.byte.tif", "shade.tif"], reproject=True)
    >>> both.read(1).crs.to_string()      # shade.tif warped onto RGB.byte.tif's CRS and pixels
    'EPSG:32618'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import rasterio
import rasterio.crs
import rasterio.errors
import rasterio.windows
from affine import Affine
from rasterio.enums import Resampling
from rasterio.windows import Window

from domainfm.domains.geospatial.raster_header import (
    BandsLike,
    Grid,
    RasterInfo,
    crs_name,
    pixel_size,
    raster_info,
)
from domainfm.domains.geospatial.raster_read import (
    GDAL_ERRORS,
    WINDOW_ATOL,
    BandRead,
    WindowLike,
    read_bands,
)
from domainfm.domains.geospatial.window_source import WindowSource

GRID_ATOL_PIXELS = 1e-3
"""Largest difference between two grids' origins, in pixels, that still counts as equal."""
RES_RTOL = 1e-6
"""Relative tolerance when comparing resolutions."""


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
                f"{names} have different CRSs: {crs_name(info.crs)} vs {crs_name(ref.crs)}; "
                "reproject them (open_aligned(..., reproject=True)) or use rasters on one grid"
            )
        if not _same_res(info.res, ref.res):
            raise ValueError(
                f"{names} have different resolutions: {info.res} vs {ref.res} "
                f"({crs_name(ref.crs)} units); resample them (open_aligned(..., "
                "reproject=True)) or use rasters on one grid"
            )
        if same_extent:
            if info.shape != ref.shape or not _same_origin(info.transform, ref.transform):
                raise ValueError(
                    f"{names} are not on the same grid: {info.height}x{info.width} pixels "
                    f"from {_origin(info.transform)} vs {ref.height}x{ref.width} from "
                    f"{_origin(ref.transform)} ({crs_name(ref.crs)})"
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
class AlignedRasters(WindowSource[int]):
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

    def read_bands(
        self, file: int, window: WindowLike | None, bands: BandsLike, *, boundless: bool
    ) -> tuple[Path, BandRead]:
        """A window of file number ``file`` on its grid ``grids[file]`` (read with
        :meth:`~domainfm.domains.geospatial.window_source.WindowSource.read`). Files not
        already on the lattice are warped on the fly through a
        :class:`~rasterio.vrt.WarpedVRT` (only the window is computed)."""
        info, grid = self.infos[file], self.grids[file]
        target = None if grids_equal(info.grid, grid) else grid
        read = read_bands(
            info.path,
            window,
            bands,
            band_names=info.band_names,
            boundless=boundless,
            grid=target,
            resampling=self.resampling,
        )
        return info.path, read

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
                f"crs={crs!r}: {first.path} is in {crs_name(first.crs)}, not "
                f"{crs_name(target_crs)}; pass reproject=True to warp it"
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
        try:
            anchor_transform, _, _ = calculate_default_transform(
                first.crs,
                target_crs,
                first.width,
                first.height,
                *first.bounds,
                resolution=target_res,
            )
        except GDAL_ERRORS as err:
            raise ValueError(
                f"{first.path}: could not reproject its grid from {crs_name(first.crs)} to "
                f"{crs_name(target_crs)}: {_cause(err)}"
            ) from err
        lattice_res = pixel_size(anchor_transform) if target_res is None else target_res
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


def _cause(err: Exception) -> str:
    """GDAL's reason for ``err`` (its cause's message when it only points at it)."""
    detail, cause = str(err), err.__cause__
    if cause is not None and str(cause) not in detail:
        detail = str(cause) if "previous exception" in detail else f"{detail}: {cause}"
    return detail


def _origin(transform: Affine) -> tuple[float, float]:
    return (float(transform.c), float(transform.f))


def _rotated(transform: Affine) -> bool:
    return transform.b != 0 or transform.d != 0


def _same_res(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return all(math.isclose(x, y, rel_tol=RES_RTOL) for x, y in zip(a, b, strict=True))


def _same_origin(a: Affine, b: Affine) -> bool:
    rx, ry = pixel_size(b)
    return abs(a.c - b.c) <= GRID_ATOL_PIXELS * rx and abs(a.f - b.f) <= GRID_ATOL_PIXELS * ry


def _on_lattice(a: Affine, b: Affine) -> bool:
    rx, ry = pixel_size(b)
    dx, dy = (a.c - b.c) / rx, (a.f - b.f) / ry
    return abs(dx - round(dx)) <= GRID_ATOL_PIXELS and abs(dy - round(dy)) <= GRID_ATOL_PIXELS


def grids_equal(a: Grid, b: Grid) -> bool:
    """Whether ``a`` and ``b`` are the same grid: same CRS and size, resolutions and origins
    equal within :data:`RES_RTOL` / :data:`GRID_ATOL_PIXELS`."""
    return (
        a.crs == b.crs
        and (a.width, a.height) == (b.width, b.height)
        and _same_res(a.res, b.res)
        and _same_origin(a.transform, b.transform)
    )


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
        try:
            left, bottom, right, top = transform_bounds(info.crs, crs, *info.bounds, densify_pts=21)
        except GDAL_ERRORS as err:
            raise ValueError(
                f"{info.path}: could not reproject its footprint from {crs_name(info.crs)} to "
                f"{crs_name(crs)}: {_cause(err)}"
            ) from err
    if not all(math.isfinite(v) for v in (left, bottom, right, top)):
        raise ValueError(
            f"{info.path}: its footprint has no finite bounds in {crs_name(crs)} "
            f"({left}, {bottom}, {right}, {top}); it lies outside that CRS's area of use"
        )
    rx, ry = res
    ax, ay = anchor
    x0 = ax + math.floor((left - ax) / rx + GRID_ATOL_PIXELS) * rx
    y0 = ay - math.floor((ay - top) / ry + GRID_ATOL_PIXELS) * ry
    width = max(1, math.ceil((right - x0) / rx - GRID_ATOL_PIXELS))
    height = max(1, math.ceil((y0 - bottom) / ry - GRID_ATOL_PIXELS))
    return Grid(crs=crs, transform=Affine(rx, 0.0, x0, 0.0, -ry, y0), width=width, height=height)
