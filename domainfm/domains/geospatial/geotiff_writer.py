"""Streaming a tiled prediction into a georeferenced GeoTIFF, a few rows at a time.

Used by :func:`~domainfm.domains.geospatial.tiled_inference.predict_raster`:

* :class:`LogitStrip` accumulates the blended logits of the raster rows that tiles can still
  touch (``(K, tile, W)``, whatever the raster's height) and hands every finished row to a
  callback, :func:`prediction_finisher`, which turns them into labels or probabilities.
* :class:`BlockRowWriter` buffers finished rows until a whole row of output blocks is
  complete and writes it with ``dst.write(..., window=Window(...))`` (each compressed block
  written once); the remainder at :meth:`BlockRowWriter.close`.
* :func:`create_prediction_geotiff` opens the output: a tiled GeoTIFF (:func:`output_blocks`:
  ``blockxsize``/``blockysize`` 256, or the largest multiple of 16 that fits a smaller raster;
  untiled when the raster is under 16 pixels on a side), ``compress``, ``BIGTIFF=IF_SAFER``,
  on the input's grid. ``"labels"``: one band, uint8 with nodata 255 (uint16 with nodata
  65535 when ``K > 255``), band description ``"labels"`` and tags ``class_<k>=<name>`` when
  class names are given. ``"probabilities"``: ``K`` float32 bands, nodata NaN, band
  descriptions = class names (``class_<k>`` without them).
* :func:`check_prediction_buffers` estimates the buffers that grow with the raster's width
  (the strip's logits, the writer's rows) and refuses them above the size guard's limit
  (:func:`~domainfm.core.size_guard.check_allocation`, naming the input) before they exist.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
import torch
from rasterio.windows import Window
from torch import Tensor

from domainfm.core.size_guard import check_allocation
from domainfm.domains.geospatial.raster_header import RasterInfo

OUTPUT_BLOCK = 256
"""Side of the output GeoTIFF's blocks (smaller for a smaller raster)."""


