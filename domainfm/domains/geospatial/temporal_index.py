"""A spatio-temporal index of rasters: when each was acquired and which ones show the same place.

Temporal positives (SeCo, Mañas et al. 2021, arXiv:2103.16607; geography-aware SSL, Ayush et
al. 2021, arXiv:2011.09980) and SatMAE-style series need "the same footprint on different
dates". Real archives do not put every date on one pixel grid (a re-processed scene, another
UTM zone, a different resolution), so places are found by **footprint**, not grid:

* **Dates** (:func:`acquisition_date`): a GeoTIFF tag (``ACQUISITION_DATETIME``,
  ``ACQUISITION_DATE``, ``DATE_ACQUIRED``, ``SENSING_TIME``, ``TIFFTAG_DATETIME``), else a
  date in the file name (``2015-07-11``, ``20150711T100008``, ``20150711``, or a regex of
  the caller's with named groups ``year``, ``month``, ``day`` and optionally ``hour``,
  ``minute``, ``second``); a file with neither is an error naming it.
* **Footprints**: the raster's bounds transformed to longitude/latitude (EPSG:4326, edges
  densified), so files in different CRSs compare.
* **Places** (:attr:`SpatioTemporalIndex.places`): files are taken in order and join the first
  place whose first member's footprint overlaps theirs with intersection-over-union at least
  ``min_overlap``, else start a new place; each place lists its files by date. Footprints
  are compared as lon/lat bounding boxes: a grid rotated against another (a scene warped
  into a UTM zone far from its own) has a larger box, so lower ``min_overlap`` for such
  archives (a scene warped from UTM 33N to 34N at 14.5° E keeps IoU 0.76).
  :attr:`SpatioTemporalIndex.same_grid` tells whether a place's files share one pixel grid
  (else reads must be reprojected onto one, see
  :func:`~domainfm.domains.geospatial.raster_align.open_aligned`).

Example::

    >>> index = SpatioTemporalIndex(sorted(Path("s2").glob("*.tif")))
    >>> [len(p) for p in index.places], index.dates[index.places[0][0]]
    ([5], datetime.datetime(2015, 7, 11, 10, 0, 8))
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from pathlib import Path

import rasterio
from rasterio.warp import transform_bounds

from domainfm.domains.geospatial.raster_align import grids_equal
from domainfm.domains.geospatial.raster_header import RasterInfo, open_raster, raster_info

DATE_TAGS = (
    "ACQUISITION_DATETIME",
    "ACQUISITION_DATE",
    "DATE_ACQUIRED",
    "SENSING_TIME",
    "TIFFTAG_DATETIME",
)
"""GeoTIFF metadata tags read for the acquisition date, in this order."""

_NAME_PATTERNS = (
    r"(?<!\d)(?P<year>\d{4})(?P<month>\d{2})(?P<day>\d{2})T(?P<hour>\d{2})(?P<minute>\d{2})"
    r"(?P<second>\d{2})(?!\d)",
    r"(?<!\d)(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})(?!\d)",
    r"(?<!\d)(?P<year>\d{4})(?P<month>\d{2})(?P<day>\d{2})(?!\d)",
)


def _parse_tag(value: str) -> dt.datetime | None:
    text = value.strip().replace("Z", "")
    for candidate in (text, text.replace(":", "-", 2)):  # TIFF: "2015:07:11 10:00:08"
        try:
            parsed = dt.datetime.fromisoformat(candidate)
        except ValueError:
            continue
        return parsed.replace(tzinfo=None)
    return None


def _from_match(match: re.Match[str]) -> dt.datetime:
    parts = match.groupdict()
    return dt.datetime(
        int(parts["year"]),
        int(parts["month"]),
        int(parts["day"]),
        int(parts.get("hour") or 0),
        int(parts.get("minute") or 0),
        int(parts.get("second") or 0),
    )


def check_date_pattern(pattern: str | None, *, what: str = "date_pattern") -> str | None:
    """``pattern`` after checking it is a valid regular expression with the named groups
    ``year``, ``month`` and ``day`` (``None`` passes).

    Raises:
        ValueError: ``"<what> '<pattern>' is not a valid regular expression: <why>"`` or
            names the missing groups.
    """
    if pattern is None:
        return None
    try:
        compiled = re.compile(pattern)
    except (re.error, TypeError) as err:
        raise ValueError(f"{what} {pattern!r} is not a valid regular expression: {err}") from err
    missing = [g for g in ("year", "month", "day") if g not in compiled.groupindex]
    if missing:
        raise ValueError(
            f"{what} {pattern!r} has no named group {', '.join(missing)}: a date regex needs "
            "(?P<year>...), (?P<month>...) and (?P<day>...)"
        )
    return pattern


def acquisition_date(path: str | Path, *, pattern: str | None = None) -> dt.datetime:
    """When ``path`` was acquired: from its tags, else its file name (see the module
    docstring); ``pattern`` (a regex with named groups) takes precedence over both.

    Raises:
        ValueError: naming the file when no date is found or the date is impossible.
    """
    source = Path(path)
    check_date_pattern(pattern)
    try:
        if pattern is not None:
            match = re.search(pattern, source.name)
            if match is None:
                raise ValueError(f"date_pattern {pattern!r} does not match the file name")
            return _from_match(match)
        with open_raster(source) as ds:
            tags = ds.tags()
        for tag in DATE_TAGS:
            if tag in tags:
                parsed = _parse_tag(tags[tag])
                if parsed is not None:
                    return parsed
        for regex in _NAME_PATTERNS:
            match = re.search(regex, source.stem)
            if match is not None:
                return _from_match(match)
    except (ValueError, KeyError) as err:
        raise ValueError(f"{source}: cannot read its acquisition date: {err}") from err
    raise ValueError(
        f"{source}: no acquisition date: none of the tags {list(DATE_TAGS)} and no date "
        "(YYYY-MM-DD, YYYYMMDD, YYYYMMDDTHHMMSS) in the file name; pass date_pattern= "
        "(a regex with named groups year, month, day)"
    )


def footprint_lonlat(info: RasterInfo) -> tuple[float, float, float, float]:
    """``(west, south, east, north)`` of the raster in degrees (EPSG:4326)."""
    west, south, east, north = transform_bounds(info.crs, "EPSG:4326", *info.bounds, densify_pts=21)
    return float(west), float(south), float(east), float(north)


def footprint_iou(
    a: tuple[float, float, float, float], b: tuple[float, float, float, float]
) -> float:
    """Intersection over union of two ``(west, south, east, north)`` boxes."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


