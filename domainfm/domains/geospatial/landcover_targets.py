"""Multi-label land-cover targets of a window: the fraction of each class inside its footprint.

SoftCon (Wang, Albrecht & Zhu 2024, arXiv:2405.20462) guides contrastive pretraining with
the multi-label land cover of each scene (the classes of a land-cover map, Dynamic World in
the paper, present in the scene). :class:`LandCoverFractions` gives a window of an image
raster its land-cover vector from a land-cover raster: for ``K`` listed classes, the fraction
of the labeled land-cover pixels inside the window's footprint that have each class.

**Alignment, never guessed.** The fractions are counted on the land-cover raster's own grid:
a land-cover pixel counts when its *centre* lies inside the window's footprint, tested in the
image's pixel coordinates after mapping the centre through both rasters' CRS and transform
(``rasterio.warp.transform`` when the CRSs differ). So a land-cover raster on the image's
grid gives exactly the window's pixels; one on another resolution, origin or CRS gives the
pixels whose centres fall in the footprint; nothing is resampled.

**Unlabeled pixels** are excluded from the denominator: the raster's nodata and the values in
``ignore_values`` (e.g. ``0``, "no data" in eo-learn's Slovenia LULC). A value that is neither
a listed class nor ignored is an error naming the file and the values (never dropped
silently). A window without labeled pixels gets the zero vector.

Shapes::

    fractions(grid, window)    (K,) float32, sums to 1 (or 0 when nothing is labeled)

Example::

    >>> cover = LandCoverFractions(file="labels/LULC.tif", classes=range(1, 11))
    >>> cover.fractions(raster_info("S2_L1C_2015-07-11.tif").grid, (0, 0, 32, 32))
    tensor([0.0000, 0.8672, 0.1123, ...])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio.warp
import torch
from affine import Affine
from torch import Tensor

from domainfm.domains.geospatial.raster_header import Grid, raster_info
from domainfm.domains.geospatial.raster_reader import RasterReader

EDGE_POINTS = 16
"""Points per footprint edge when the footprint is mapped into another CRS (its edges may
bend there), for the land-cover window to read."""


@dataclass(frozen=True)
class LandCoverSpec:
    """A land-cover raster attached to a pretraining data module (YAML ``landcover:``).

    Args:
        file: the land-cover raster (relative paths resolve against the example-data root).
        classes: the class values, in vector order (``K`` entries).
        ignore_values: values of unlabeled pixels, excluded (besides the raster's nodata).

    Example (the ``data`` section of a ``domainfm fit`` config)::

        landcover: {file: geospatial/eolearn_s2_slovenia_patch/labels/LULC.tif,
                    classes: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], ignore_values: [0]}
    """

    file: str
    classes: Sequence[int]
    ignore_values: Sequence[int] = (0,)


class LandCoverFractions:
    """Class fractions of a land-cover raster inside window footprints (module docstring).

    Worker-safe: it holds the path and a :class:`RasterReader` (whose handles never travel to
    another process).

    Args:
        file: the land-cover raster (band 1 holds the class values).
        classes: the class values, in vector order.
        ignore_values: values of unlabeled pixels (excluded, as the raster's nodata).

    Raises:
        ValueError: no class, repeated classes, or a class also ignored.
    """

    def __init__(
        self,
        *,
        file: str | Path,
        classes: Sequence[int],
        ignore_values: Sequence[int] = (0,),
    ) -> None:
        values = [int(c) for c in classes]
        ignored = {int(v) for v in ignore_values}
        if not values or len(set(values)) != len(values):
            raise ValueError(f"classes={list(classes)} must list distinct class values")
        if ignored & set(values):
            raise ValueError(f"values {sorted(ignored & set(values))} are both classes and ignored")
        self.file = Path(file)
        self.info = raster_info(self.file)
        self.classes = values
        self.ignore_values = sorted(ignored)
        self.reader = RasterReader()

    @property
    def num_classes(self) -> int:
        """``K``, the length of the vectors."""
        return len(self.classes)

    def fractions(self, grid: Grid, window: tuple[int, int, int, int]) -> Tensor:
        """The ``(K,)`` class fractions inside ``window`` ``(row, col, height, width)`` of an
        image on ``grid`` (see the module docstring)."""
        row, col, h, w = window
        edge = np.linspace(0.0, 1.0, EDGE_POINTS + 1)
        across, down = col + w * edge, row + h * edge
        ring_c = np.concatenate(
            [across, np.full_like(edge, col + w), across, np.full_like(edge, col)]
        )
        ring_r = np.concatenate([np.full_like(edge, row), down, np.full_like(edge, row + h), down])
        xs, ys = _apply(grid.transform, ring_c, ring_r)  # the footprint's outline, image CRS
        same_crs = grid.crs == self.info.crs
        if not same_crs:
            xs, ys = rasterio.warp.transform(grid.crs, self.info.crs, xs, ys)
        cols, rows = _apply(~self.info.transform, xs, ys)
        first_r, first_c = max(0, math.floor(min(rows))), max(0, math.floor(min(cols)))
        stop_r = min(self.info.height, math.ceil(max(rows)))
        stop_c = min(self.info.width, math.ceil(max(cols)))
        counts = torch.zeros(self.num_classes, dtype=torch.float64)
        if stop_r <= first_r or stop_c <= first_c:  # the footprint misses the raster
            return counts.float()
        read = (first_r, first_c, stop_r - first_r, stop_c - first_c)
        raster = self.reader.read(self.file, read, [1], require_valid=False)
        centre_r, centre_c = np.meshgrid(
            first_r + 0.5 + np.arange(read[2]), first_c + 0.5 + np.arange(read[3]), indexing="ij"
        )
        cx, cy = _apply(self.info.transform, centre_c.ravel(), centre_r.ravel())
        if not same_crs:
            cx, cy = rasterio.warp.transform(self.info.crs, grid.crs, cx, cy)
        u, v = _apply(~grid.transform, cx, cy)  # image (col, row) coordinates
        inside = (u >= col) & (u < col + w) & (v >= row) & (v < row + h)
        labels = np.rint(raster.array[0]).astype(np.int64).ravel()
        labeled = inside & raster.mask.ravel() & ~np.isin(labels, self.ignore_values)
        found = labels[labeled]
        unknown = np.setdiff1d(found, self.classes)
        if unknown.size:
            raise ValueError(
                f"{self.file}: values {unknown.tolist()} are neither classes {self.classes} nor "
                f"ignored {self.ignore_values}; list them in classes or ignore_values"
            )
        index = np.searchsorted(np.sort(self.classes), found)
        position = np.argsort(self.classes)[index]  # vector position of each labeled pixel
        counts += torch.bincount(torch.from_numpy(position), minlength=self.num_classes)
        total = counts.sum()
        return (counts / total if total > 0 else counts).float()


def _apply(transform: Affine, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """``transform`` applied to the points ``(x, y)`` (arrays or sequences)."""
    a, b, c, d, e, f = tuple(transform)[:6]
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return a * x + b * y + c, d * x + e * y + f
