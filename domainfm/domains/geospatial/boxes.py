"""Object boxes on rasters: from label maps, between pixel and map coordinates, to GeoJSON.

Boxes are ``(N, 4)`` ``(x_min, y_min, x_max, y_max)`` (torchvision's ``xyxy``). **Pixel
boxes** use pixel *edges*: column ``c`` spans ``[c, c + 1)``, so a box around columns 3..5
is ``x_min=3, x_max=6`` and its area is its pixel count — the same convention as a rasterio
``Window`` and as torchvision detection targets. **Map boxes** are in the raster's CRS:
the four pixel corners go through the affine ``transform`` and the box is their envelope,
so a north-up raster (negative ``transform.e``) still gives ``y_min < y_max`` and a rotated
one gives the axis-aligned envelope.

* :func:`connected_components` — 4/8-connected regions of a boolean mask (vectorized label
  propagation in torch; no SciPy needed).
* :func:`mask_boxes` — the box of every connected region of chosen classes in a label map
  (e.g. built-up patches or shrubland parcels of a land-cover map as detection targets).
* :func:`boxes_to_map` / :func:`boxes_to_pixels` — pixel ↔ map coordinates.
* :func:`write_boxes_geojson` — a FeatureCollection of box polygons (rings
  counterclockwise) with class, score and pixel box, in the raster's CRS (named in the
  legacy ``crs`` member that GDAL/QGIS read) or reprojected to WGS84 longitude/latitude
  (RFC 7946); written atomically.

Example::

    >>> label = torch.tensor([[0, 4, 4], [0, 4, 0], [8, 0, 0]])
    >>> boxes, classes = mask_boxes(label, classes=[4, 8])
    >>> boxes.tolist(), classes.tolist()
    ([[1.0, 0.0, 3.0, 2.0], [0.0, 2.0, 1.0, 3.0]], [4, 8])
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from affine import Affine
from torch import Tensor

from domainfm.core.checkpoint_io import atomic_write


def connected_components(mask: Tensor, *, connectivity: int = 8) -> Tensor:
    """Label the connected regions of a 2D boolean ``mask``.

    Every pixel starts with its own id; ids spread to neighbours by a max filter restricted
    to the mask until nothing changes (each region ends with its largest id), then ids are
    renumbered ``1..n`` in order of their first pixel (raster order).

    Args:
        mask: ``(H, W)`` bool.
        connectivity: ``4`` (edge neighbours) or ``8`` (edge and corner neighbours).

    Returns:
        ``(H, W)`` int64: 0 outside the mask, ``1..n`` per region.
    """
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity={connectivity!r}: must be 4 or 8")
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {tuple(mask.shape)}")
    mask = mask.bool()
    height, width = mask.shape
    if not bool(mask.any()):
        return torch.zeros(height, width, dtype=torch.long)
    ids = torch.arange(1, height * width + 1, dtype=torch.float64).view(1, 1, height, width)
    inside = mask.view(1, 1, height, width)
    ids = ids * inside
    while True:
        if connectivity == 8:
            spread = F.max_pool2d(ids, kernel_size=3, stride=1, padding=1)
        else:
            padded = F.pad(ids, (1, 1, 1, 1))  # zeros: no neighbour outside
            spread = torch.stack(
                [
                    ids,
                    padded[..., :-2, 1:-1],
                    padded[..., 2:, 1:-1],
                    padded[..., 1:-1, :-2],
                    padded[..., 1:-1, 2:],
                ]
            ).amax(dim=0)
        spread = spread * inside
        if torch.equal(spread, ids):
            break
        ids = spread
    flat = ids.view(-1).long()  # (H*W,)
    first = torch.full((height * width + 1,), height * width, dtype=torch.long)
    first.scatter_reduce_(0, flat, torch.arange(flat.numel()), reduce="amin")
    first[0] = -1  # background sorts first
    order = torch.argsort(first)  # region ids by their first pixel
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel())
    present = torch.zeros(height * width + 1, dtype=torch.bool)
    present[flat] = True
    present[0] = True  # background keeps number 0 even when the mask fills the map
    # renumber present ids 1..n by first pixel; background stays 0
    number = torch.cumsum(present[order].long(), dim=0) - 1  # position among present ids
    labels = number[rank[flat]]
    return labels.view(height, width)


def mask_boxes(
    label: Tensor,
    *,
    classes: Sequence[int],
    min_pixels: int = 1,
    connectivity: int = 8,
) -> tuple[Tensor, Tensor]:
    """Pixel boxes of the connected regions of each class in ``classes``.

    Args:
        label: ``(H, W)`` (or ``(1, H, W)``) integer class map.
        classes: class ids whose regions are objects.
        min_pixels: regions with fewer pixels are dropped.
        connectivity: ``4`` or ``8`` (see :func:`connected_components`).

    Returns:
        ``boxes`` ``(N, 4)`` float32 pixel ``xyxy`` (edges) and ``classes`` ``(N,)`` int64,
        ordered by class (as given) then by the region's first pixel in raster order.
    """
    if label.ndim == 3 and label.shape[0] == 1:
        label = label[0]
    if label.ndim != 2:
        raise ValueError(f"label must be (H, W) or (1, H, W), got shape {tuple(label.shape)}")
    width = label.shape[1]
    all_boxes, all_classes = [], []
    for cls in classes:
        regions = connected_components(label == int(cls), connectivity=connectivity)
        count = int(regions.max())
        if count == 0:
            continue
        flat = regions.view(-1)  # (H*W,)
        where = torch.nonzero(flat, as_tuple=True)[0]
        ids = flat[where] - 1
        rows, cols = where // width, where % width
        pixels = torch.bincount(ids, minlength=count)
        big = torch.full((count,), torch.iinfo(torch.long).max, dtype=torch.long)
        small = torch.full((count,), -1, dtype=torch.long)
        x0 = big.clone().scatter_reduce_(0, ids, cols, reduce="amin")
        y0 = big.clone().scatter_reduce_(0, ids, rows, reduce="amin")
        x1 = small.clone().scatter_reduce_(0, ids, cols, reduce="amax") + 1
        y1 = small.clone().scatter_reduce_(0, ids, rows, reduce="amax") + 1
        keep = pixels >= min_pixels
        boxes = torch.stack([x0, y0, x1, y1], dim=1)[keep]  # (n, 4)
        all_boxes.append(boxes.float())
        all_classes.append(torch.full((boxes.shape[0],), int(cls), dtype=torch.long))
    if not all_boxes:
        return torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)
    return torch.cat(all_boxes), torch.cat(all_classes)


def _corners(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x and y of the four corners of each box: ``(N, 4)`` each."""
    xs = boxes[:, [0, 2, 2, 0]]
    ys = boxes[:, [1, 1, 3, 3]]
    return xs, ys


