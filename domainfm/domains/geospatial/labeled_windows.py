"""Labeled windows of multiband rasters for segmentation and scene-classification fine-tuning.

Images (one or several dates of the same place) and a label raster on the **same grid**
(checked: CRS, transform and size, else a ``ValueError`` naming both files). Label values
are remapped to class ids with ``label_map`` (unlisted values → ``ignore_value`` class 0).
Training windows are drawn at random (seeded) inside a row range of the raster, validation
windows on a regular grid in another, so that a single scene splits into disjoint regions.

With ``label_type="scene"`` a window's label is one class: the most frequent class id
among its labeled pixels (class ids >= 1; ties go to the smaller id; 0 when no pixel is
labeled) — scene classification from a land-cover map (as EuroSAT/BigEarthNet-style
patches are labeled by their dominant cover).

With ``label_type="boxes"`` a window's targets are detection boxes: every connected region
(8-connected) of each class in ``object_classes`` inside the window with at least
``min_object_pixels`` pixels gives a pixel box (edges, ``xyxy``) and its class id
(:func:`~domainfm.domains.geospatial.boxes.mask_boxes`) — e.g. built-up or shrubland
patches of a land-cover map as objects; regions cut by the window edge give their visible
part.

Shapes::

    ds[i]   {"input": (C, h, w) normalized bands, "label": (1, h, w) int64}   # "mask"
    ds[i]   {"input": (C, h, w) normalized bands, "label": () int64}          # "scene"
    ds[i]   {"input": (C, h, w), "boxes": (N, 4) float32, "labels": (N,) int64}  # "boxes"

Example::

    >>> ds = LabeledRasterDataset(images=dates, label="LULC.tif", size=32,
    ...                           band_names=SENTINEL2_L1C_BANDS, stats=stats,
    ...                           label_map={1: 1, 2: 2, 3: 3, 4: 4, 8: 5}, rows=(0, 60))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from domainfm.core.grid import to_ntuple
from domainfm.core.normalize import standardize
from domainfm.domains.geospatial.boxes import mask_boxes
from domainfm.domains.geospatial.raster_align import check_same_grid
from domainfm.domains.geospatial.raster_header import raster_info
from domainfm.domains.geospatial.raster_reader import RasterReader
from domainfm.domains.geospatial.stats import BandStats
from domainfm.domains.geospatial.window_grid import window_starts
from domainfm.domains.geospatial.windows import band_moments


class LabeledRasterDataset(Dataset[dict[str, Tensor]]):
    """Windows of image rasters with the matching window of a label raster.

    Args:
        images: rasters of the place (several dates: each window reads one of them).
        label: the label raster on the same grid.
        size: window size in pixels.
        bands: bands to read (1-based indices or names); default all.
        band_names: names of the images' bands.
        stats: per-band statistics for normalization.
        label_map: raw label value → class id (others → 0); ``None`` keeps raw values.
        rows: ``(first, stop)`` raster rows windows must lie in (a spatial split).
        samples_per_epoch: random windows per epoch; ``None``: a regular grid of windows
            (stride ``size``, the last one aligned to the region's edge) over every image.
        label_type: ``"mask"`` (the label window), ``"scene"`` (its dominant class) or
            ``"boxes"`` (boxes of ``object_classes`` regions).
        object_classes: class ids (after ``label_map``) whose regions are objects
            (``label_type="boxes"``).
        min_object_pixels: smallest region kept as an object (``label_type="boxes"``).
    """

    def __init__(
        self,
        *,
        images: Sequence[str | Path],
        label: str | Path,
        size: int | Sequence[int] = 32,
        bands: Sequence[int] | Sequence[str] | None = None,
        band_names: Sequence[str] | None = None,
        stats: BandStats | None = None,
        label_map: Mapping[int, int] | None = None,
        rows: tuple[int, int] | None = None,
        samples_per_epoch: int | None = 256,
        label_type: Literal["mask", "scene", "boxes"] = "mask",
        object_classes: Sequence[int] | None = None,
        min_object_pixels: int = 4,
    ) -> None:
        if label_type not in ("mask", "scene", "boxes"):
            raise ValueError(f"label_type={label_type!r}: must be 'mask', 'scene' or 'boxes'")
        if label_type == "boxes" and not object_classes:
            raise ValueError("label_type='boxes' needs object_classes (the classes of objects)")
        if object_classes is not None and any(int(c) < 1 for c in object_classes):
            raise ValueError(f"object_classes={list(object_classes)}: ids must be >= 1")
        if not images:
            raise ValueError("images is empty: pass at least one raster")
        self.images = [Path(p) for p in images]
        self.label = Path(label)
        self.size = to_ntuple(size, 2, name="size")
        self.band_names = tuple(band_names) if band_names is not None else None
        infos = [raster_info(p, band_names=self.band_names) for p in self.images]
        label_info = raster_info(self.label)
        check_same_grid([*infos, label_info])
        self.height, self.width = label_info.height, label_info.width
        first, stop = rows if rows is not None else (0, self.height)
        if not 0 <= first < stop <= self.height or stop - first < self.size[0]:
            raise ValueError(
                f"rows={rows} must be a range of at least {self.size[0]} rows inside the "
                f"{self.height} rows of {self.label}"
            )
        if self.width < self.size[1]:
            raise ValueError(f"{self.label} is {self.width} px wide, less than the window")
        self.rows = (first, stop)
        self.bands = bands
        self.stats = stats
        self.label_map = dict(label_map) if label_map is not None else None
        self.samples_per_epoch = samples_per_epoch
        self.label_type = label_type
        self.object_classes = [int(c) for c in object_classes or ()]
        self.min_object_pixels = int(min_object_pixels)
        self.reader = RasterReader(band_names=self.band_names)  # per-process cached handles
        self.label_reader = RasterReader()
        self.grid = None if samples_per_epoch is not None else self._grid()

    def _grid(self) -> list[tuple[int, int, int]]:
        """``(image, row, col)`` of a regular window grid over the region, every image."""
        h, w = self.size
        first, stop = self.rows
        return [
            (i, first + r, c)
            for i in range(len(self.images))
            for r in window_starts(stop - first, h, h)
            for c in window_starts(self.width, w, w)
        ]

    def __len__(self) -> int:
        if self.grid is not None:
            return len(self.grid)
        assert self.samples_per_epoch is not None
        return self.samples_per_epoch

    def _window(self, key: int | tuple[int, int]) -> tuple[int, int, int]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        if self.grid is not None:
            return self.grid[index]
        generator = torch.Generator().manual_seed(seed if seed is not None else index)
        h, w = self.size
        image = int(torch.randint(0, len(self.images), (), generator=generator))
        row = int(torch.randint(self.rows[0], self.rows[1] - h + 1, (), generator=generator))
        col = int(torch.randint(0, self.width - w + 1, (), generator=generator))
        return image, row, col

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Tensor]:
        """``{"input", "label"}`` of a window; ``key`` is an index or ``(index, seed)``."""
        image, row, col = self._window(key)
        window = (row, col, *self.size)
        raster = self.reader.read(self.images[image], window, self.bands, require_valid=False)
        x = torch.from_numpy(np.ascontiguousarray(raster.array, dtype=np.float32))  # (C, h, w)
        if self.stats is not None:
            mean, std = band_moments(self.stats, raster.band_names)
            x = standardize(x, mean[:, None, None], std[:, None, None])
        x = x.masked_fill(~torch.from_numpy(raster.mask)[None], 0.0)
        raw = self.label_reader.read(self.label, window, require_valid=False).array[:1]  # (1, h, w)
        label = torch.from_numpy(np.rint(raw).astype(np.int64))
        if self.label_map is not None:
            lookup = torch.zeros(max(int(label.max()), max(self.label_map)) + 1, dtype=torch.long)
            for value, cls in self.label_map.items():
                lookup[int(value)] = int(cls)
            label = lookup[label.clamp(min=0)]
        if self.label_type == "scene":
            label = dominant_class(label)
        elif self.label_type == "boxes":
            boxes, classes = mask_boxes(
                label, classes=self.object_classes, min_pixels=self.min_object_pixels
            )
            return {"input": x, "boxes": boxes, "labels": classes}
        return {"input": x, "label": label}


def dominant_class(label: Tensor) -> Tensor:
    """The most frequent class id >= 1 of a label window (ties: the smaller id), ``0`` when
    no pixel has a class; a scalar int64 tensor."""
    counts = torch.bincount(label.flatten().clamp(min=0))
    counts[0] = 0
    if counts.numel() == 1 or int(counts.max()) == 0:
        return torch.tensor(0)
    return counts.argmax()  # the first maximum: the smaller id on ties