class SpatioTemporalIndex:
    """Dates, footprints and places of a list of rasters (see the module docstring).

    Args:
        files: the rasters.
        min_overlap: least footprint IoU for two files to be the same place, in ``(0, 1]``.
        date_pattern: regex with named groups for dates in file names (overrides tags).
        band_names: names of the files' bands (passed to the header reader).

    Attributes:
        files: the paths, in the given order.
        infos: their headers.
        dates: acquisition date per file.
        footprints: ``(west, south, east, north)`` in degrees per file.
        places: per place, indices into ``files`` in chronological order.
    """

    def __init__(
        self,
        files: Sequence[str | Path],
        *,
        min_overlap: float = 0.9,
        date_pattern: str | None = None,
        band_names: Sequence[str] | None = None,
    ) -> None:
        if not 0.0 < min_overlap <= 1.0:
            raise ValueError(f"min_overlap={min_overlap!r}: must be in (0, 1]")
        if not files:
            raise ValueError("files is empty: pass at least one raster")
        check_date_pattern(date_pattern)
        self.files = [Path(f) for f in files]
        self.infos = [raster_info(f, band_names=band_names) for f in self.files]
        self.dates = [acquisition_date(f, pattern=date_pattern) for f in self.files]
        try:
            self.footprints = [footprint_lonlat(i) for i in self.infos]
        except rasterio.errors.RasterioError as err:
            raise ValueError(f"cannot transform a footprint to EPSG:4326: {err}") from err
        places: list[list[int]] = []
        for i, box in enumerate(self.footprints):
            for place in places:
                if footprint_iou(self.footprints[place[0]], box) >= min_overlap:
                    place.append(i)
                    break
            else:
                places.append([i])
        self.places = [sorted(p, key=lambda i: (self.dates[i], i)) for p in places]

    def same_grid(self, place: Sequence[int]) -> bool:
        """Whether the files of ``place`` share one pixel grid (CRS, transform, size)."""
        first = self.infos[place[0]].grid
        return all(grids_equal(first, self.infos[i].grid) for i in place[1:])
