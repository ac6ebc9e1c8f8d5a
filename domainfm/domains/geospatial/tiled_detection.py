"""Tiled object detection over a raster of any size, written as georeferenced GeoJSON boxes.

:func:`detect_raster` runs a detector (``(B, C, t, t)`` bands → per tile torchvision
detections ``{"boxes", "labels", "scores"}``, e.g. a
:class:`~domainfm.tasks.detection_module.DetectionModule` in eval mode) over a whole raster:

* **Tiles** as :func:`~domainfm.domains.geospatial.tiled_inference.predict_raster`: squares
  of ``tile`` pixels with stride ``int(tile * (1 - overlap))``, the last row/column shifted
  back onto the edge, a raster smaller than a tile padded; normalized as in training; read
  one batch of windows at a time (input memory bounded by the batch). The tile plan is
  never listed: positions are generated lazily and each tile's owned span (below) computed
  from its index, so a 200000² raster costs no more than a small one before the first tile;
  a batch too large for the size guard is refused up front naming the file.
* **Merging without duplicates**: each tile *owns* the part of the raster nearer to it than
  to its neighbours (along each axis the boundary between two overlapping tiles is the
  middle of their overlap). A box is kept only from the tile owning its centre — so an
  object seen whole by one tile and cut by the next is taken from the tile that sees it
  best — and the kept boxes then go through class-wise NMS (``nms_iou``) to merge objects
  detected on both sides of a boundary. Boxes whose centre falls on invalid (nodata) input
  pixels are dropped.
* **Output**: GeoJSON polygons in the raster's CRS (or WGS84 with ``wgs84=True``) with
  ``label``, ``class_name``, ``score`` and ``pixel_box`` (full-raster pixel coordinates),
  written atomically (:func:`~domainfm.domains.geospatial.boxes.write_boxes_geojson`).
  Only the boxes are held in memory (at most ``detections_per_image`` per tile).

Example::

    >>> module, meta = load_detector("runs/.../last.ckpt")
    >>> detect_raster(module, "scene.tif", "objects.geojson", tile=32, stats=stats,
    ...               class_names=["background", "shrubland", "built-up"])
    PosixPath('objects.geojson')
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Unpack

import numpy as np
import torch
from torch import Tensor

from domainfm.domains.geospatial.boxes import write_boxes_geojson
from domainfm.domains.geospatial.raster_header import open_raster
from domainfm.domains.geospatial.tile_setup import TileSetup
from domainfm.domains.geospatial.tiling_args import TilingArgs, check_tiling

GEOJSON_SUFFIXES = (".geojson", ".json")
"""The endings of the GeoJSON files :func:`detect_raster` writes."""


def owned_span(starts: Sequence[int], index: int, tile: int, size: int) -> tuple[float, float]:
    """Along one axis, the ``[low, high)`` span tile ``index`` owns: boundaries at the middle
    of consecutive tiles' overlap (or of the gap between them), the first from 0, the last to
    ``size`` (``max(size, tile)`` when one tile is padded past the edge)."""
    low = 0.0 if index == 0 else (starts[index] + starts[index - 1] + tile) / 2.0
    last = index == len(starts) - 1
    high = float(max(size, tile)) if last else (starts[index + 1] + starts[index] + tile) / 2.0
    return (low, high)


def ownership_bounds(starts: Sequence[int], tile: int, size: int) -> list[tuple[float, float]]:
    """:func:`owned_span` of every tile along one axis, in order."""
    return [owned_span(starts, i, tile, size) for i in range(len(starts))]


def detect_raster(
    model: Callable[[Tensor], Any],
    src: str | Path,
    dst: str | Path,
    *,
    score_threshold: float = 0.0,
    nms_iou: float = 0.5,
    class_names: Sequence[str] | None = None,
    wgs84: bool = False,
    progress: bool = False,
    report: dict[str, Any] | None = None,
    **tiling: Unpack[TilingArgs],
) -> Path:
    """Detect objects over all of ``src`` tile by tile and write them as GeoJSON (see the
    module docstring).

    Args:
        model: ``(B, C, tile, tile)`` → a list of ``B`` dicts with ``boxes`` ``(K, 4)``
            (tile pixel ``xyxy``), ``labels`` ``(K,)`` and ``scores`` ``(K,)``. An
            ``nn.Module`` is put in eval mode for the call and must be on ``device``.
        src: input raster.
        dst: output ``.geojson`` (written atomically).
        score_threshold: boxes scoring below are dropped (on top of the model's own).
        nms_iou: IoU above which boxes of one class are merged across tiles.
        class_names: names by class id (0: background), written as ``class_name``.
        wgs84: write EPSG:4326 longitude/latitude instead of the raster's CRS.
        progress: print progress over rows of tiles to stderr.
        report: filled with ``tiles``, ``tile_grid``, ``stride``, ``raw_boxes`` (all the
            model returned), ``owned_boxes`` (after ownership and validity) and ``boxes``
            (written).
        **tiling: ``tile``, ``overlap``, ``bands``, ``band_names``, ``mean``, ``std``,
            ``stats``, ``batch_size``, ``device``, ``gdal_cache_mb``: see
            :class:`~domainfm.domains.geospatial.tiling_args.TilingArgs`.

    Returns:
        ``dst`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: naming the file or argument: an unreadable or ungeoreferenced raster,
            bands/normalization/model channels that do not match, a model that does not
            return detections, a ``dst`` that is not ``.geojson``/``.json``.
        AllocationTooLarge: (a ``ValueError``) naming the file and the estimate, when a
            batch of tiles would exceed the per-allocation limit.
    """
    from torchvision.ops import batched_nms

    if Path(dst).suffix.lower() not in GEOJSON_SUFFIXES:
        raise ValueError(f"dst={str(dst)!r}: detections are written as GeoJSON (.geojson)")
    if not 0.0 < float(nms_iou) <= 1.0:
        raise ValueError(f"nms_iou={nms_iou!r}: must be in (0, 1]")
    setup = check_tiling(model, src, dst, tiling)
    info, size = setup.info, setup.tile
    rows, cols = setup.tile_starts()  # lazy: O(1) memory
    total = len(rows) * len(cols)
    kept: list[tuple[Tensor, Tensor, Tensor]] = []
    raw = 0
    with setup.session(model), open_raster(setup.source) as ds:
        for number, (batch, inputs, masks) in enumerate(setup.batches(ds, setup.positions())):
            with torch.no_grad():
                outputs = model(inputs.to(setup.device))
            _check_detections(outputs, len(batch), setup, first=number == 0)
            for (row, col), out, mask in zip(batch, outputs, masks, strict=True):
                boxes = out["boxes"].detach().float().cpu().reshape(-1, 4)
                scores = out["scores"].detach().float().cpu()
                raw += boxes.shape[0]
                span_rows = owned_span(rows, rows.index(row), size, info.height)
                span_cols = owned_span(cols, cols.index(col), size, info.width)
                keep = _owned(boxes, mask, span_rows, span_cols, row, col)
                keep &= scores >= score_threshold
                shifted = boxes[keep] + torch.tensor([col, row, col, row], dtype=torch.float32)
                kept.append((shifted, scores[keep], out["labels"].detach().cpu().long()[keep]))
            if progress:
                done = min((number + 1) * setup.batch_size, total)
                print(f"{setup.source.name}: tiles {done}/{total}", file=sys.stderr)
    boxes = torch.cat([k[0] for k in kept]) if kept else torch.zeros(0, 4)
    scores = torch.cat([k[1] for k in kept]) if kept else torch.zeros(0)
    labels = torch.cat([k[2] for k in kept]) if kept else torch.zeros(0, dtype=torch.long)
    owned = int(boxes.shape[0])
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, info.width)  # padded tiles reach past the edge
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, info.height)
    order = batched_nms(boxes, scores, labels, float(nms_iou))  # by decreasing score
    boxes, scores, labels = boxes[order], scores[order], labels[order]
    if report is not None:
        report.update(
            tiles=total,
            tile_grid=(len(rows), len(cols)),
            stride=setup.stride,
            raw_boxes=raw,
            owned_boxes=owned,
            boxes=int(boxes.shape[0]),
        )
    return write_boxes_geojson(
        dst,
        boxes,
        transform=info.transform,
        crs=info.crs,
        labels=labels,
        scores=scores,
        class_names=class_names,
        wgs84=wgs84,
        source=setup.source.name,
    )


def _owned(
    boxes: Tensor,
    mask: np.ndarray,
    span_rows: tuple[float, float],
    span_cols: tuple[float, float],
    row: int,
    col: int,
) -> Tensor:
    """Which of a tile's boxes (tile pixels) have their centre in the tile's owned span and
    on a valid input pixel."""
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.bool)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2 + col  # raster columns
    cy = (boxes[:, 1] + boxes[:, 3]) / 2 + row
    inside = (cx >= span_cols[0]) & (cx < span_cols[1]) & (cy >= span_rows[0]) & (cy < span_rows[1])
    height, width = mask.shape
    ci = ((boxes[:, 0] + boxes[:, 2]) / 2).floor().long().clamp(0, width - 1)
    ri = ((boxes[:, 1] + boxes[:, 3]) / 2).floor().long().clamp(0, height - 1)
    valid = torch.from_numpy(mask)[ri, ci]
    return inside & valid


def _check_detections(outputs: Any, count: int, setup: TileSetup, *, first: bool) -> None:
    ok = (
        isinstance(outputs, list | tuple)
        and len(outputs) == count
        and all(isinstance(o, dict) and {"boxes", "labels", "scores"} <= set(o) for o in outputs)
    )
    if not ok:
        got = type(outputs).__name__
        raise ValueError(
            f"the model returned {got} for {count} tiles of {setup.source}; a detector returns "
            "one dict with 'boxes', 'labels' and 'scores' per tile (a DetectionModule in eval "
            "mode)" + (" — is it a segmentation model?" if first else "")
        )
