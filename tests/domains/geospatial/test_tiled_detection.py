"""detect_raster: objects cut by tile edges are reported once with their full box (tile
ownership + NMS), boxes land at the right map coordinates, nodata drops boxes, the real
Sentinel-2 raster runs through a DetectionModule, and bad inputs fail clearly."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from torch import Tensor

from domainfm.core.vit import VisionTransformerND
from domainfm.domains.geospatial import (
    SENTINEL2_L1C_BANDS,
    boxes_to_map,
    detect_raster,
    mask_boxes,
)
from domainfm.domains.geospatial.tiled_detection import ownership_bounds
from domainfm.domains.geospatial.window_grid import window_starts
from domainfm.tasks.detection_module import DetectionModule

S2 = "geospatial/eolearn_s2_slovenia_patch/s2_l1c_13band/S2_L1C_2015-07-11.tif"
# (row, col, height, width) of bright squares; several straddle tile edges of tile 32 /
# stride 16 (edges at 16, 32, 48, ...), none wider than the 16-px overlap
SQUARES = [(2, 2, 5, 5), (13, 28, 6, 9), (30, 45, 8, 7), (50, 14, 4, 12), (58, 58, 6, 6)]


def _bright_square_detector(threshold: float = 0.5):
    """A stand-in detector: the boxes of the connected bright regions of band 1 of a tile
    (score = the region's mean brightness), as torchvision detections."""

    def detect(x: Tensor) -> list[dict[str, Tensor]]:
        out = []
        for image in x:
            boxes, _ = mask_boxes((image[0] > threshold).long(), classes=[1])
            scores = (
                torch.stack(
                    [image[0, int(b[1]) : int(b[3]), int(b[0]) : int(b[2])].mean() for b in boxes]
                )
                if len(boxes)
                else torch.zeros(0)
            )
            out.append(
                {
                    "boxes": boxes,
                    "labels": torch.ones(len(boxes), dtype=torch.long),
                    "scores": scores,
                }
            )
        return out

    return detect


def _write_squares(path: Path, data_root: Path, nodata_rows: slice | None = None) -> None:
    """A 2-band 64 × 70 raster on the real Sentinel-2 CRS/transform with the SQUARES."""
    with rasterio.open(data_root / S2) as ds:
        crs, transform = ds.crs, ds.transform
    array = np.zeros((2, 64, 70), np.float32)
    for r, c, h, w in SQUARES:
        array[0, r : r + h, c : c + w] = 1.0
    if nodata_rows is not None:
        array[:, nodata_rows] = -9999.0
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=70,
        height=64,
        count=2,
        dtype="float32",
        crs=crs,
        transform=transform,
        nodata=-9999.0,
    ) as dst:
        dst.write(array)


def _expected(squares=SQUARES) -> list[list[float]]:
    return sorted([float(c), float(r), float(c + w), float(r + h)] for r, c, h, w in squares)


@pytest.mark.parametrize("overlap", [0.5, 0.25])
def test_objects_across_tile_edges_are_found_once_whole(
    data_root: Path, tmp_path: Path, overlap: float
) -> None:
    src = tmp_path / "squares.tif"
    _write_squares(src, data_root)
    report: dict = {}
    out = detect_raster(
        _bright_square_detector(),
        src,
        tmp_path / "d.geojson",
        tile=32,
        overlap=overlap,
        batch_size=3,
        report=report,
    )
    data = json.loads(out.read_text())
    got = sorted(f["properties"]["pixel_box"] for f in data["features"])
    assert got == _expected()
    assert report["raw_boxes"] > len(SQUARES)  # tiles did see cut and repeated squares
    with rasterio.open(src) as ds:
        transform = ds.transform
    for feature in data["features"]:
        ring = np.array(feature["geometry"]["coordinates"][0])
        pixel_box = np.array([feature["properties"]["pixel_box"]])
        mx0, my0, mx1, my1 = boxes_to_map(pixel_box, transform)[0]
        np.testing.assert_allclose([*ring.min(0), *ring.max(0)], [mx0, my0, mx1, my1])


def test_boxes_centred_on_nodata_are_dropped(data_root: Path, tmp_path: Path) -> None:
    src = tmp_path / "squares.tif"
    _write_squares(src, data_root, nodata_rows=slice(48, 64))
    out = detect_raster(_bright_square_detector(), src, tmp_path / "d.geojson", tile=32)
    got = sorted(f["properties"]["pixel_box"] for f in json.loads(out.read_text())["features"])
    assert got == _expected([s for s in SQUARES if s[0] + s[2] / 2 < 48])


@pytest.mark.parametrize(
    ("size", "tile", "overlap"), [(100, 32, 0.5), (70, 32, 0.25), (20, 32, 0.0)]
)
def test_ownership_partitions_the_axis(size: int, tile: int, overlap: float) -> None:
    starts = window_starts(size, tile, max(1, int(tile * (1 - overlap))))
    spans = ownership_bounds(starts, tile, size)
    assert spans[0][0] == 0 and spans[-1][1] >= size
    for (_, high), (low, _) in itertools.pairwise(spans):
        assert high == low  # contiguous, no gaps or double ownership
    for start, (low, high) in zip(starts, spans, strict=True):
        assert start <= low < high <= start + tile or size < tile  # owned part is inside


def test_real_sentinel2_with_detection_module(data_root: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    vit = VisionTransformerND(
        in_chans=13, spatial_dims=2, patch_size=8, embed_dim=32, depth=2, num_heads=2
    )
    module = DetectionModule(backbone=vit, num_classes=3, image_size=32, score_threshold=0.0)
    report: dict = {}
    out = detect_raster(
        module,
        data_root / S2,
        tmp_path / "s2.geojson",
        tile=32,
        overlap=0.25,
        band_names=SENTINEL2_L1C_BANDS,
        class_names=["bg", "a", "b"],
        report=report,
    )
    data = json.loads(out.read_text())
    assert data["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32633"
    assert report["tiles"] == 16 and report["boxes"] == len(data["features"]) > 0
    boxes = np.array([f["properties"]["pixel_box"] for f in data["features"]])
    assert boxes.min() >= 0 and boxes[:, 2].max() <= 100 and boxes[:, 3].max() <= 101
    assert {f["properties"]["class_name"] for f in data["features"]} <= {"a", "b"}
    assert module.training  # mode restored


def test_bad_inputs(data_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="GeoJSON"):
        detect_raster(_bright_square_detector(), data_root / S2, tmp_path / "d.tif", tile=32)
    with pytest.raises(ValueError, match=r"S2_L1C_2015-07-11\.tif.*one dict with 'boxes'"):
        detect_raster(lambda x: x, data_root / S2, tmp_path / "d.geojson", tile=32)
    with pytest.raises(ValueError, match="nms_iou"):
        detect_raster(
            _bright_square_detector(), data_root / S2, tmp_path / "d.geojson", tile=32, nms_iou=0.0
        )
    with pytest.raises(FileNotFoundError):
        detect_raster(_bright_square_detector(), tmp_path / "missing.tif", tmp_path / "d.geojson")
    assert not (tmp_path / "d.geojson").exists()
