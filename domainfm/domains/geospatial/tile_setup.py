"""The checked setup of a tiled pass over a raster, shared by tiled segmentation
(:func:`~domainfm.domains.geospatial.tiled_inference.predict_raster`) and detection
(:func:`~domainfm.domains.geospatial.tiled_detection.detect_raster`).

* **Arguments** (:meth:`TileSetup.check`): tile side, overlap, batch size and GDAL cache are
  checked (``ValueError`` naming the argument), the input's header is read and its bands
  selected, and the model's declared input channels compared with them (naming the file).
* **Tiles**: squares of ``tile`` pixels with stride ``int(tile * (1 - overlap))`` (at least
  1), the last row/column shifted back onto the raster's edge
  (:class:`~domainfm.domains.geospatial.window_grid.WindowStarts`). The tile plan is never
  listed: the starts are computed on demand and :meth:`TileSetup.positions` generates the
  positions row-major, so a 200000² raster costs no more than a small one before the first
  tile. Batches of consecutive positions are drawn from that iterator and read one window
  at a time, ``boundless`` (a raster smaller than a tile is padded with invalid pixels).
* **Size guard**: a batch of tiles (``batch_size × C × tile × tile`` float32) is estimated
  in :meth:`TileSetup.check` and refused above the limit of
  :func:`~domainfm.core.size_guard.check_allocation`, naming the file, before any read.
* **Normalization** as in training: the selected bands' ``"standardize"``
  :class:`~domainfm.domains.geospatial.contract.RasterContract`, built from ``mean``/``std``
  (one value per selected band) or from :class:`~domainfm.domains.geospatial.stats.
  BandStats` (by band name); :meth:`~domainfm.domains.geospatial.contract.RasterContract.
  moments` gives ``(x - mean) / std`` with the library's std floor. Every invalid pixel is
  then set to 0.
* **Session** (:meth:`TileSetup.session`): an ``nn.Module`` model in eval mode (its mode
  restored after) and GDAL's block cache bounded to ``gdal_cache_mb`` for the pass.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.windows import Window
from torch import Tensor, nn

from domainfm.core.size_guard import check_allocation
from domainfm.domains.geospatial.contract import RasterContract, standardization
from domainfm.domains.geospatial.raster_header import (
    BandsLike,
    RasterInfo,
    raster_info,
    resolve_bands,
)
from domainfm.domains.geospatial.raster_read import read_dataset_window
from domainfm.domains.geospatial.stats import BandStats
from domainfm.domains.geospatial.window_grid import WindowStarts

Moments = Sequence[float] | Tensor | np.ndarray
"""Per-band ``mean`` or ``std`` as given to tiled prediction."""
Position = tuple[int, int]
"""A tile's top-left ``(row, col)`` in raster pixels."""


