"""Raster headers (no pixels read): size, CRS, transform, band names, nodata, dtype,
scale/offset, and which bands a ``bands=`` selection means.

:func:`raster_info` returns a :class:`RasterInfo` (with its pixel :class:`Grid`);
:func:`resolve_bands` turns a selection into 1-based band indices. Reading pixel windows is
:mod:`~domainfm.domains.geospatial.raster_read`; several rasters on one pixel lattice,
:mod:`~domainfm.domains.geospatial.raster_align`.

* **Bands**: ``bands`` are **1-based** band indices (the rasterio/GDAL convention: band 1 is the
  first band) or band names, not both. Names come from ``band_names=`` (one per band), else
  the file's band descriptions (when every band has a distinct one), else ``("B1", "B2", ...)``.
  :data:`SENTINEL2_L1C_BANDS` and :data:`LANDSAT_RGB` are ready-made ``band_names``.
* **Opening**: :func:`open_dataset` / :func:`open_raster` open a file read-only and
  :func:`dataset_info` reads the header of an open dataset; the read layer, the cached
  :class:`~domainfm.domains.geospatial.raster_reader.RasterReader` and tiled inference build
  on them.

**Worker safety**: nothing here keeps a dataset open. Every read opens the file
(``with rasterio.open(...)``) and closes it before returning, and :class:`RasterInfo` and
:class:`Grid` hold paths and numbers only. GDAL dataset handles are not fork-safe (a handle
inherited by forked DataLoader workers shares its file offset and block cache with the
parent and reads garbage or crashes) and cannot be pickled, so datasets built on these
functions can be sent to workers as they are. Opening a local GeoTIFF costs about a
millisecond (header parsing), the price of that safety.

Everything wrong with an input is a ``ValueError`` (``FileNotFoundError`` when it does not
exist) whose message names the file and the problem, never a bare rasterio/GDAL error: an
unreadable, truncated or corrupt file, a path that is not valid UTF-8 (GDAL cannot open
it), complex-valued pixels (never silently cut to their real part), a raster without a CRS or
geotransform, a band index out of range or an unknown band name (listing the available
names).

Example::

    >>> info = raster_info("S2_L1C_2015-07-11.tif")
    >>> info.count, info.crs.to_string(), info.band_names[:3]
    (13, 'EPSG:32633', ('B01', 'B02', 'B03'))
    >>> resolve_bands(info, ["B04", "B03", "B02"])
    (4, 3, 2)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeAlias

import numpy as np
import rasterio
import rasterio.crs
import rasterio.errors
from affine import Affine
from rasterio.coords import BoundingBox

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
        """The 1-based indices of ``bands`` (indices or names, see :func:`resolve_bands`)."""
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
        return pixel_size(self.transform)

    @property
    def bounds(self) -> BoundingBox:
        """``(left, bottom, right, top)`` in CRS units."""
        return BoundingBox(*_bounds(self.transform, self.width, self.height))


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
    source = existing_raster(path)
    with open_raster(source) as ds:
        return dataset_info(source, ds, band_names)


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


def existing_raster(path: str | Path) -> Path:
    """``path`` as a :class:`~pathlib.Path`, checked to be an existing file (not a folder).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is a folder.
    """
    source = Path(path)
    if not source.exists():
        raise FileNotFoundError(f"raster {source} does not exist")
    if source.is_dir():
        raise ValueError(f"{source} is a folder, not a raster file")
    return source


def open_dataset(source: Path) -> Any:
    """``rasterio.open(source)`` read-only, GDAL open errors turned into a ValueError naming
    it; the caller closes it. A path that is not valid UTF-8 (bytes of another encoding in a
    file name) is refused naming it: rasterio hands GDAL UTF-8 paths only."""
    try:
        str(source).encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(
            f"{source}: the path is not valid UTF-8 (it holds bytes of another encoding), "
            "which GDAL cannot open; rename the file"
        ) from err
    try:
        with warnings.catch_warnings():
            # a missing CRS/geotransform is reported by dataset_info with a clearer message
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            return rasterio.open(source)
    except rasterio.errors.RasterioError as err:
        gdal_failed(source, "could not open it as a raster", err)


@contextmanager
def open_raster(source: Path) -> Iterator[Any]:
    """Open ``source`` read-only for a ``with`` block (see :func:`open_dataset`)."""
    with open_dataset(source) as ds:
        yield ds


def dataset_info(source: Path, ds: Any, band_names: Sequence[str] | None) -> RasterInfo:
    """The :class:`RasterInfo` of the open dataset ``ds`` (read from ``source``).

    Args:
        source: the file, named in errors and stored as ``path``.
        ds: an open rasterio dataset.
        band_names: one name per band, overriding the file's band descriptions.

    Raises:
        ValueError: no CRS or geotransform, bad ``band_names``.
    """
    complex_types = sorted({str(t) for t in ds.dtypes if "complex" in str(t)})
    if complex_types:
        raise ValueError(
            f"{source} has complex-valued pixels ({', '.join(complex_types)}, e.g. SAR "
            "single-look complex data); real-valued bands are needed: convert them first "
            "(e.g. to amplitude)"
        )
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
        res=pixel_size(transform),
        band_names=_band_names(source, ds, band_names),
        nodata=None if ds.nodata is None else float(ds.nodata),
        dtype=str(ds.dtypes[0]),
        scales=tuple(float(s) for s in ds.scales),
        offsets=tuple(float(o) for o in ds.offsets),
    )


def _band_names(source: Path, ds: Any, band_names: Sequence[str] | None) -> tuple[str, ...]:
    """``band_names`` checked against ``ds``, else its distinct band descriptions, else
    ``("B1", "B2", ...)``."""
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


def gdal_failed(source: Path, what: str, err: Exception) -> NoReturn:
    """Raise a ``ValueError`` naming ``source``, ``what`` failed and GDAL's reason, from the
    rasterio error ``err`` (its cause included when the message only points at it)."""
    detail, cause = str(err), err.__cause__
    if cause is not None and str(cause) not in detail:  # "Read failed. See previous exception"
        detail = str(cause) if "previous exception" in detail else f"{detail}: {cause}"
    raise ValueError(
        f"{source}: {what}: {detail} (the file is truncated, corrupt or not a raster "
        "format GDAL reads)"
    ) from err


def pixel_size(transform: Affine) -> tuple[float, float]:
    """Pixel size ``(x, y)`` of a geotransform, both positive (rotation allowed)."""
    return (
        float(math.hypot(transform.a, transform.d)),
        float(math.hypot(transform.b, transform.e)),
    )


def _bounds(transform: Affine, width: int, height: int) -> tuple[float, float, float, float]:
    """``(left, bottom, right, top)`` of a ``width × height`` grid."""
    xs, ys = zip(*(transform @ (c, r) for c in (0, width) for r in (0, height)), strict=True)
    return (min(xs), min(ys), max(xs), max(ys))


def crs_name(crs: rasterio.crs.CRS) -> str:
    """A short name of ``crs`` for messages (``"EPSG:32633"``, else the start of its WKT)."""
    try:
        return str(crs.to_string())
    except Exception:  # CRS without an authority code
        return str(crs.to_wkt())[:80]
