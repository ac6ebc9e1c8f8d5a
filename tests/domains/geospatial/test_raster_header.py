"""raster_info / band selection on the real Sentinel-2 and Landsat GeoTIFFs, and a clear error
for each unreadable file."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import rasterio
import rasterio.shutil

from domainfm.domains.geospatial.raster_header import LANDSAT_RGB, SENTINEL2_L1C_BANDS, raster_info
from domainfm.domains.geospatial.raster_read import read_raster

S2_DIR = "geospatial/eolearn_s2_slovenia_patch/s2_l1c_13band"
S2 = f"{S2_DIR}/S2_L1C_2015-07-11.tif"
LANDSAT = "geospatial/rasterio_landsat_rgb/RGB.byte.tif"


def test_raster_info_reads_the_header(data_root: Path) -> None:
    info = raster_info(data_root / S2)
    assert (info.width, info.height, info.count) == (100, 101, 13)
    assert info.crs.to_epsg() == 32633 and info.dtype == "float32" and info.nodata is None
    assert info.band_names == SENTINEL2_L1C_BANDS  # from the file's band descriptions
    assert info.res == pytest.approx((9.99479222007154, 9.997448467363668))
    assert info.scales == (1.0,) * 13 and info.offsets == (0.0,) * 13
    landsat = raster_info(data_root / LANDSAT)
    assert landsat.band_names == ("B1", "B2", "B3")  # no descriptions: B1.. by index
    assert landsat.nodata == 0.0 and landsat.dtype == "uint8" and landsat.crs.to_epsg() == 32618
    named = raster_info(data_root / LANDSAT, band_names=LANDSAT_RGB)
    assert named.band_names == LANDSAT_RGB


def test_band_selection_errors(data_root: Path) -> None:
    path = data_root / S2
    with pytest.raises(ValueError, match=r"band index 0 is out of range.*S2_L1C.*1-based"):
        read_raster(path, bands=[0])
    with pytest.raises(ValueError, match=r"band index 14 is out of range.*13 bands"):
        read_raster(path, bands=[1, 14])
    with pytest.raises(ValueError, match=r"S2_L1C_2015-07-11.tif has no band named 'B8'.*'B8A'"):
        read_raster(path, bands=["B04", "B8"])
    with pytest.raises(ValueError, match="mixes band indices and band names"):
        read_raster(path, bands=[4, "B03"])
    with pytest.raises(ValueError, match=r"has 3 names but .*S2_L1C_2015-07-11.tif has 13 bands"):
        read_raster(path, band_names=LANDSAT_RGB)


def test_missing_and_corrupt_files(tmp_path: Path, data_root: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere\.tif does not exist"):
        read_raster(tmp_path / "nowhere.tif")
    # a real GeoTIFF cut in half: its directory (at the end of this file) is gone
    cut = tmp_path / "cut.tif"
    shutil.copy(data_root / S2, cut)
    os.truncate(cut, os.path.getsize(cut) // 2)
    for call in (raster_info, read_raster):
        with pytest.raises(ValueError, match=r"cut.tif: could not open .*truncated, corrupt"):
            call(cut)
    # a copy with its directory first: the header opens, the pixels are gone
    head = tmp_path / "head_first.tif"
    rasterio.shutil.copy(data_root / LANDSAT, head, driver="GTiff")
    os.truncate(head, os.path.getsize(head) // 2)
    assert raster_info(head).count == 3
    with pytest.raises(ValueError, match=r"head_first.tif: could not read its pixels.*truncated"):
        read_raster(head)
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    with pytest.raises(ValueError, match=r"notes.tif: could not open it as a raster"):
        raster_info(text)