@dataclass(frozen=True, eq=False)
class TileSetup:
    """Checked arguments of a tiled pass over a raster: the input, its selected bands and
    their normalization (``(x - shift) / scale``, ``(C, 1, 1)`` float32), the tiling."""

    source: Path
    info: RasterInfo
    indexes: tuple[int, ...]
    names: tuple[str, ...]
    shift: np.ndarray
    scale: np.ndarray
    tile: int
    stride: int
    batch_size: int
    gdal_cache_mb: int
    device: torch.device

    @classmethod
    def check(
        cls,
        model: Any,
        src: str | Path,
        dst: str | Path,
        *,
        tile: int,
        overlap: float,
        batch_size: int,
        gdal_cache_mb: int,
        bands: BandsLike,
        band_names: Sequence[str] | None,
        mean: Moments | None,
        std: Moments | None,
        stats: BandStats | None,
        device: str | torch.device | None,
    ) -> TileSetup:
        """Validate the arguments (``ValueError`` naming the argument or the file;
        :class:`~domainfm.core.size_guard.AllocationTooLarge` when a batch of tiles would
        exceed the per-allocation limit)."""
        if isinstance(tile, bool) or not isinstance(tile, int | np.integer) or tile < 1:
            raise ValueError(f"tile={tile!r}: must be an integer >= 1")
        if isinstance(overlap, bool) or not 0.0 <= float(overlap) < 1.0:
            raise ValueError(f"overlap={overlap!r}: must be in [0, 1)")
        for label, value in (("batch_size", batch_size), ("gdal_cache_mb", gdal_cache_mb)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{label}={value!r}: must be an integer >= 1")
        source = Path(src)
        info = raster_info(source, band_names=band_names)  # FileNotFoundError / ValueError
        target = Path(dst)
        if target.exists() and target.resolve() == source.resolve():
            raise ValueError(f"dst={str(dst)!r} is the input raster {source}; write elsewhere")
        indexes = resolve_bands(info, bands)
        names = tuple(info.band_names[i - 1] for i in indexes)
        shift, scale = (
            v[:, None, None] for v in _contract(source, names, mean, std, stats).moments()
        )
        expected = _model_channels(model)
        if expected is not None and expected != len(indexes):
            raise ValueError(
                f"the model takes {expected} input bands but {len(indexes)} bands "
                f"{list(names)} of {source} were selected; pass bands= to pick {expected} of "
                f"its {info.count} bands {list(info.band_names)}"
            )
        check_allocation(
            float(batch_size) * len(indexes) * float(tile) ** 2 * 4,
            what=f"a batch of {batch_size} tiles ({batch_size} x {len(indexes)} x {tile} x "
            f"{tile} float32)",
            source=source,
        )
        if device is None:
            params = getattr(model, "parameters", None)
            first = next(iter(params()), None) if callable(params) else None
            device = first.device if first is not None else torch.device("cpu")
        return cls(
            source=source,
            info=info,
            indexes=indexes,
            names=names,
            shift=shift,
            scale=scale,
            tile=int(tile),
            stride=max(1, int(int(tile) * (1.0 - float(overlap)))),
            batch_size=batch_size,
            gdal_cache_mb=gdal_cache_mb,
            device=torch.device(device),
        )

    def tile_starts(self) -> tuple[WindowStarts, WindowStarts]:
        """The first rows and first columns of the tiles (see the module docstring), as lazy
        sequences (``O(1)`` memory)."""
        return (
            WindowStarts(self.info.height, self.tile, self.stride),
            WindowStarts(self.info.width, self.tile, self.stride),
        )

    def positions(self) -> Iterator[Position]:
        """Every tile's ``(row, col)``, row-major (rows of tiles in order), generated one at a
        time: nothing of the number of tiles is held."""
        rows, cols = self.tile_starts()
        for row in rows:
            for col in cols:
                yield (row, col)

    @contextmanager
    def session(self, model: Any) -> Iterator[None]:
        """``model`` in eval mode when it is an ``nn.Module`` (``model.train(previous)``
        after) and GDAL's block cache bounded to :attr:`gdal_cache_mb` MiB."""
        was_training = isinstance(model, nn.Module) and model.training
        if isinstance(model, nn.Module):
            model.eval()
        try:
            with rasterio.Env(GDAL_CACHEMAX=self.gdal_cache_mb * 2**20):
                yield
        finally:
            if isinstance(model, nn.Module):
                model.train(was_training)

    def batches(
        self, ds: Any, positions: Iterable[Position]
    ) -> Iterator[tuple[list[Position], Tensor, list[np.ndarray]]]:
        """Consecutive batches of at most :attr:`batch_size` tile ``positions`` (any
        iterable, e.g. :meth:`positions`; drawn one batch at a time) of the open raster
        ``ds``, in order, each with its tiles (:meth:`read`)."""
        remaining = iter(positions)
        while batch := list(itertools.islice(remaining, self.batch_size)):
            yield (batch, *self.read(ds, batch))

    def read(self, ds: Any, positions: Sequence[Position]) -> tuple[Tensor, list[np.ndarray]]:
        """Normalized ``tile × tile`` windows at ``(row, col)`` ``positions`` of the open
        raster ``ds``: ``(B, C, t, t)`` float32 (``(x - shift) / scale``, invalid pixels 0,
        read ``boundless`` past the edges) and each window's validity mask ``(t, t)``."""
        arrays, masks = [], []
        for row, col in positions:
            window = Window(col, row, self.tile, self.tile)
            part = read_dataset_window(
                self.source, ds, self.info, window, self.indexes, self.names, True, None
            )
            mask = np.all(part.valid, axis=0)  # (t, t)
            x = (part.values - self.shift) / self.scale  # (C, t, t) as in training
            x[:, ~mask] = 0.0
            arrays.append(x.astype(np.float32, copy=False))
            masks.append(mask)
        return torch.from_numpy(np.stack(arrays)), masks


def _contract(
    source: Path,
    names: tuple[str, ...],
    mean: Moments | None,
    std: Moments | None,
    stats: BandStats | None,
) -> RasterContract:
    """The selected bands' ``"standardize"`` contract: from ``stats`` (by band name) or
    ``mean``/``std`` (one value per band); no normalization when neither is given."""
    if stats is not None:
        if mean is not None or std is not None:
            raise ValueError("pass either stats= or mean=/std=, not both")
        try:
            return stats.contract(names)
        except ValueError as err:
            raise ValueError(
                f"stats do not fit the bands {list(names)} of {source}: {err}"
            ) from err
    if (mean is None) != (std is None):
        raise ValueError(f"pass both mean= and std= (one value per band of {source}), or neither")
    if mean is None or std is None:
        return RasterContract(bands=list(names))
    m, s = (_per_band(label, v, source, names) for label, v in (("mean", mean), ("std", std)))
    if np.any(s < 0):
        raise ValueError(f"std={s.tolist()} must be >= 0")
    return RasterContract(bands=list(names), normalization=standardization(m.tolist(), s.tolist()))


def _per_band(label: str, values: Moments, source: Path, names: tuple[str, ...]) -> np.ndarray:
    """``values`` as a finite float32 ``(C,)`` array, one per selected band."""
    array = np.asarray(
        values.detach().cpu() if isinstance(values, Tensor) else values, dtype=np.float32
    ).reshape(-1)
    if array.size != len(names):
        raise ValueError(
            f"{label} has {array.size} values but {len(names)} bands {list(names)} of {source} "
            "are fed to the model; give one value per selected band (or select the bands "
            "the statistics are for with bands=)"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{label}={array.tolist()} must be finite")
    return array


def _model_channels(model: Any) -> int | None:
    """The input channels the model declares (``in_chans`` / ``in_channels`` of the model,
    its ``backbone`` or, for an ``nn.Sequential``, its first layer); ``None``: unknown."""
    candidates = [model, getattr(model, "backbone", None)]
    if isinstance(model, nn.Sequential) and len(model) > 0:
        candidates.append(model[0])
    for obj in candidates:
        for attr in ("in_chans", "in_channels"):
            value = getattr(obj, attr, None)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    return None