def _envelope(boxes: Tensor | np.ndarray, transform: Affine) -> np.ndarray:
    array = np.asarray(
        boxes.detach().cpu().numpy() if isinstance(boxes, Tensor) else boxes, dtype=np.float64
    ).reshape(-1, 4)
    xs, ys = _corners(array)
    a, b, c, d, e, f = transform.a, transform.b, transform.c, transform.d, transform.e, transform.f
    mx = a * xs + b * ys + c  # (N, 4)
    my = d * xs + e * ys + f
    return np.stack([mx.min(1), my.min(1), mx.max(1), my.max(1)], axis=1)  # (N, 4)


def boxes_to_map(boxes: Tensor | np.ndarray, transform: Affine) -> np.ndarray:
    """Pixel boxes ``(N, 4)`` → map boxes ``(N, 4)`` ``(min_x, min_y, max_x, max_y)`` in the
    raster's CRS (float64; the envelope of the transformed corners)."""
    return _envelope(boxes, transform)


def boxes_to_pixels(boxes: Tensor | np.ndarray, transform: Affine) -> np.ndarray:
    """Map boxes ``(N, 4)`` in the raster's CRS → pixel boxes ``(N, 4)`` (float64; the
    envelope of the corners through ``~transform``)."""
    return _envelope(boxes, ~transform)


