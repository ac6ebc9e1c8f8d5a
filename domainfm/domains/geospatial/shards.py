"""Prepared raster shards: chips cut once with their georeferencing, streamed as windows.

``domainfm prepare geospatial SRC OUT`` runs :class:`ChipPreparer` over the GeoTIFFs under
``SRC``. Rasters on the same grid (CRS, transform, size) are the dates of one place and are
prepared together: the place is cut into ``chip_size`` chips on a regular grid (the last
row/column ending on the raster's edge), each chip read through the validated reader
(:func:`~domainfm.domains.geospatial.read_raster`: nodata, NaN, masks, scale/offset) for
every date. A date where less than ``min_valid`` of the chip is valid is dropped from that
chip, and a chip with no date left (all nodata, clouds masked as nodata) is not written at
all. Each item holds ``chip`` ``(T, C, h, w)``, ``valid`` ``(T, h, w)``, the chip's own
``transform`` (6 affine coefficients), ``crs`` (WKT), ``dates`` (ISO, JSON list), ``bands``
(JSON list) and ``source``. Band statistics over the valid pixels go into the manifest and
normalize the streamed windows.

:class:`StreamingRasterDataModule` streams the chips and cuts random ``size`` windows:
``views=1`` one random date (MAE), ``views=2`` the same window at two different dates
(temporal positives, as :class:`~domainfm.domains.geospatial.RasterPretrainDataModule`).

Example::

    domainfm prepare geospatial scenes/ prepared/s2 --chip-size 64 \\
        --band-names B01 B02 B03 B04 B05 B06 B07 B08 B8A B09 B10 B11 B12
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
import torch

from domainfm.core.masking import MaskingSpec
from domainfm.core.normalize import floor_std, standardize
from domainfm.data.shards import source_key
from domainfm.data.streaming import SampleMaker, ShardDataModule
from domainfm.domains.geospatial.contract import RasterContract, standardization
from domainfm.domains.geospatial.datamodule import RASTER_MASKING, raster_masking_collate
from domainfm.domains.geospatial.raster_header import RasterInfo, raster_info
from domainfm.domains.geospatial.raster_reader import RasterReader
from domainfm.domains.geospatial.spectral_temporal import band_group_cube
from domainfm.domains.geospatial.temporal_index import acquisition_date, check_date_pattern
from domainfm.domains.geospatial.window_grid import window_starts
from domainfm.domains.geospatial.windows import same_place_groups

_RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2")


class ChipPreparer:
    """Chips of every place (all its dates) under a folder (see the module docstring).

    Args:
        chip_size: chip size in pixels.
        stride: step between chips (default ``chip_size``: no overlap).
        band_names: names of the files' bands (default: from the first raster); a raster
            with another band count is skipped.
        min_valid: least valid fraction of a chip at one date for that date to be kept.
        dtype: stored dtype of the chips (``"float32"`` or ``"float16"``).
        date_pattern: regex with named groups for dates in file names (default: tags,
            then common file-name forms; a raster without a date gets ``""``).
    """

    domain = "geospatial"

    def __init__(
        self,
        *,
        chip_size: int = 64,
        stride: int | None = None,
        band_names: Sequence[str] | None = None,
        min_valid: float = 0.5,
        dtype: Literal["float32", "float16"] = "float32",
        date_pattern: str | None = None,
    ) -> None:
        if chip_size < 1 or (stride is not None and stride < 1):
            raise ValueError(f"chip_size={chip_size} and stride={stride} must be >= 1")
        if not 0.0 <= min_valid <= 1.0:
            raise ValueError(f"min_valid must be in [0, 1], got {min_valid}")
        self.chip_size = chip_size
        self.stride = stride or chip_size
        self.band_names = list(band_names) if band_names is not None else None
        self.min_valid = min_valid
        self.dtype = dtype
        self.date_pattern = check_date_pattern(date_pattern)

    def settings(self) -> dict[str, Any]:
        return {
            "chip_size": self.chip_size,
            "stride": self.stride,
            "band_names": self.band_names,
            "min_valid": self.min_valid,
            "dtype": self.dtype,
        }

    def sources(self, src_dir: Path) -> list[tuple[Path, ...]]:
        """The places under ``src_dir``: rasters grouped by grid, dates in order. A raster
        whose header cannot be read is its own source (and fails there, named)."""
        files = sorted(
            p for p in src_dir.rglob("*") if p.is_file() and p.suffix.lower() in _RASTER_SUFFIXES
        )
        readable: list[RasterInfo] = []
        broken: list[tuple[Path, ...]] = []
        for path in files:
            try:
                readable.append(raster_info(path, band_names=self.band_names))
            except ValueError:
                broken.append((path,))
        if self.band_names is None and readable:  # the most common band list
            counts = Counter(tuple(info.band_names) for info in readable)
            common = max(counts.items(), key=lambda kv: (kv[1], kv[0]))[0]
            self.band_names = list(common)
        groups: list[tuple[Path, ...]] = [
            tuple(sorted((readable[i].path for i in group), key=self._date_key))
            for group in same_place_groups(readable)
        ]
        return sorted(groups + broken)

    def _date_key(self, path: Path) -> tuple[str, str]:
        return (self._date(path), path.name)

    def _date(self, path: Path) -> str:
        try:
            return acquisition_date(path, pattern=self.date_pattern).isoformat()
        except ValueError:
            return ""

    def items(self, paths: tuple[Path, ...]) -> Iterator[dict[str, Any]]:
        infos = [raster_info(p, band_names=self.band_names) for p in paths]
        names = self.band_names or list(infos[0].band_names)
        for info in infos:
            if info.count != len(names):
                raise ValueError(
                    f"{info.path}: {info.count} bands, but this dataset has {len(names)} "
                    f"({names}); prepare rasters of other bands into another folder"
                )
        dates = [self._date(p) for p in paths]
        size = self.chip_size
        grid = infos[0]
        key = source_key(paths, paths[0].parent)
        crs = grid.crs.to_wkt() if grid.crs is not None else ""
        reader = RasterReader(band_names=self.band_names, max_open=len(paths))
        for row in window_starts(grid.height, size, self.stride):
            for col in window_starts(grid.width, size, self.stride):
                chips, valids, kept = [], [], []
                for path, date in zip(paths, dates, strict=True):
                    raster = reader.read(
                        path, (row, col, size, size), boundless=True, require_valid=False
                    )
                    if raster.mask.mean() < self.min_valid or not raster.mask.any():
                        continue
                    chips.append(raster.array)
                    valids.append(raster.mask)
                    kept.append(date)
                if not chips:
                    continue  # all nodata at every date: not written
                transform = rasterio.windows.transform(
                    rasterio.windows.Window(col, row, size, size), grid.transform
                )
                yield {
                    "chip": np.stack(chips).astype(self.dtype),  # (T, C, h, w)
                    "valid": np.stack(valids).astype(np.uint8),  # (T, h, w)
                    "transform": np.asarray(tuple(transform)[:6], dtype=np.float64),
                    "crs": crs,
                    "dates": json.dumps(kept),
                    "bands": json.dumps(names),
                    "source": key,
                }
        reader.close()

    def channel_values(self, item: dict[str, Any]) -> np.ndarray:
        chip, valid = item["chip"], item["valid"].astype(bool)  # (T, C, h, w), (T, h, w)
        return np.moveaxis(chip, 1, 0)[:, valid]  # (C, valid pixels over all dates)


class ChipWindows:
    """Sample maker: a random ``size`` window of a streamed chip, normalized per band
    (invalid pixels 0), laid out as the file-based
    :class:`~domainfm.domains.geospatial.windows.RasterWindowDataset` does: one random date
    ``(C, s, s)`` (``views=1``); two different dates (``views=2``: ``"view1"``/``"view2"``);
    ``time_steps`` dates in date order ``(C, T, s, s)``; with ``band_groups`` SatMAE's
    band-group cube. A chip with fewer dates than needed is skipped (and counted).

    Args:
        size: window size (``<= chip_size``).
        mean, std: per-band normalization ``(C,)``.
        views: 1 or 2.
        time_steps: dates per sample (``views=1`` only).
        band_names: the chips' bands (needed with ``band_groups``).
        band_groups: band names per group (the cube layout).
    """

    def __init__(
        self,
        *,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        views: int = 1,
        time_steps: int = 1,
        band_names: Sequence[str] | None = None,
        band_groups: Sequence[Sequence[str]] | None = None,
    ) -> None:
        if views not in (1, 2):
            raise ValueError(f"views must be 1 or 2, got {views}")
        if time_steps < 1 or (time_steps > 1 and views != 1):
            raise ValueError(f"time_steps={time_steps} must be >= 1, and > 1 only with views=1")
        if band_groups is not None and band_names is None:
            raise ValueError("band_groups needs band_names")
        self.size = size
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = floor_std(torch.tensor(std, dtype=torch.float32))[:, None, None]
        self.views = views
        self.time_steps = time_steps
        self.band_names = list(band_names) if band_names is not None else None
        self.band_groups = [list(g) for g in band_groups] if band_groups is not None else None

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        """``(C, h, w)`` or ``(T, C, h, w)`` → the sample layout."""
        if self.band_groups is not None:
            assert self.band_names is not None
            return band_group_cube(x, self.band_names, self.band_groups)
        return x.transpose(0, 1) if x.ndim == 4 else x  # (C, T, h, w) for a series

    def __call__(self, item: dict[str, Any], generator: torch.Generator) -> dict[str, Any]:
        chip = torch.as_tensor(item["chip"]).float()  # (T, C, h, w)
        valid = torch.as_tensor(item["valid"]).bool()  # (T, h, w)
        t, _, h, w = chip.shape
        if h < self.size or w < self.size:
            raise ValueError(f"chip {h}x{w} is smaller than the window size {self.size}")
        needed = max(self.views, self.time_steps)
        if t < needed:
            raise ValueError(f"the chip has {t} date(s); {needed} are needed per sample")
        row = int(torch.randint(0, h - self.size + 1, (), generator=generator))
        col = int(torch.randint(0, w - self.size + 1, (), generator=generator))
        dates = torch.randperm(t, generator=generator)[:needed].tolist()
        window = (slice(row, row + self.size), slice(col, col + self.size))

        def view(k: int) -> tuple[torch.Tensor, torch.Tensor]:
            ok = valid[k][window]  # (s, s)
            x = standardize(chip[k][(slice(None), *window)], self.mean, self.std)  # (C, s, s)
            return x.masked_fill(~ok[None], 0.0), ok[None]

        if self.time_steps > 1:
            series = [view(k) for k in sorted(dates)]  # chips hold dates in order
            x = torch.stack([v[0] for v in series])  # (T, C, s, s)
            ok = torch.stack([v[1] for v in series]).all(dim=0)  # (1, s, s)
            return {"input": self._layout(x), "valid": ok}
        x, ok = view(dates[0])
        sample: dict[str, Any] = {"input": self._layout(x), "valid": ok}
        if self.views == 2:
            x2, ok2 = view(dates[1])
            sample.update(view1=sample["input"], view2=self._layout(x2), valid=ok & ok2)
        return sample


class StreamingRasterDataModule(ShardDataModule):
    """Windows streamed from ``domainfm prepare geospatial`` shards, masked for MAE in the
    workers (the streaming counterpart of
    :class:`~domainfm.domains.geospatial.RasterPretrainDataModule`).

    Args:
        size: window size in pixels (``<=`` the prepared ``chip_size``).
        views: 1 (single windows) or 2 (same window at two dates).
        time_steps: dates per sample (a series ``(C, T, h, w)``, ``views=1``).
        band_groups: band names per group: SatMAE's band-group cube.
        masking: the MAE masks: the backbone's patch size, the ratio, ``"random"``,
            ``"block"`` (single dates) or ``"tube"`` (series, cubes).
        **kwargs: ``shards``, ``val_shards``, ``cache_dir``, ``max_cache_size``,
            ``manifest``, ``batch_size`` (chips per batch), ``num_workers``, ``seed``: see
            :class:`~domainfm.data.streaming.ShardDataModule`.
    """

    domain = "geospatial"

    def __init__(
        self,
        *,
        size: int = 32,
        views: int = 1,
        time_steps: int = 1,
        band_groups: Sequence[Sequence[str]] | None = None,
        masking: MaskingSpec = RASTER_MASKING,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.size = size
        self.views = views
        self.time_steps = time_steps
        self.band_groups = [list(g) for g in band_groups] if band_groups is not None else None
        self.collate = raster_masking_collate(
            masking=masking, time_steps=time_steps, band_groups=band_groups
        )

    def _stats(self, manifest: dict[str, Any]) -> tuple[list[float], list[float]]:
        stats = manifest.get("stats") or {}
        if "mean" not in stats:
            raise ValueError(f"{self.shards}: the manifest has no band statistics")
        return list(stats["mean"]), list(stats["std"])

    def sample_maker(self, manifest: dict[str, Any]) -> SampleMaker:
        chip = int(manifest["settings"]["chip_size"])
        if self.size > chip:
            raise ValueError(f"size={self.size} is larger than the prepared chip_size={chip}")
        mean, std = self._stats(manifest)
        return ChipWindows(
            size=self.size,
            mean=mean,
            std=std,
            views=self.views,
            time_steps=self.time_steps,
            band_names=manifest["settings"]["band_names"],
            band_groups=self.band_groups,
        )

    def input_contract(self) -> RasterContract:
        mean, std = self._stats(self.manifest)
        return RasterContract(
            bands=self.manifest["settings"]["band_names"],
            normalization=standardization(mean, std),
            window=self.size,
            extra={
                "time_steps": self.time_steps,
                "band_groups": self.band_groups,
                **self.prepared_contract(),
            },
        )
