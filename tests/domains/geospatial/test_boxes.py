"""Boxes on rasters: connected components and region boxes against a reference flood fill,
pixel ↔ map coordinates against rasterio on the real Sentinel-2 grid, GeoJSON output."""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import xy

from domainfm.domains.geospatial import (
    boxes_to_map,
    boxes_to_pixels,
    connected_components,
    mask_boxes,
    write_boxes_geojson,
)

S2 = "geospatial/eolearn_s2_slovenia_patch/s2_l1c_13band/S2_L1C_2015-07-11.tif"
LULC = "geospatial/eolearn_s2_slovenia_patch/labels/LULC.tif"


def _flood_fill(mask: np.ndarray, connectivity: int) -> list[list[tuple[int, int]]]:
    """Reference: regions as pixel lists, in order of their first pixel (raster order)."""
    steps = [(1, 0), (-1, 0), (0, 1), (0, -1)]
    if connectivity == 8:
        steps += [(1, 1), (1, -1), (-1, 1), (-1, -1)]
    seen = np.zeros_like(mask, dtype=bool)
    regions = []
    height, width = mask.shape
    for i in range(height):
        for j in range(width):
            if not mask[i, j] or seen[i, j]:
                continue
            queue, pixels = deque([(i, j)]), []
            seen[i, j] = True
            while queue:
                y, x = queue.popleft()
                pixels.append((y, x))
                for dy, dx in steps:
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < height and 0 <= xx < width and mask[yy, xx] and not seen[yy, xx]:
                        seen[yy, xx] = True
                        queue.append((yy, xx))
            regions.append(pixels)
    return regions


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_connected_components_match_flood_fill(connectivity: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    mask = rng.random((23, 31)) < 0.45
    labels = connected_components(torch.from_numpy(mask), connectivity=connectivity).numpy()
    regions = _flood_fill(mask, connectivity)
    expected = np.zeros(mask.shape, dtype=np.int64)
    for k, pixels in enumerate(regions, start=1):
        for y, x in pixels:
            expected[y, x] = k
    np.testing.assert_array_equal(labels, expected)


def test_connected_components_edge_cases() -> None:
    assert int(connected_components(torch.zeros(4, 5, dtype=torch.bool)).max()) == 0
    full = connected_components(torch.ones(4, 5, dtype=torch.bool))
    assert torch.equal(full, torch.ones(4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="connectivity"):
        connected_components(torch.ones(2, 2, dtype=torch.bool), connectivity=6)


def test_mask_boxes_on_real_land_cover(data_root: Path) -> None:
    with rasterio.open(data_root / LULC) as ds:
        label = ds.read(1).astype(np.int64)
    boxes, classes = mask_boxes(torch.from_numpy(label), classes=[4, 8], min_pixels=3)
    expected = []
    for cls in (4, 8):
        for pixels in _flood_fill(label == cls, 8):
            if len(pixels) >= 3:
                ys, xs = zip(*pixels, strict=True)
                expected.append((min(xs), min(ys), max(xs) + 1, max(ys) + 1, cls))
    got = [(*(int(v) for v in b), int(c)) for b, c in zip(boxes, classes, strict=True)]
    assert got == expected
    assert len(got) > 20  # the map really has many shrubland/built-up patches


def test_pixel_map_round_trip_on_real_grid(data_root: Path) -> None:
    with rasterio.open(data_root / S2) as ds:
        transform = ds.transform
    boxes = np.array([[0, 0, 1, 1], [10, 20, 30, 25], [0.5, 3.25, 99.5, 100.0]])
    mapped = boxes_to_map(boxes, transform)
    for (x0, y0, x1, y1), (mx0, my0, mx1, my1) in zip(boxes, mapped, strict=True):
        # pixel edges: the top-left corner of pixel (row y0, col x0) is xy(..., offset="ul")
        left, top = xy(transform, y0, x0, offset="ul")
        right, bottom = xy(transform, y1, x1, offset="ul")
        np.testing.assert_allclose([mx0, my0, mx1, my1], [left, bottom, right, top])
    assert np.all(mapped[:, 1] < mapped[:, 3])  # north-up: y flipped into min < max
    np.testing.assert_allclose(boxes_to_pixels(mapped, transform), boxes, atol=1e-6)


def test_geojson_in_raster_crs_and_wgs84(data_root: Path, tmp_path: Path) -> None:
    with rasterio.open(data_root / S2) as ds:
        transform, crs = ds.transform, ds.crs
    boxes = torch.tensor([[10.0, 20.0, 30.0, 25.0], [0.0, 0.0, 5.0, 5.0]])
    out = write_boxes_geojson(
        tmp_path / "b.geojson",
        boxes,
        transform=transform,
        crs=crs,
        labels=[1, 2],
        scores=[0.9, 0.4],
        class_names=["background", "shrubland", "built-up"],
    )
    data = json.loads(out.read_text())
    assert data["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32633"
    first = data["features"][0]
    assert first["properties"] == {
        "label": 1,
        "class_name": "shrubland",
        "score": pytest.approx(0.9),
        "pixel_box": [10.0, 20.0, 30.0, 25.0],
    }
    ring = np.array(first["geometry"]["coordinates"][0])
    mx0, my0, mx1, my1 = boxes_to_map(boxes[:1], transform)[0]
    np.testing.assert_allclose(ring.min(0), [mx0, my0])
    np.testing.assert_allclose(ring.max(0), [mx1, my1])
    signed = np.sum(ring[:-1, 0] * ring[1:, 1] - ring[1:, 0] * ring[:-1, 1])
    assert signed > 0  # counterclockwise exterior ring (RFC 7946)

    geo = json.loads(
        write_boxes_geojson(
            tmp_path / "w.geojson", boxes, transform=transform, crs=crs, labels=[1, 2], wgs84=True
        ).read_text()
    )
    assert "crs" not in geo
    lonlat = np.array(geo["features"][0]["geometry"]["coordinates"][0])
    assert np.all((lonlat[:, 0] > 13) & (lonlat[:, 0] < 17))  # Slovenia
    assert np.all((lonlat[:, 1] > 45) & (lonlat[:, 1] < 47))


def test_geojson_bad_input(tmp_path: Path) -> None:
    from affine import Affine

    with pytest.raises(ValueError, match="2 boxes but 1 labels"):
        write_boxes_geojson(
            tmp_path / "x.geojson",
            np.zeros((2, 4)),
            transform=Affine.identity(),
            crs="EPSG:32633",
            labels=[1],
        )
    with pytest.raises(ValueError, match="no CRS"):
        write_boxes_geojson(
            tmp_path / "x.geojson",
            np.zeros((1, 4)),
            transform=Affine.identity(),
            crs=None,
            labels=[1],
        )
    assert not (tmp_path / "x.geojson").exists()