def _counterclockwise(ring: list[list[float]]) -> list[list[float]]:
    """The closed ring, reversed if it runs clockwise (RFC 7946: exterior rings are
    counterclockwise; a north-up raster's row order flips the pixel ring's sense)."""
    area2 = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in itertools.pairwise(ring))
    return ring[::-1] if area2 < 0 else ring


def write_boxes_geojson(
    path: str | Path,
    boxes: Tensor | np.ndarray,
    *,
    transform: Affine,
    crs: Any,
    labels: Tensor | np.ndarray | Sequence[int],
    scores: Tensor | np.ndarray | Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
    wgs84: bool = False,
    source: str | None = None,
) -> Path:
    """Write pixel ``boxes`` ``(N, 4)`` of a raster as a GeoJSON FeatureCollection.

    Each feature is the box's polygon in map coordinates with properties ``label``,
    ``class_name`` (when ``class_names`` are given), ``score`` and ``pixel_box``
    ``[x_min, y_min, x_max, y_max]``. Coordinates are in ``crs`` (named in the collection's
    ``crs`` member, which GDAL, QGIS and geopandas read) or, with ``wgs84=True``, reprojected
    to EPSG:4326 longitude/latitude as RFC 7946 asks (polygon corners reprojected, so the
    ring follows the box's true shape). Written atomically; returns the path.
    """
    from rasterio.crs import CRS
    from rasterio.warp import transform_geom

    pixel = np.asarray(
        boxes.detach().cpu().numpy() if isinstance(boxes, Tensor) else boxes, dtype=np.float64
    ).reshape(-1, 4)
    label_list = [int(v) for v in np.asarray(labels).reshape(-1)]
    score_list = None if scores is None else [float(v) for v in np.asarray(scores).reshape(-1)]
    if len(label_list) != len(pixel) or (score_list is not None and len(score_list) != len(pixel)):
        raise ValueError(
            f"{len(pixel)} boxes but {len(label_list)} labels"
            + ("" if score_list is None else f" and {len(score_list)} scores")
        )
    if crs is None:
        raise ValueError(f"cannot write {path}: the raster has no CRS, so boxes have no place")
    crs = CRS.from_user_input(crs)
    a, b, c, d, e, f = transform.a, transform.b, transform.c, transform.d, transform.e, transform.f
    features = []
    for i, (x0, y0, x1, y1) in enumerate(pixel):
        ring = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
        coords = [[a * x + b * y + c, d * x + e * y + f] for x, y in ring]
        geometry: dict[str, Any] = {"type": "Polygon", "coordinates": [coords]}
        if wgs84:
            geometry = dict(transform_geom(crs, "EPSG:4326", geometry))
            geometry["coordinates"] = [[list(p) for p in r] for r in geometry["coordinates"]]
        geometry["coordinates"] = [_counterclockwise(geometry["coordinates"][0])]
        props: dict[str, Any] = {"label": label_list[i]}
        if class_names is not None:
            if not 0 <= label_list[i] < len(class_names):
                raise ValueError(f"label {label_list[i]} has no name in {len(class_names)} names")
            props["class_name"] = class_names[label_list[i]]
        if score_list is not None:
            props["score"] = score_list[i]
        props["pixel_box"] = [float(x0), float(y0), float(x1), float(y1)]
        features.append({"type": "Feature", "geometry": geometry, "properties": props})
    collection: dict[str, Any] = {"type": "FeatureCollection"}
    if source is not None:
        collection["name"] = source
    if not wgs84:
        epsg = crs.to_epsg()
        name = f"urn:ogc:def:crs:EPSG::{epsg}" if epsg is not None else crs.to_wkt()
        collection["crs"] = {"type": "name", "properties": {"name": name}}
    collection["features"] = features
    text = json.dumps(collection) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))
