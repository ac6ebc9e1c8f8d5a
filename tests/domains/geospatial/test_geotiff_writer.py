"""The streamed GeoTIFF writer: block layout, whole block rows written once, the finisher."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from affine import Affine
from rasterio.crs import CRS

from domainfm.domains.geospatial.geotiff_writer import (
    BlockRowWriter,
    LogitStrip,
    create_prediction_geotiff,
    output_blocks,
    prediction_finisher,
)
from domainfm.domains.geospatial.raster_header import RasterInfo


def _info(width: int, height: int) -> RasterInfo:
    return RasterInfo(
        path=Path("in.tif"),
        width=width,
        height=height,
        count=1,
        crs=CRS.from_epsg(32633),
        transform=Affine(10.0, 0.0, 465000.0, 0.0, -10.0, 5080000.0),
        res=(10.0, 10.0),
        band_names=("B1",),
        nodata=None,
        dtype="float32",
        scales=(1.0,),
        offsets=(0.0,),
    )


def test_output_blocks() -> None:
    assert output_blocks(1000, 700) == {"tiled": True, "blockxsize": 256, "blockysize": 256}
    assert output_blocks(100, 40) == {"tiled": True, "blockxsize": 96, "blockysize": 32}
    assert output_blocks(100, 15) == {"tiled": False}


class _Recorder:
    """A stand-in dataset recording every ``write`` window."""

    def __init__(self, height: int) -> None:
        self.height = height
        self.rows: list[tuple[int, int]] = []
        self.closed = False

    def write(self, values: np.ndarray, *, window: Any) -> None:
        assert values.shape[1] == window.height
        self.rows.append((int(window.row_off), int(window.height)))

    def close(self) -> None:
        self.closed = True


def test_block_row_writer_writes_whole_block_rows() -> None:
    dataset = _Recorder(height=70)
    writer = BlockRowWriter(dataset=dataset, block_rows=32)
    for n in (10, 30, 20, 10):
        writer.push(np.zeros((1, n, 5), np.uint8))
    writer.close()
    assert dataset.rows == [(0, 32), (32, 32), (64, 6)] and dataset.closed
    assert writer.max_buffered == 40


def test_strip_and_finisher_write_labels(tmp_path: Path) -> None:
    info = _info(width=8, height=6)
    writer = create_prediction_geotiff(
        tmp_path / "out.tif",
        info,
        output="labels",
        num_classes=3,
        class_names=("a", "b", "c"),
        compress=None,
    )
    strip = LogitStrip(
        num_classes=3,
        height=4,
        width=8,
        device=torch.device("cpu"),
        finish=prediction_finisher(writer, "labels"),
    )
    logits = torch.zeros(3, 4, 4)
    logits[2] = 1.0  # class 2 everywhere
    ones = torch.ones(4, 4)
    mask = np.ones((4, 4), dtype=bool)
    mask[0, 0] = False
    for row, col in ((0, 0), (0, 4), (2, 0), (2, 4)):
        if row > strip.origin:
            strip.advance(row)
        strip.add(row, col, logits, ones, mask)
    strip.advance(info.height)
    writer.close()
    with rasterio.open(tmp_path / "out.tif") as ds:
        labels = ds.read(1)
        assert ds.dtypes[0] == "uint8" and ds.nodata == 255 and ds.descriptions == ("labels",)
        assert ds.tags(1)["class_2"] == "c" and ds.crs == info.crs
    expect = np.full((6, 8), 2, np.uint8)
    expect[0, 0] = expect[0, 4] = 255  # invalid in the first row of tiles
    expect[2, 0] = expect[2, 4] = 255  # and in the second (its validity wins)
    np.testing.assert_array_equal(labels, expect)
