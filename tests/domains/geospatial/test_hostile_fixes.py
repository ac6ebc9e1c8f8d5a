"""Fixes for the hostile-input suite (issue 16) in the geospatial domain: complex-valued
rasters and non-UTF-8 paths are refused naming the file, and a broken ``--date-pattern`` is
refused before anything is read."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine

from domainfm.domains.geospatial import RasterPretrainDataModule, predict_raster, read_raster
from domainfm.domains.geospatial.plugin import GeospatialPlugin
from domainfm.domains.geospatial.raster_header import raster_info
from domainfm.domains.geospatial.shards import ChipPreparer
from domainfm.domains.geospatial.temporal_index import acquisition_date, check_date_pattern

S2 = "geospatial/eolearn_s2_slovenia_patch/s2_l1c_13band/S2_L1C_2015-07-11.tif"


def _geotiff(path: Path, data: np.ndarray) -> Path:
    """A georeferenced GeoTIFF of ``data`` ``(bands, rows, cols)``."""
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype,
        crs="EPSG:32633",
        transform=Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 5_100_000.0),
    ) as ds:
        ds.write(data)
    return path


def _identity(x: Any) -> Any:
    return x


def test_complex_pixels_are_refused_naming_the_file(tmp_path: Path) -> None:
    data = (np.ones((2, 16, 16)) + 1j * np.ones((2, 16, 16))).astype(np.complex64)
    path = _geotiff(tmp_path / "slc.tif", data)
    with pytest.raises(ValueError, match=r"slc\.tif has complex-valued pixels \(complex64"):
        raster_info(path)
    with pytest.raises(ValueError, match=r"slc\.tif has complex-valued pixels"):
        read_raster(path)
    with pytest.raises(ValueError, match=r"slc\.tif has complex-valued pixels"):
        predict_raster(_identity, path, tmp_path / "out.tif", tile=16, device="cpu")
    assert not (tmp_path / "out.tif").exists()


def test_real_pixels_still_read(tmp_path: Path) -> None:
    path = _geotiff(tmp_path / "real.tif", np.arange(512, dtype=np.float32).reshape(2, 16, 16))
    assert raster_info(path).dtype == "float32"


@pytest.mark.parametrize("garbage", [False, True])
def test_a_non_utf8_name_is_refused_naming_the_file(
    tmp_path: Path, data_root: Path, garbage: bool
) -> None:
    odd = tmp_path / os.fsdecode(b"sc\xe8ne \xff.tif")
    if garbage:
        odd.write_bytes(b"\x00not a tiff" * 100)
    else:
        odd.write_bytes((data_root / S2).read_bytes())
    with pytest.raises(ValueError, match=r"not valid UTF-8") as err:
        raster_info(odd)
    assert str(odd) in str(err.value)


def test_date_patterns_are_checked() -> None:
    pattern = r"(?P<year>\d{4})(?P<month>\d\d)(?P<day>\d\d)"
    assert check_date_pattern(pattern) == pattern and check_date_pattern(None) is None
    with pytest.raises(ValueError, match=r"date_pattern '\(unclosed' is not a valid regular"):
        check_date_pattern("(unclosed")
    with pytest.raises(ValueError, match=r"has no named group day"):
        check_date_pattern(r"(?P<year>\d{4})(?P<month>\d\d)")


def test_a_broken_date_pattern_is_refused_before_reading(tmp_path: Path) -> None:
    never = tmp_path / "never_read_2020-01-01.tif"
    with pytest.raises(ValueError, match=r"^--date-pattern '\(unclosed' is not a valid"):
        GeospatialPlugin().preparer(_prepare_args(date_pattern="(unclosed"))
    with pytest.raises(ValueError, match=r"date_pattern"):
        ChipPreparer(date_pattern="[")
    with pytest.raises(ValueError, match=r"date_pattern"):
        RasterPretrainDataModule(files=[str(never)], date_pattern="(?P<year>")
    with pytest.raises(ValueError, match=r"date_pattern"):
        acquisition_date(never, pattern="(unclosed")


def _prepare_args(**overrides: Any) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dtype")
    GeospatialPlugin().add_prepare_arguments(parser)
    args = parser.parse_args([])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args
