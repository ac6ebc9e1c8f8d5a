"""Per-band statistics of a set of rasters (mean, std, 2nd/98th percentiles), cached as JSON.

:func:`compute_band_stats` reads each raster in square tiles (windowed reads, never the whole
file at once), in a random order drawn from ``seed`` and the file's name, until
``max_pixels_per_file`` pixels have been read (every tile when the file is smaller, so small
rasters give **exact** statistics). Only valid pixels count, per band, as :func:`read_raster`
defines them (not a nodata pixel, finite, not masked, inside the raster; a NaN in one band
leaves the other bands' value of that pixel in their statistics). From each file, per band:

* ``mean`` and ``std`` (population, ``ddof=0``) exactly over the sampled pixels, combined
  across files with Chan et al.'s pairwise update in float64 (so the pooled result equals
  numpy over all sampled pixels at once);
* ``p2`` / ``p98``: ``numpy.percentile`` (linear interpolation) of the pooled samples, each
  file contributing at most ``PERCENTILE_POOL // n_files`` values (a random subset);
* ``count``: the number of valid pixels the statistics were computed from.

With ``cache=``, the result is written as JSON (atomically) with each file's size and mtime
and the sampling parameters; the next call with the same files (size and mtime unchanged)
and parameters loads it **without opening a raster**; a touched file, another file list or
other parameters recompute (and rewrite) it.

Example::

    >>> stats = compute_band_stats("s2_l1c_13band/", cache="s2_stats.json")
    >>> stats.band_names[:3], stats.reads
    (('B01', 'B02', 'B03'), 5)
    >>> compute_band_stats("s2_l1c_13band/", cache="s2_stats.json").reads   # from the cache
    0
    >>> x = stats.normalize(read_raster("s2_l1c_13band/S2_L1C_2015-07-11.tif").array)
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window

from domainfm.core.checkpoint_io import atomic_write_json
from domainfm.core.normalize import STD_FLOOR, standardize
from domainfm.data.file_stamp import file_stamp
from domainfm.domains.geospatial.contract import RasterContract, standardization
from domainfm.domains.geospatial.raster_header import (
    RASTER_SUFFIXES,
    BandsLike,
    RasterInfo,
    raster_info,
    resolve_bands,
)
from domainfm.domains.geospatial.raster_read import read_bands

STATS_FORMAT = "domainfm.band_stats/1"
"""Tag and version of the JSON layout; a file with another tag is not reused."""
DEFAULT_MAX_PIXELS_PER_FILE = 2**17
"""Pixels read per file at most (rounded up to whole tiles)."""
DEFAULT_TILE = 64
"""Side of the square tiles read (pixels)."""
PERCENTILE_POOL = 2**21
"""Largest number of values per band pooled across files for the percentiles."""


@dataclass(frozen=True)
class SourceStamp:
    """A raster file as it was when the statistics were computed."""

    path: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> SourceStamp:
        size, mtime_ns = file_stamp(path)
        return cls(path=str(path.resolve()), size=size, mtime_ns=mtime_ns)


@dataclass(frozen=True, eq=False)
class BandStats:
    """Statistics per band over the valid pixels of some rasters.

    Attributes:
        band_names: the bands, in the order of every per-band tuple.
        mean, std: mean and population standard deviation (``ddof=0``).
        p2, p98: 2nd and 98th percentiles (linear interpolation).
        count: valid pixels the statistics were computed from.
        sources: the files (absolute path, size, mtime) they came from.
        params: the sampling parameters (``max_pixels_per_file``, ``tile``, ``seed``, bands).
        reads: rasters read to produce this object (0 when it came from a cache; not saved).
    """

    band_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    p2: tuple[float, ...]
    p98: tuple[float, ...]
    count: tuple[int, ...]
    sources: tuple[SourceStamp, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    reads: int = field(default=0, compare=False)

    def normalize(self, array: np.ndarray, *, eps: float = STD_FLOOR) -> np.ndarray:
        """``(array - mean) / std`` per band for ``array`` ``(bands, H, W)`` in
        :attr:`band_names` order; float32."""
        if array.ndim != 3 or array.shape[0] != len(self.band_names):
            raise ValueError(
                f"array of shape {tuple(array.shape)}: expected ({len(self.band_names)}, H, W) "
                f"for bands {list(self.band_names)}"
            )
        mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]
        std = np.asarray(self.std, dtype=np.float32)[:, None, None]
        return standardize(array, mean, std, floor=eps).astype(np.float32)

    def contract(self, bands: Sequence[str] | None = None) -> RasterContract:
        """These statistics as the ``"standardize"`` :class:`~domainfm.domains.geospatial.
        contract.RasterContract` of ``bands`` (names, in the order wanted; default
        :attr:`band_names`): :meth:`~domainfm.domains.geospatial.contract.RasterContract.
        moments` is then the normalization ``(x - mean) / std`` with the library's std floor.

        Raises:
            ValueError: naming the bands the statistics do not cover.
        """
        names = list(self.band_names if bands is None else bands)
        missing = [n for n in names if n not in self.band_names]
        if missing:
            raise ValueError(
                f"band statistics have no {missing}; they cover {list(self.band_names)}"
            )
        whole = RasterContract(
            bands=list(self.band_names), normalization=standardization(self.mean, self.std)
        )
        return whole.select(names)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": STATS_FORMAT,
            "band_names": list(self.band_names),
            "mean": list(self.mean),
            "std": list(self.std),
            "p2": list(self.p2),
            "p98": list(self.p98),
            "count": list(self.count),
            "sources": [vars(s) for s in self.sources],
            "params": self.params,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BandStats:
        if data.get("format") != STATS_FORMAT:
            raise ValueError(f"format {data.get('format')!r} is not {STATS_FORMAT!r}")
        names = tuple(str(n) for n in data["band_names"])
        mean, std, p2, p98 = (
            tuple(float(v) for v in data[k]) for k in ("mean", "std", "p2", "p98")
        )
        count = tuple(int(v) for v in data["count"])
        if any(len(v) != len(names) for v in (mean, std, p2, p98, count)):
            raise ValueError(f"per-band lists do not all have {len(names)} entries")
        return cls(
            band_names=names,
            mean=mean,
            std=std,
            p2=p2,
            p98=p98,
            count=count,
            sources=tuple(SourceStamp(**s) for s in data.get("sources", [])),
            params=dict(data.get("params", {})),
        )

    def save(self, path: str | Path) -> Path:
        """Write as JSON, atomically (a crash leaves the old file or the new one)."""
        return atomic_write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> BandStats:
        """Read a file written by :meth:`save`.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ValueError: naming the file, when it is not a band-statistics JSON.
        """
        source = Path(path)
        if not source.exists():
            raise FileNotFoundError(f"band statistics {source} do not exist")
        try:
            return cls.from_json(json.loads(source.read_text()))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"{source} is not a band statistics file: {err}") from err


def raster_files(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    """The raster files meant by ``paths``: a file, a folder (its files with a suffix in
    :data:`~domainfm.domains.geospatial.raster_header.RASTER_SUFFIXES`, sorted, not recursive), or a
    list of them.

    Raises:
        FileNotFoundError: a path does not exist.
        ValueError: no raster found.
    """
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    files: list[Path] = []
    for item in items:
        path = Path(item)
        if not path.exists():
            raise FileNotFoundError(f"raster or folder {path} does not exist")
        if path.is_dir():
            files += sorted(
                p for p in path.iterdir() if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES
            )
        else:
            files.append(path)
    if not files:
        raise ValueError(f"paths={paths!r}: no raster files ({', '.join(RASTER_SUFFIXES)})")
    return files


def compute_band_stats(
    paths: str | Path | Sequence[str | Path],
    *,
    cache: str | Path | None = None,
    bands: BandsLike = None,
    band_names: Sequence[str] | None = None,
    max_pixels_per_file: int = DEFAULT_MAX_PIXELS_PER_FILE,
    tile: int = DEFAULT_TILE,
    seed: int = 0,
) -> BandStats:
    """Per-band mean, std, p2, p98 and valid-pixel count over some rasters (see the module
    docstring), reused from ``cache`` when nothing changed.

    Args:
        paths: a raster, a folder of rasters, or a list of them; all must have the same bands.
        cache: JSON file to reuse when the files (size, mtime) and parameters are unchanged,
            and to (re)write otherwise.
        bands: which bands (1-based indices or names, as :func:`read_raster`); ``None``: all.
        band_names: one name per band, for every file (else each file's own names).
        max_pixels_per_file: pixels read per file at most (whole tiles).
        tile: side of the square tiles read.
        seed: seed of the tile order and subsampling (with the file name).

    Raises:
        FileNotFoundError: a path does not exist.
        ValueError: files with different band counts or names (naming both files), a band
            without any valid pixel, bad arguments, unreadable rasters.
    """
    if isinstance(max_pixels_per_file, bool) or max_pixels_per_file < 1:
        raise ValueError(f"max_pixels_per_file={max_pixels_per_file!r}: must be >= 1")
    if isinstance(tile, bool) or tile < 1:
        raise ValueError(f"tile={tile!r}: must be >= 1")
    files = raster_files(paths)
    stamps = tuple(SourceStamp.of(f) for f in files)
    params: dict[str, Any] = {
        "max_pixels_per_file": int(max_pixels_per_file),
        "tile": int(tile),
        "seed": int(seed),
        "bands": _jsonable_bands(bands),
        "band_names": None if band_names is None else list(band_names),
    }
    cache_path = Path(cache) if cache is not None else None
    if cache_path is not None and cache_path.exists():
        try:
            cached = BandStats.load(cache_path)
        except ValueError:
            cached = None  # unreadable: recompute and overwrite
        if cached is not None and cached.sources == stamps and cached.params == params:
            return cached
    infos = [raster_info(f, band_names=band_names) for f in files]
    indexes = _check_same_bands(infos, bands)
    names = tuple(infos[0].band_names[i - 1] for i in indexes)
    pool = max(1, PERCENTILE_POOL // len(files))
    moments = _Moments(len(indexes))
    pooled: list[list[np.ndarray]] = [[] for _ in indexes]
    for info in infos:
        rng = np.random.default_rng([int(seed), zlib.crc32(info.path.name.encode())])
        for b, values in enumerate(_sample_file(info, indexes, max_pixels_per_file, tile, rng)):
            moments.add(b, values)
            if values.size > pool:
                values = values[np.sort(rng.choice(values.size, pool, replace=False))]
            pooled[b].append(values)
    empty = [names[b] for b in range(len(names)) if moments.n[b] == 0]
    if empty:
        raise ValueError(
            f"bands {empty} have no valid pixel in the sampled tiles of {len(files)} files "
            f"({files[0]}, ...): all nodata, masked or non-finite"
        )
    p2, p98 = [], []
    for b in range(len(names)):
        low, high = np.percentile(np.concatenate(pooled[b]), [2.0, 98.0])
        p2.append(float(low))
        p98.append(float(high))
    stats = BandStats(
        band_names=names,
        mean=tuple(float(m) for m in moments.mean),
        std=tuple(float(s) for s in np.sqrt(np.maximum(moments.m2, 0.0) / moments.n)),
        p2=tuple(p2),
        p98=tuple(p98),
        count=tuple(int(n) for n in moments.n),
        sources=stamps,
        params=params,
        reads=len(files),
    )
    if cache_path is not None:
        stats.save(cache_path)
    return stats


class _Moments:
    """Running count, mean and sum of squared deviations per band (Chan et al. 1979)."""

    def __init__(self, bands: int) -> None:
        self.n = np.zeros(bands, dtype=np.int64)
        self.mean = np.zeros(bands, dtype=np.float64)
        self.m2 = np.zeros(bands, dtype=np.float64)

    def add(self, band: int, values: np.ndarray) -> None:
        if values.size == 0:
            return
        x = values.astype(np.float64)
        n_b, mean_b = x.size, float(x.mean())
        m2_b = float(np.square(x - mean_b).sum())
        n_a = int(self.n[band])
        n = n_a + n_b
        delta = mean_b - self.mean[band]
        self.mean[band] += delta * n_b / n
        self.m2[band] += m2_b + delta * delta * n_a * n_b / n
        self.n[band] = n


def _sample_file(
    info: RasterInfo,
    indexes: tuple[int, ...],
    max_pixels: int,
    tile: int,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """Per band, the valid values (float32, 1D) of randomly ordered tiles of one file until
    ``max_pixels`` pixels were read, subsampled to at most ``max_pixels`` values."""
    tiles = [
        Window(col, row, min(tile, info.width - col), min(tile, info.height - row))
        for row in range(0, info.height, tile)
        for col in range(0, info.width, tile)
    ]
    values: list[list[np.ndarray]] = [[] for _ in indexes]
    read = 0
    for k in rng.permutation(len(tiles)):
        if read >= max_pixels:
            break
        window = tiles[int(k)]
        part = read_bands(info.path, window, indexes, band_names=info.band_names)
        for b in range(len(indexes)):
            values[b].append(part.values[b][part.valid[b]])
        read += int(window.width * window.height)
    out = []
    for per_band in values:
        flat = np.concatenate(per_band) if per_band else np.zeros(0, np.float32)
        if flat.size > max_pixels:
            flat = flat[np.sort(rng.choice(flat.size, max_pixels, replace=False))]
        out.append(flat)
    return out


def _check_same_bands(infos: Sequence[RasterInfo], bands: BandsLike) -> tuple[int, ...]:
    ref = infos[0]
    for info in infos[1:]:
        if info.count != ref.count:
            raise ValueError(
                f"{info.path} has {info.count} bands but {ref.path} has {ref.count}; band "
                "statistics need rasters with the same bands"
            )
        if info.band_names != ref.band_names:
            raise ValueError(
                f"{info.path} has bands {list(info.band_names)} but {ref.path} has "
                f"{list(ref.band_names)}; pass band_names= to name them alike"
            )
    return resolve_bands(ref, bands)


def _jsonable_bands(bands: BandsLike) -> Any:
    if bands is None:
        return None
    if isinstance(bands, str | int | np.integer):
        return bands if isinstance(bands, str) else int(bands)
    return [b if isinstance(b, str) else int(b) for b in bands]