def output_blocks(width: int, height: int) -> dict[str, Any]:
    """Creation options for the output's blocks: 256 (or the largest multiple of 16 that fits)
    on each axis; untiled when the raster is under 16 pixels on a side."""
    bx, by = (min(OUTPUT_BLOCK, n // 16 * 16) for n in (width, height))
    if bx < 16 or by < 16:
        return {"tiled": False}
    return {"tiled": True, "blockxsize": bx, "blockysize": by}


def output_dtype(output: Literal["labels", "probabilities"], num_classes: int) -> str:
    """The output band dtype: ``uint8`` labels (``uint16`` above 255 classes), or ``float32``
    probabilities."""
    if output == "labels":
        return "uint8" if num_classes <= 255 else "uint16"
    return "float32"


def check_prediction_buffers(
    source: Path,
    info: RasterInfo,
    *,
    tile: int,
    output: Literal["labels", "probabilities"],
    num_classes: int,
    exact: bool = True,
) -> None:
    """Refuse (:class:`~domainfm.core.size_guard.AllocationTooLarge`, naming ``source``) a
    prediction whose width-sized buffers exceed the per-allocation limit: the
    :class:`LogitStrip` logits ``(K, min(tile, H), W)`` float32 (its other arrays and the
    finished rows' softmax are no larger) and the :class:`BlockRowWriter` rows ``(bands,
    block rows + min(tile, H), W)`` in the output dtype.

    Args:
        source: the input raster, named in the refusal.
        info: its header.
        tile: the tile side.
        output: ``"labels"`` or ``"probabilities"``.
        num_classes: ``K`` (a lower bound when not ``exact``: the model's is not known yet).
        exact: whether ``num_classes`` is the model's.
    """
    rows = min(tile, info.height)
    classes = f"{num_classes} classes" if exact else f"at least {num_classes} class(es)"
    check_allocation(
        float(num_classes) * rows * info.width * 4,
        what=f"the blended logits of {rows} full-width rows ({classes} x {rows} x "
        f"{info.width} float32)",
        source=source,
    )
    dtype = output_dtype(output, num_classes)
    bands = 1 if output == "labels" else num_classes
    buffered = int(output_blocks(info.width, info.height).get("blockysize", 1)) + rows
    check_allocation(
        float(bands) * buffered * info.width * np.dtype(dtype).itemsize,
        what=f"the output rows buffered for writing ({bands} band(s) x {buffered} x "
        f"{info.width} {dtype})",
        source=source,
    )


def create_prediction_geotiff(
    path: Path,
    info: RasterInfo,
    *,
    output: Literal["labels", "probabilities"],
    num_classes: int,
    class_names: Sequence[str] | None,
    compress: str | None,
) -> BlockRowWriter:
    """Open the output GeoTIFF of a ``num_classes``-class prediction on ``info``'s grid (see
    the module docstring) and return its writer; the caller closes ``writer.dataset``.

    Args:
        path: the file to create.
        info: the input raster's header (CRS, transform, width, height).
        output: ``"labels"`` (one integer band) or ``"probabilities"`` (``K`` float32 bands).
        num_classes: ``K``.
        class_names: ``K`` names (band descriptions or tags), or ``None``.
        compress: GeoTIFF compression, or ``None``.

    Raises:
        ValueError: more than 65535 classes for ``"labels"``.
    """
    dtype = output_dtype(output, num_classes)
    if output == "labels":
        if num_classes > 65535:
            raise ValueError(f"{num_classes} classes do not fit uint16 labels")
        nodata, count = (255.0 if dtype == "uint8" else 65535.0), 1
    else:
        nodata, count = float("nan"), num_classes
    blocks = output_blocks(info.width, info.height)
    options: dict[str, Any] = {"BIGTIFF": "IF_SAFER", **blocks}
    if compress is not None:
        options["compress"] = compress
    dataset = rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=info.width,
        height=info.height,
        count=count,
        dtype=dtype,
        crs=info.crs,
        transform=info.transform,
        nodata=nodata,
        **options,
    )
    names = tuple(class_names) if class_names else tuple(f"class_{k}" for k in range(num_classes))
    if output == "labels":
        dataset.set_band_description(1, "labels")
        if class_names is not None:
            dataset.update_tags(1, **{f"class_{k}": n for k, n in enumerate(names)})
    else:
        for k, name in enumerate(names):
            dataset.set_band_description(k + 1, name)
    block_rows = int(blocks.get("blockysize", 1))
    return BlockRowWriter(dataset=dataset, block_rows=block_rows)


def prediction_finisher(
    writer: BlockRowWriter, output: Literal["labels", "probabilities"]
) -> Callable[[Tensor, Tensor, np.ndarray], None]:
    """The ``finish`` callback of a :class:`LogitStrip`: turns finished rows (blended logit
    sums ``(K, n, W)``, weights ``(n, W)``, validity ``(n, W)``) into output values (argmax
    labels in the file's dtype, or softmax probabilities; nodata where the input is invalid)
    and hands them to ``writer``."""
    nodata = float(writer.dataset.nodata)

    def finish(sums: Tensor, weight: Tensor, valid: np.ndarray) -> None:
        logits = sums / weight  # (K, n, W); every pixel has weight > 0
        if output == "labels":
            values = logits.argmax(dim=0).cpu().numpy()[None]  # (1, n, W)
            values = values.astype(writer.dataset.dtypes[0])
        else:
            values = torch.softmax(logits, dim=0).cpu().numpy()  # (K, n, W)
        values[:, ~valid] = nodata
        writer.push(values)

    return finish


class LogitStrip:
    """Accumulators for the raster rows ``[origin, origin + height)`` that tiles still touch.

    ``logits`` ``(K, height, W)`` holds the weighted logit sums, ``weight`` ``(height, W)``
    the summed weights, ``valid`` ``(height, W)`` the input's validity; ``height`` is
    ``min(tile, raster height)`` whatever the raster's height.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        height: int,
        width: int,
        device: torch.device,
        finish: Callable[[Tensor, Tensor, np.ndarray], None],
    ) -> None:
        self.origin = 0
        self.height = height
        self.width = width
        self.logits = torch.zeros(num_classes, height, width, device=device)
        self.weight = torch.zeros(height, width, device=device)
        self.valid = np.zeros((height, width), dtype=bool)
        self.finish = finish

    def add(self, row: int, col: int, logits: Tensor, weights: Tensor, mask: np.ndarray) -> None:
        """Add one tile's ``(K, t, t)`` logits (top-left pixel ``(row, col)``), cropped to the
        raster (the padding of a raster smaller than a tile)."""
        top = row - self.origin
        h = min(logits.shape[1], self.height - top)
        w = min(logits.shape[2], self.width - col)
        rows, cols = slice(top, top + h), slice(col, col + w)
        self.logits[:, rows, cols].addcmul_(logits[:, :h, :w], weights[:h, :w])
        self.weight[rows, cols] += weights[:h, :w]
        self.valid[rows, cols] = mask[:h, :w]

    def advance(self, row: int) -> None:
        """Rows above ``row`` are final (no later tile starts above it): finish them and move
        the accumulators down so they start at ``row`` (or end at the raster's last row)."""
        done = min(row - self.origin, self.height)
        if done <= 0:
            return
        self.finish(self.logits[:, :done], self.weight[:done], self.valid[:done])
        keep = self.height - done  # rows [row, origin + height) carry their sums over
        self.logits[:, :keep] = self.logits[:, done:].clone()
        self.weight[:keep] = self.weight[done:].clone()
        self.valid[:keep] = self.valid[done:].copy()
        self.logits[:, keep:] = 0.0
        self.weight[keep:] = 0.0
        self.valid[keep:] = False
        self.origin += done


class BlockRowWriter:
    """Writes finished rows ``(bands, n, W)`` top to bottom, in whole rows of output blocks
    (each compressed block written once), the remainder at :meth:`close`."""

    def __init__(self, *, dataset: Any, block_rows: int) -> None:
        self.dataset = dataset
        self.block_rows = block_rows
        self.row = 0  # first row not yet written
        self.pending: list[np.ndarray] = []
        self.buffered = 0
        self.max_buffered = 0

    def push(self, values: np.ndarray) -> None:
        """Queue the next finished rows ``(bands, n, W)``; write every complete block row."""
        self.pending.append(values)
        self.buffered += int(values.shape[1])
        self.max_buffered = max(self.max_buffered, self.buffered)
        if self.buffered >= self.block_rows:
            self._write(self.buffered // self.block_rows * self.block_rows)

    def close(self) -> None:
        """Write the remaining rows and close the dataset.

        Raises:
            RuntimeError: the rows pushed do not add up to the raster's height.
        """
        if self.buffered:
            self._write(self.buffered)
        if self.row != self.dataset.height:
            raise RuntimeError(f"wrote {self.row} of {self.dataset.height} rows")
        self.dataset.close()

    def _write(self, n: int) -> None:
        block = np.concatenate(self.pending, axis=1)  # (bands, buffered, W)
        out, rest = block[:, :n], block[:, n:]
        self.dataset.write(out, window=Window(0, self.row, out.shape[2], n))
        self.row += n
        self.pending = [rest] if rest.shape[1] else []
        self.buffered -= n
