"""The window read shared by the raster sources that keep the files they read from
(:class:`~domainfm.domains.geospatial.raster_align.AlignedRasters` by index,
:class:`~domainfm.domains.geospatial.raster_reader.RasterReader` by path).

A subclass reads the selected bands of a window with their per-band validity
(:meth:`WindowSource.read_bands`, a :class:`~domainfm.domains.geospatial.raster_read.
BandRead`); :meth:`WindowSource.read` merges that into a
:class:`~domainfm.domains.geospatial.raster_read.Raster` exactly as
:func:`~domainfm.domains.geospatial.raster_read.read_raster` does (``fill``,
``require_valid``).

Example::

    >>> reader = RasterReader(band_names=SENTINEL2_L1C_BANDS)       # a WindowSource[path]
    >>> reader.read("S2_L1C_2015-07-11.tif", (0, 0, 32, 32), ["B04"], boundless=True).shape
    (32, 32)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Generic, TypeVar

from domainfm.domains.geospatial.raster_header import BandsLike
from domainfm.domains.geospatial.raster_read import BandRead, Raster, WindowLike, merge_validity

FileKey = TypeVar("FileKey")
"""How a source names one of its files (an index, a path)."""


class WindowSource(ABC, Generic[FileKey]):
    """Windows of the files a source names by ``FileKey`` (see the module docstring)."""

    def read(
        self,
        file: FileKey,
        /,
        window: WindowLike | None = None,
        bands: BandsLike = None,
        *,
        fill: float = 0.0,
        boundless: bool = False,
        require_valid: bool = True,
    ) -> Raster:
        """A window of ``file`` (the other arguments as in
        :func:`~domainfm.domains.geospatial.raster_read.read_raster`)."""
        source, read = self.read_bands(file, window, bands, boundless=boundless)
        return merge_validity(source, read, fill=fill, require_valid=require_valid)

    @abstractmethod
    def read_bands(
        self, file: FileKey, window: WindowLike | None, bands: BandsLike, *, boundless: bool
    ) -> tuple[Path, BandRead]:
        """The path of ``file`` (named in errors) and ``window`` of its ``bands`` with their
        per-band validity."""
