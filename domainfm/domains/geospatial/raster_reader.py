"""Windowed reads of many rasters through open file handles cached per process.

:func:`~domainfm.domains.geospatial.raster_read.read_raster` opens and closes the file on
every call: right for one-off reads, wasteful for a training loader drawing thousands of small
windows — each open re-parses the header, and closing drops GDAL's block cache, so a window of
a compressed, tiled GeoTIFF/COG decompresses its blocks again every time.
:class:`RasterReader` keeps up to ``max_open`` datasets open (least recently used closed
first) and reads through them with the same semantics as ``read_raster`` (validity mask,
scale/offset, boundless windows, errors naming the file).

**Fork safety.** GDAL handles must not cross processes. The cache belongs to the process
that filled it: a reader pickled into a ``DataLoader`` worker arrives without handles
(``__getstate__``), and a reader used after a ``fork`` (its process id changed) drops the
inherited handles without touching them and opens its own.

Example::

    >>> reader = RasterReader(band_names=SENTINEL2_L1C_BANDS)
    >>> reader.read("S2_L1C_2015-07-11.tif", (0, 0, 32, 32), bands=["B04", "B08"]).array.shape
    (2, 32, 32)
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from domainfm.domains.geospatial.raster_header import (
    BandsLike,
    RasterInfo,
    dataset_info,
    existing_raster,
    open_dataset,
    resolve_bands,
)
from domainfm.domains.geospatial.raster_read import BandRead, WindowLike, read_dataset_window
from domainfm.domains.geospatial.window_source import WindowSource


class RasterReader(WindowSource[str | Path]):
    """Reads windows of rasters through cached handles (see the module docstring).

    Args:
        band_names: one name per band, for every file read (else each file's own names).
        max_open: most files kept open at once in a process.
    """

    def __init__(self, *, band_names: Sequence[str] | None = None, max_open: int = 64) -> None:
        if max_open < 1:
            raise ValueError(f"max_open={max_open!r}: must be >= 1")
        self.band_names = tuple(band_names) if band_names is not None else None
        self.max_open = max_open
        self._pid = os.getpid()
        self._handles: OrderedDict[Path, tuple[Any, RasterInfo]] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = OrderedDict()  # handles never travel to another process
        return state

    def _handle(self, source: Path) -> tuple[Any, RasterInfo]:
        if os.getpid() != self._pid:  # forked: the inherited handles are the parent's
            self._handles = OrderedDict()
            self._pid = os.getpid()
        if source in self._handles:
            self._handles.move_to_end(source)
            return self._handles[source]
        ds = open_dataset(source)
        try:
            info = dataset_info(source, ds, self.band_names)
        except Exception:
            ds.close()
            raise
        self._handles[source] = (ds, info)
        while len(self._handles) > self.max_open:
            _, (old, _) = self._handles.popitem(last=False)
            old.close()
        return ds, info

    def info(self, path: str | Path) -> RasterInfo:
        """The header of ``path`` (from its cached handle)."""
        return self._handle(existing_raster(path))[1]

    def read_bands(
        self, file: str | Path, window: WindowLike | None, bands: BandsLike, *, boundless: bool
    ) -> tuple[Path, BandRead]:
        """A window of ``file`` through its cached handle (read with
        :meth:`~domainfm.domains.geospatial.window_source.WindowSource.read`, as
        :func:`~domainfm.domains.geospatial.raster_read.read_raster`)."""
        source = Path(file)
        if source not in self._handles:
            source = existing_raster(source)
        ds, info = self._handle(source)
        indexes = resolve_bands(info, bands)
        names = tuple(info.band_names[i - 1] for i in indexes)
        return source, read_dataset_window(
            source, ds, info, window, indexes, names, boundless, None
        )

    def close(self) -> None:
        """Close every cached handle of this process."""
        if os.getpid() == self._pid:
            for ds, _ in self._handles.values():
                ds.close()
        self._handles = OrderedDict()
