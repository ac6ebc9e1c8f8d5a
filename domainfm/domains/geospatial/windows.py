"""Random or grid windows from multiband rasters (and temporal pairs of the same place) for
self-supervised pretraining.

Every item is a windowed read (never the whole raster) in the worker that asks for it,
through a :class:`~domainfm.domains.geospatial.raster_reader.RasterReader`: each worker
process opens its own handles and keeps them open (GDAL handles are not fork-safe; none is
pickled or inherited), so headers and decompressed blocks are reused across windows.

* ``sampling="random"``: a window is drawn by the sample's seed: a place (a raster, or a
  group of dates on one grid) chosen with probability proportional to its area, then a
  uniform position; windows with fewer than ``min_valid`` valid pixels (nodata, outside the
  footprint) are redrawn up to ``max_tries`` times and counted in
  :attr:`RasterWindowDataset.redrawn` (per worker). ``samples_per_epoch`` sets the length.
* ``sampling="grid"``: every window of a regular grid (``stride``, default no overlap) over
  every raster that has at least ``min_valid`` valid pixels
  (:func:`~domainfm.domains.geospatial.window_grid.valid_grid_windows`; all-nodata windows
  are never listed); the dataset's length is their number. With ``views=2`` a grid window of
  a place is listed when at least two of its dates are valid there, and the two dates of a
  sample are drawn among those by the sample's seed.

Either way the sample's seed (:class:`~domainfm.data.sampling.SeededSampler`, which also
splits the epoch across DDP ranks) fixes every random choice, so a run resumes exactly.

Bands are normalized with per-band statistics
(:class:`~domainfm.domains.geospatial.stats.BandStats`): ``(x - mean) / std``; invalid pixels
become 0 after normalization.

**Temporal positives** (``views=2``): rasters on the same grid (same CRS, transform and size)
are acquisitions of the same place; a sample is the same window in two different dates of one
such group: ``"view1"``, ``"view2"`` (SeCo / geography-aware SSL style positives).

**Places and dates.** ``places="grid"``: rasters on one grid are the dates of one place, in
the order of ``files`` (date-named files sorted by name are chronological).
``places="footprint"``: a :class:`~domainfm.domains.geospatial.temporal_index.
SpatioTemporalIndex` groups rasters whose lon/lat footprints overlap (IoU >= 0.9) and orders
them by acquisition date (GeoTIFF tags or file names); when the dates of a place lie on
different grids (another CRS, resolution or origin) their windows are reprojected onto the
earliest date's grid (``reproject=True``, through
:func:`~domainfm.domains.geospatial.raster_align.open_aligned`; without it that is an error
naming the files). Windows are positioned on the earliest date's grid.

**Time series** (``time_steps=T``): a sample is the same window in ``T`` different dates of a
place, drawn by the seed and kept in chronological order. ``"valid"`` is the pixels valid in
every date.

**Land cover** (``landcover``): every sample also carries the window's land-cover class
fractions (:class:`~domainfm.domains.geospatial.landcover_targets.LandCoverFractions`, counted
on the land-cover raster's grid inside the window's footprint on the place's reference grid),
one vector per view: ``"landcover"``, or ``"landcover1"``/``"landcover2"`` with ``views=2``
(the same window, so the same vector), SoftCon's multi-label targets.

**Band groups** (``band_groups``): the window (or series) is laid out as SatMAE's
spectral-temporal cube ``(C_g, T·G, h, w)``
(:func:`~domainfm.domains.geospatial.spectral_temporal.band_group_cube`) for
:class:`~domainfm.domains.geospatial.spectral_temporal.SpectralTemporalViT`.

Shapes::

    "input"   (C, h, w)   normalized bands of the window (the first date for views=2)
    "valid"   (1, h, w)   True where every band is valid
    "view1", "view2"      (C, h, w) the window in two dates (views=2)
    "input"   (C, T, h, w)         time_steps=T > 1 (axes t, h, w)
    "input"   (C_g, T·G, h, w)     with band_groups (T = 1 included)
    "landcover" (K,)  class fractions of the window ("landcover1"/"landcover2" for views=2)

Example::

    >>> ds = RasterWindowDataset(files=sorted(Path("s2").glob("*.tif")), size=32,
    ...                          band_names=SENTINEL2_L1C_BANDS, stats=stats, views=2)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import rasterio.windows
import torch
from torch import Tensor
from torch.utils.data import Dataset

from domainfm.core.grid import to_ntuple
from domainfm.core.normalize import standardize
from domainfm.domains.geospatial.geo_clusters import geo_cluster_labels
from domainfm.domains.geospatial.landcover_targets import LandCoverFractions
from domainfm.domains.geospatial.raster_align import AlignedRasters, open_aligned
from domainfm.domains.geospatial.raster_header import Grid, RasterInfo, raster_info, resolve_bands
from domainfm.domains.geospatial.raster_reader import RasterReader
from domainfm.domains.geospatial.spectral_temporal import band_group_cube
from domainfm.domains.geospatial.stats import BandStats
from domainfm.domains.geospatial.temporal_index import SpatioTemporalIndex, footprint_lonlat
from domainfm.domains.geospatial.window_grid import valid_grid_windows


def same_place_groups(infos: Sequence[RasterInfo]) -> list[list[int]]:
    """Indices of rasters grouped by identical grid (CRS, transform, width, height): the
    acquisitions of one place."""
    groups: dict[tuple[object, ...], list[int]] = {}
    for i, info in enumerate(infos):
        key = (str(info.crs), tuple(info.transform)[:6], info.width, info.height)
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def band_moments(stats: BandStats, names: Sequence[str]) -> tuple[Tensor, Tensor]:
    """Mean and floored std ``(C,)`` float32 of the bands ``names``: the moments of
    :meth:`BandStats.contract` (``ValueError`` naming missing bands)."""
    mean, std = stats.contract(names).moments()
    return torch.from_numpy(mean), torch.from_numpy(std)


class RasterWindowDataset(Dataset[dict[str, Tensor]]):
    """Random normalized windows (or same-place temporal pairs) from rasters.

    Args:
        files: GeoTIFF/COG paths (one band list shared by all).
        size: window size in pixels (int or ``(h, w)``).
        bands: bands to read: 1-based indices or names (default: all).
        band_names: names of the files' bands (e.g. ``SENTINEL2_L1C_BANDS``).
        stats: per-band statistics for normalization (``None``: raw values).
        samples_per_epoch: dataset length (``sampling="random"``).
        views: 1 for single windows; 2 for temporal pairs (needs a group of >= 2 rasters on
            the same grid).
        min_valid: least fraction of valid pixels in a window.
        max_tries: redraws of a window below ``min_valid`` before failing with the file name.
        sampling: ``"random"`` windows or every ``"grid"`` window.
        stride: step of the grid (``sampling="grid"``; default: the window size).
        time_steps: dates per sample (a time series; needs places with that many dates).
        band_groups: band names per group: lay samples out as the band-group cube.
        places: how dates of one place are found: same ``"grid"``, or overlapping
            ``"footprint"`` ordered by acquisition date.
        reproject: with ``places="footprint"``, reproject dates on other grids onto the
            place's earliest date.
        date_pattern: regex with named groups for dates in file names (``places="footprint"``).
        geo_clusters: ``K``: add ``"geo_label"``, the k-means cluster of the sample's place
            (:func:`~domainfm.domains.geospatial.geo_clusters.geo_cluster_labels`).
        landcover: add each view's land-cover class fractions (see the module docstring).
    """

    def __init__(
        self,
        *,
        files: Sequence[str | Path],
        size: int | Sequence[int] = 32,
        bands: Sequence[int] | Sequence[str] | None = None,
        band_names: Sequence[str] | None = None,
        stats: BandStats | None = None,
        samples_per_epoch: int = 256,
        views: int = 1,
        min_valid: float = 0.5,
        max_tries: int = 20,
        sampling: Literal["random", "grid"] = "random",
        stride: int | Sequence[int] | None = None,
        time_steps: int = 1,
        band_groups: Sequence[Sequence[str]] | None = None,
        places: Literal["grid", "footprint"] = "grid",
        reproject: bool = False,
        date_pattern: str | None = None,
        geo_clusters: int | None = None,
        landcover: LandCoverFractions | None = None,
    ) -> None:
        if places not in ("grid", "footprint"):
            raise ValueError(f"places={places!r}: must be 'grid' or 'footprint'")
        if time_steps < 1 or (time_steps > 1 and views != 1):
            raise ValueError(f"time_steps={time_steps} must be >= 1, and > 1 only with views=1")
        if sampling not in ("random", "grid"):
            raise ValueError(f"sampling={sampling!r}: must be 'random' or 'grid'")
        if not files:
            raise ValueError("files is empty: pass at least one raster")
        if views not in (1, 2):
            raise ValueError(f"views must be 1 or 2, got views={views}")
        if not 0.0 <= min_valid <= 1.0:
            raise ValueError(f"min_valid must be in [0, 1], got min_valid={min_valid}")
        self.files = [Path(f) for f in files]
        self.size = to_ntuple(size, 2, name="size")
        self.band_names = tuple(band_names) if band_names is not None else None
        self.infos = [raster_info(f, band_names=self.band_names) for f in self.files]
        small = [
            f"{i.path} ({i.height}x{i.width})"
            for i in self.infos
            if i.height < self.size[0] or i.width < self.size[1]
        ]
        if small:
            raise ValueError(f"rasters smaller than the window {self.size}: {', '.join(small)}")
        self.bands = bands
        self.stats = stats
        self._moments: dict[tuple[str, ...], tuple[Tensor, Tensor]] = {}
        self.reader = RasterReader(band_names=self.band_names)
        self.samples_per_epoch = samples_per_epoch
        self.views = views
        self.time_steps = time_steps
        self.dates = max(views, time_steps)  # dates read per sample
        self.min_valid = min_valid
        self.max_tries = max_tries
        info = self.infos[0]
        self.selected_bands = tuple(info.band_names[i - 1] for i in resolve_bands(info, bands))
        self.band_groups = [list(g) for g in band_groups] if band_groups is not None else None
        self.aligned: dict[int, tuple[AlignedRasters, int]] = {}  # file -> (its place's stack, k)
        if places == "grid":
            self.groups = same_place_groups(self.infos)
        else:
            index = SpatioTemporalIndex(
                self.files, date_pattern=date_pattern, band_names=self.band_names
            )
            self.groups = index.places
            for group in self.groups:
                if index.same_grid(group):
                    continue
                if not reproject:
                    a, b = (
                        self.files[group[0]],
                        next(self.files[i] for i in group if not index.same_grid([group[0], i])),
                    )
                    raise ValueError(
                        f"{a} and {b} show the same place on different grids; pass "
                        "reproject=True to read them on one grid"
                    )
                stack = open_aligned(
                    [self.files[i] for i in group], reproject=True, band_names=self.band_names
                )
                self.aligned.update({i: (stack, k) for k, i in enumerate(group)})
        self.rank = {i: k for group in self.groups for k, i in enumerate(group)}  # date order
        self.landcover = landcover
        self.geo_labels: dict[int, int] = {}  # file -> cluster of its place
        if geo_clusters is not None:
            footprints = [footprint_lonlat(self.infos[g[0]]) for g in self.groups]
            labels = geo_cluster_labels(footprints, num_clusters=geo_clusters)
            self.geo_labels = {i: k for g, k in zip(self.groups, labels, strict=True) for i in g}
        if self.dates > 1:
            self.groups = [g for g in self.groups if len(g) >= self.dates]
            if not self.groups:
                what = "views=2" if views == 2 else f"time_steps={time_steps}"
                raise ValueError(
                    f"{what} needs at least {self.dates} rasters on the same grid (dates of one "
                    f"place); none among {len(self.files)} files"
                )
        area = torch.tensor(
            [float(self.infos[g[0]].width * self.infos[g[0]].height) for g in self.groups]
        )
        self.group_weights = area / area.sum()
        self.redrawn = 0
        self.sampling = sampling
        self.grid: list[tuple[int, int, int, tuple[int, ...]]] = []
        if sampling == "grid":
            self.grid = self._grid(stride)
            if not self.grid:
                raise ValueError(
                    f"no grid window of {self.size} with >= {min_valid:.0%} valid pixels in "
                    f"{len(self.files)} rasters ({self.files[0]}, ...); lower min_valid or "
                    "check nodata"
                )

    def _grid(
        self, stride: int | Sequence[int] | None
    ) -> list[tuple[int, int, int, tuple[int, ...]]]:
        """``(group, row, col, files valid there)`` of every listed grid window. A place read
        through a reprojection is gridded on its reference date only (its other dates count
        as valid wherever the reference is)."""
        out: list[tuple[int, int, int, tuple[int, ...]]] = []
        for g, group in enumerate(self.groups):
            valid: dict[tuple[int, int], list[int]] = {}
            reprojected = group[0] in self.aligned
            for index in group[:1] if reprojected else group:
                for position in valid_grid_windows(
                    self.files[index],
                    size=self.size,
                    stride=stride,
                    bands=self.bands,
                    band_names=self.band_names,
                    min_valid=self.min_valid,
                ):
                    valid.setdefault(position, []).extend(group if reprojected else [index])
            for (row, col), files in sorted(valid.items()):
                if self.dates == 1:  # every date is a sample of its own
                    out += [(g, row, col, (index,)) for index in files]
                elif len(files) >= self.dates:
                    out.append((g, row, col, tuple(files)))
        return out

    def __len__(self) -> int:
        return len(self.grid) if self.sampling == "grid" else self.samples_per_epoch

    def _normalize(self, array: np.ndarray, mask: np.ndarray, names: Sequence[str]) -> Tensor:
        x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))  # (C, h, w)
        if self.stats is not None:
            key = tuple(names)
            if key not in self._moments:
                self._moments[key] = band_moments(self.stats, key)
            mean, std = self._moments[key]  # (C,), (C,)
            x = standardize(x, mean[:, None, None], std[:, None, None])
        return x.masked_fill(~torch.from_numpy(mask)[None], 0.0)

    def _read(self, index: int, window: tuple[int, int, int, int]) -> tuple[Tensor, Tensor]:
        """The window ``(row, col, h, w)`` (on the place's reference grid) of file ``index``."""
        if index in self.aligned:
            stack, k = self.aligned[index]
            row, col, h, w = window
            bounds = rasterio.windows.bounds(
                rasterio.windows.Window(col, row, w, h), stack.grids[0].transform
            )
            raster = stack.read(
                k, stack.window_for(k, bounds), self.bands, boundless=True, require_valid=False
            )
            if raster.array.shape[1:] != (h, w):
                raise ValueError(
                    f"{self.files[index]}: the reprojected window is {raster.array.shape[1:]}, "
                    f"not {(h, w)}"
                )
        else:
            raster = self.reader.read(self.files[index], window, self.bands, require_valid=False)
        x = self._normalize(raster.array, raster.mask, raster.band_names)
        return x, torch.from_numpy(raster.mask)[None]

    def _sample(
        self,
        position: tuple[int, int],
        files: list[int],
        seed: int | None,
        first: tuple[Tensor, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """The window at ``position`` of ``files[0]`` (and ``files[1]`` for ``views=2``);
        ``first``: the first file's window when already read."""
        window = (position[0], position[1], self.size[0], self.size[1])
        x, valid = first if first is not None else self._read(files[0], window)
        if self.time_steps > 1:
            reads = {files[0]: (x, valid)}
            for index in files[1 : self.time_steps]:
                reads[index] = self._read(index, window)
            series = [reads[i] for i in sorted(reads, key=self.rank.__getitem__)]  # by date
            x = torch.stack([r[0] for r in series])  # (T, C, h, w)
            valid = torch.stack([r[1] for r in series]).all(dim=0)  # (1, h, w)
        sample = {"input": self._layout(x), "valid": valid}
        if self.views == 2:
            x2, valid2 = self._read(files[1], window)
            sample["view1"], sample["view2"] = sample["input"], self._layout(x2)
            sample["valid"] = valid & valid2
        if self.landcover is not None:
            cover = self.landcover.fractions(self._reference_grid(files[0]), window)
            keys = ("landcover1", "landcover2") if self.views == 2 else ("landcover",)
            sample.update(dict.fromkeys(keys, cover))
        if self.geo_labels:
            sample["geo_label"] = torch.tensor(self.geo_labels[files[0]])
        if seed is not None:
            sample["seed"] = torch.tensor(seed)
        return sample

    def _reference_grid(self, index: int) -> Grid:
        """The grid windows of file ``index`` are positioned on (its place's earliest date's
        when read through a reprojection, else its own)."""
        return self.aligned[index][0].grids[0] if index in self.aligned else self.infos[index].grid

    def _layout(self, x: Tensor) -> Tensor:
        """``(C, h, w)`` or ``(T, C, h, w)`` → the sample layout (see the module docstring)."""
        if self.band_groups is not None:
            return band_group_cube(x, self.selected_bands, self.band_groups)
        return x.transpose(0, 1) if x.ndim == 4 else x  # (C, T, h, w) for a series

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Tensor]:
        """A window ``{"input", "valid"}`` (+ ``"view1"``/``"view2"``); ``key`` is an index or
        ``(index, seed)`` from :class:`~domainfm.data.sampling.SeededSampler`."""
        index, seed = key if isinstance(key, tuple) else (key, None)
        generator = torch.Generator().manual_seed(seed if seed is not None else index)
        if self.sampling == "grid":
            _, row, col, files = self.grid[index]
            order = torch.randperm(len(files), generator=generator).tolist()
            return self._sample((row, col), [files[i] for i in order], seed)
        h, w = self.size
        for _ in range(self.max_tries):
            group = self.groups[int(torch.multinomial(self.group_weights, 1, generator=generator))]
            info = self.infos[group[0]]
            row = int(torch.randint(0, info.height - h + 1, (), generator=generator))
            col = int(torch.randint(0, info.width - w + 1, (), generator=generator))
            order = torch.randperm(len(group), generator=generator).tolist()
            first = group[order[0]]
            x, valid = self._read(first, (row, col, h, w))
            if float(valid.float().mean()) < self.min_valid:
                self.redrawn += 1
                continue
            return self._sample((row, col), [group[i] for i in order], seed, (x, valid))
        raise ValueError(
            f"no window of {self.size} with >= {self.min_valid:.0%} valid pixels found in "
            f"{self.max_tries} tries (last: {self.files[first]}); lower min_valid or check nodata"
        )
