"""read_raster on the real Sentinel-2 and Landsat GeoTIFFs: windows, bands, validity, and a
clear error for each bad window or file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import rasterio.windows
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from domainfm.domains.geospatial.raster_header import (
    LANDSAT_RGB,
    dataset_info,
    open_raster,
    raster_info,
    resolve_bands,
)
from domainfm.domains.geospatial.raster_read import (
    BandRead,
    merge_validity,
    nodata_pixels,
    read_bands,
    read_dataset_window,
    read_raster,
)

S2_DIR = "geospatial/eolearn_s2_slovenia_patch/s2_l1c_13band"
S2 = f"{S2_DIR}/S2_L1C_2015-07-11.tif"
LANDSAT = "geospatial/rasterio_landsat_rgb/RGB.byte.tif"


def _raw(path: Path) -> tuple[np.ndarray, Affine]:
    with rasterio.open(path) as ds:
        return ds.read(), ds.transform


def _write(path: Path, data: np.ndarray, **profile: Any) -> Path:
    """A small GeoTIFF ``(bands, H, W)`` (EPSG:32633, 10 m pixels unless overridden)."""
    meta = {
        "driver": "GTiff",
        "count": data.shape[0],
        "height": data.shape[1],
        "width": data.shape[2],
        "dtype": data.dtype,
        "crs": CRS.from_epsg(32633),
        "transform": Affine(10.0, 0.0, 465000.0, 0.0, -10.0, 5080000.0),
        **profile,
    }
    with rasterio.open(path, "w", **meta) as ds:
        ds.write(data)
    return path


class _SpyOpen:
    """Wraps ``rasterio.open`` and records the ``window`` of every pixel read."""

    def __init__(self) -> None:
        self.real = rasterio.open
        self.windows: list[Window | None] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        spy = self

        class Proxy:
            def __init__(self, ds: Any) -> None:
                self._ds = ds

            def __getattr__(self, name: str) -> Any:
                return getattr(self._ds, name)

            def __enter__(self) -> Proxy:
                return self

            def __exit__(self, *exc: object) -> None:
                self._ds.close()

            def read(self, *a: Any, **kw: Any) -> Any:
                spy.windows.append(kw.get("window"))
                return self._ds.read(*a, **kw)

            def read_masks(self, *a: Any, **kw: Any) -> Any:
                spy.windows.append(kw.get("window"))
                return self._ds.read_masks(*a, **kw)

        return Proxy(self.real(*args, **kwargs))


@pytest.mark.parametrize("name", [S2, LANDSAT])
def test_window_equals_slice_of_full_read(data_root: Path, name: str) -> None:
    path = data_root / name
    raw, transform = _raw(path)
    full = read_raster(path, fill=-1.0)
    assert full.array.dtype == np.float32 and full.array.shape == raw.shape
    np.testing.assert_array_equal(full.array[:, full.mask], raw[:, full.mask].astype(np.float32))
    window = Window(col_off=41, row_off=57, width=33, height=29)
    for spec in (window, (57, 41, 29, 33)):  # a Window, or (row_off, col_off, height, width)
        part = read_raster(path, spec, fill=-1.0, require_valid=False)
        assert part.array.shape == (raw.shape[0], 29, 33) and part.window == window
        np.testing.assert_array_equal(part.array, full.array[:, 57:86, 41:74])
        np.testing.assert_array_equal(part.mask, full.mask[57:86, 41:74])
        assert part.transform == rasterio.windows.transform(window, transform)
        assert part.crs == full.crs and part.path == path


def test_only_the_window_is_read(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = _SpyOpen()
    monkeypatch.setattr(rasterio, "open", spy)
    read_raster(data_root / LANDSAT, (300, 400, 16, 24))
    assert spy.windows and all(w == Window(400, 300, 24, 16) for w in spy.windows)


def test_landsat_nodata_border_is_masked(data_root: Path) -> None:
    raw, _ = _raw(data_root / LANDSAT)
    r = read_raster(data_root / LANDSAT, fill=-1.0)
    border = (raw == 0).all(axis=0)  # (H, W): the black collar around the scene
    assert 0.2 < border.mean() < 0.5
    np.testing.assert_array_equal(r.mask, ~border)
    assert (r.array[:, border] == -1.0).all()
    np.testing.assert_array_equal(r.array[:, ~border], raw[:, ~border].astype(np.float32))
    # a dark pixel with one zero channel is data, not nodata (GDAL's dataset-mask rule)
    some_zero = (raw == 0).any(axis=0) & ~border
    assert some_zero.any() and r.mask[some_zero].all()


def test_bands_by_name_and_by_index_agree(data_root: Path) -> None:
    path = data_root / LANDSAT
    window = (200, 300, 20, 30)
    by_name = read_raster(path, window, ["blue", "red"], band_names=LANDSAT_RGB)
    by_index = read_raster(path, window, [3, 1], band_names=LANDSAT_RGB)
    assert by_name.band_names == by_index.band_names == ("blue", "red")
    np.testing.assert_array_equal(by_name.array, by_index.array)
    full = read_raster(path, window)
    np.testing.assert_array_equal(by_index.array, full.array[[2, 0]])
    one = read_raster(path, window, 2)
    assert one.array.shape == (1, 20, 30) and one.band_names == ("B2",)
    s2 = data_root / S2
    np.testing.assert_array_equal(
        read_raster(s2, bands=["B8A", "B04"]).array, read_raster(s2, bands=[9, 4]).array
    )


def test_window_errors_and_boundless(data_root: Path) -> None:
    path = data_root / S2
    full = read_raster(path)
    with pytest.raises(ValueError, match=r"reaches outside .*S2_L1C.*101x100 pixels.*boundless"):
        read_raster(path, (-4, 90, 16, 16))
    with pytest.raises(ValueError, match=r"lies outside .*S2_L1C"):
        read_raster(path, (200, 0, 8, 8))
    with pytest.raises(ValueError, match="not on whole pixels"):
        read_raster(path, Window(0.5, 0, 8, 8))
    r = read_raster(path, (-4, 90, 16, 16), boundless=True, fill=7.0)
    assert r.array.shape == (13, 16, 16)
    inside = np.zeros((16, 16), dtype=bool)
    inside[4:, :10] = True  # rows 0..11, cols 90..99 of the raster
    np.testing.assert_array_equal(r.mask, inside)
    np.testing.assert_array_equal(r.array[:, 4:, :10], full.array[:, :12, 90:])
    assert (r.array[:, ~inside] == 7.0).all()
    assert r.transform == rasterio.windows.transform(Window(90, -4, 16, 16), full.transform)
    with pytest.raises(ValueError, match=r"S2_L1C_2015-07-11.tif has no valid pixel"):
        read_raster(path, (200, 0, 8, 8), boundless=True)


def test_missing_crs(tmp_path: Path) -> None:
    path = _write(tmp_path / "no_crs.tif", np.ones((1, 8, 8), np.float32), crs=None)
    for call in (raster_info, read_raster):
        with pytest.raises(ValueError, match=r"no_crs.tif has no CRS"):
            call(path)


def test_all_nodata_raster_and_window(tmp_path: Path, data_root: Path) -> None:
    path = _write(tmp_path / "empty.tif", np.zeros((2, 8, 8), np.uint8), nodata=0)
    with pytest.raises(ValueError, match=r"empty.tif has no valid pixel"):
        read_raster(path)
    r = read_raster(path, require_valid=False)
    assert not r.mask.any() and (r.array == 0).all()
    with pytest.raises(ValueError, match=r"RGB.byte.tif has no valid pixel"):
        read_raster(data_root / LANDSAT, (0, 0, 10, 10))  # the nodata corner


def test_scale_offset_nan_and_internal_mask(tmp_path: Path) -> None:
    data = np.arange(2 * 6 * 5, dtype=np.float32).reshape(2, 6, 5)
    data[1, 2, 3] = np.nan
    path = tmp_path / "scaled.tif"
    _write(path, data)
    with rasterio.open(path, "r+") as ds:
        ds.scales = (2.0, 0.5)
        ds.offsets = (1.0, -3.0)
        keep = np.full((6, 5), 255, np.uint8)
        keep[0, :] = 0  # the file's own mask hides the first row
        ds.write_mask(keep)
    r = read_raster(path, fill=0.0)
    expect = data * np.array([2.0, 0.5], np.float32)[:, None, None]
    expect += np.array([1.0, -3.0], np.float32)[:, None, None]
    valid = np.ones((6, 5), dtype=bool)
    valid[0, :] = False
    valid[2, 3] = False
    np.testing.assert_array_equal(r.mask, valid)
    np.testing.assert_allclose(r.array[:, valid], expect[:, valid])
    assert (r.array[:, ~valid] == 0).all()  # the NaN is replaced too


def test_read_layer_on_an_open_dataset_matches_read_raster(data_root: Path) -> None:
    path = data_root / LANDSAT
    window = (300, 50, 40, 50)  # partly in the nodata collar on the left
    with open_raster(path) as ds:
        info = dataset_info(path, ds, LANDSAT_RGB)
        indexes = resolve_bands(info, ["blue", "green"])
        read = read_dataset_window(path, ds, info, window, indexes, ("blue", "green"), False, None)
    assert isinstance(read, BandRead)
    assert read.values.shape == read.valid.shape == (2, 40, 50)
    merged = merge_validity(path, read, fill=-1.0, require_valid=True)
    expect = read_raster(path, window, ["blue", "green"], band_names=LANDSAT_RGB, fill=-1.0)
    np.testing.assert_array_equal(merged.array, expect.array)
    np.testing.assert_array_equal(merged.mask, expect.mask)
    assert 0 < merged.mask.mean() < 1 and merged.band_names == ("blue", "green")
    assert merged.transform == expect.transform
    same = read_bands(path, window, [3, 2], band_names=LANDSAT_RGB)
    np.testing.assert_array_equal(same.valid, read.valid)


def test_nodata_pixels_follow_the_dataset_mask_rule() -> None:
    raw = np.array([[[0, 0, 5]], [[0, 7, 0]]], dtype=np.uint8)  # (2 bands, 1, 3)
    np.testing.assert_array_equal(nodata_pixels(raw, [0, 0]), [[True, False, False]])
    np.testing.assert_array_equal(nodata_pixels(raw, [0, None]), [[True, True, False]])
    np.testing.assert_array_equal(nodata_pixels(raw, [None, None]), [[False, False, False]])
    np.testing.assert_array_equal(nodata_pixels(raw, [-1, 0]), [[False, False, False]])
