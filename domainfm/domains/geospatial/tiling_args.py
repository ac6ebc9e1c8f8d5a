"""The keyword arguments every tiled pass over a raster takes, tiled segmentation
(:func:`~domainfm.domains.geospatial.tiled_inference.predict_raster`) and detection
(:func:`~domainfm.domains.geospatial.tiled_detection.detect_raster`) alike: the tiles, the
bands and their normalization, the batch, the device and GDAL's cache (:class:`TilingArgs`,
their defaults :data:`TILING_DEFAULTS`), checked into a
:class:`~domainfm.domains.geospatial.tile_setup.TileSetup` by :func:`check_tiling`.

Example::

    >>> def segment(model, src, dst, *, blend="hann", **tiling: Unpack[TilingArgs]): ...
    >>> setup = check_tiling(model, "scene.tif", "labels.tif", {"tile": 64, "stats": stats})
    >>> setup.stride  # the default overlap 0.25
    48
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict

import torch

from domainfm.domains.geospatial.raster_header import BandsLike
from domainfm.domains.geospatial.stats import BandStats
from domainfm.domains.geospatial.tile_setup import Moments, TileSetup


class TilingArgs(TypedDict, total=False):
    """The tiling keywords of a tiled pass (each optional; defaults in :data:`TILING_DEFAULTS`).

    Keys:
        tile: tile side in pixels (the model's training window size); 256.
        overlap: fraction of a tile shared with the next one, in ``[0, 1)``; 0.25.
        bands: bands fed to the model, in order (1-based indices or names, as in
            :func:`~domainfm.domains.geospatial.raster_read.read_raster`); ``None``: every band.
        band_names: names of the file's bands (e.g. ``SENTINEL2_L1C_BANDS``).
        mean, std: per selected band, length ``C``: normalization ``(x - mean) / std``.
        stats: band statistics to take ``mean``/``std`` from, by band name (instead of
            ``mean``/``std``).
        batch_size: tiles per forward pass; 4.
        device: where the tiles go (default: the model's device, else CPU).
        gdal_cache_mb: GDAL block cache for the call, in MiB (``GDAL_CACHEMAX``); 64.
    """

    tile: int
    overlap: float
    bands: BandsLike
    band_names: Sequence[str] | None
    mean: Moments | None
    std: Moments | None
    stats: BandStats | None
    batch_size: int
    device: str | torch.device | None
    gdal_cache_mb: int


TILING_DEFAULTS: TilingArgs = {
    "tile": 256,
    "overlap": 0.25,
    "bands": None,
    "band_names": None,
    "mean": None,
    "std": None,
    "stats": None,
    "batch_size": 4,
    "device": None,
    "gdal_cache_mb": 64,
}
"""The value of every :class:`TilingArgs` key not given."""


def check_tiling(model: Any, src: str | Path, dst: str | Path, tiling: TilingArgs) -> TileSetup:
    """:meth:`TileSetup.check <domainfm.domains.geospatial.tile_setup.TileSetup.check>` of
    ``tiling`` over :data:`TILING_DEFAULTS`.

    Raises:
        TypeError: a key that is not a tiling argument, naming it.
        ValueError: as :meth:`~domainfm.domains.geospatial.tile_setup.TileSetup.check`.
    """
    unknown = sorted(set(tiling) - set(TILING_DEFAULTS))
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {unknown}")
    args: TilingArgs = {**TILING_DEFAULTS, **tiling}
    return TileSetup.check(model, src, dst, **args)
