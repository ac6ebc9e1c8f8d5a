"""read_raster / raster_info / open_aligned on the real Sentinel-2 and Landsat GeoTIFFs, and a
clear error for each bad input."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import rasterio.shutil
import rasterio.windows
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import reproject
from rasterio.windows import Window

from domainfm.domains.geospatial import (
    LANDSAT_RGB,
    SENTINEL2_L1C_BANDS,
    check_same_grid,
    open_aligned,
    raster_info,
    read_raster,
)

S2_DIR = "geospatial/eolearn_s2_slovenia_patch/s2_l1c_13band"
S2 = f"{S2_DIR}/S2_L1C_2015-07-11.tif"
LANDSAT = "geospatial/rasterio_landsat_rgb/RGB.byte.tif"
SHADE = "geospatial/rasterio_landsat_rgb/shade.tif"


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


def test_mismatched_crs_names_both_files(data_root: Path) -> None:
    paths = [data_root / LANDSAT, data_root / SHADE]
    pattern = r"shade.tif and .*RGB.byte.tif have different CRSs: EPSG:3857 vs EPSG:32618"
    with pytest.raises(ValueError, match=pattern):
        open_aligned(paths)
    with pytest.raises(ValueError, match=pattern):
        check_same_grid([raster_info(p) for p in paths])


def test_reprojected_read_is_on_the_target_grid(data_root: Path) -> None:
    stack = open_aligned([data_root / LANDSAT, data_root / SHADE], reproject=True)
    landsat = raster_info(data_root / LANDSAT)
    assert stack.crs == landsat.crs and stack.res == landsat.res
    first = stack.read(0, (300, 300, 16, 16))  # on its own grid already: read directly
    np.testing.assert_array_equal(
        first.array, read_raster(data_root / LANDSAT, (300, 300, 16, 16)).array
    )
    shade = stack.read(1)
    grid = stack.grids[1]
    assert shade.crs == landsat.crs and shade.transform == grid.transform
    assert shade.array.shape == (1, grid.height, grid.width)
    rx, ry = landsat.res
    cols = (shade.transform.c - landsat.transform.c) / rx  # whole pixels from Landsat's origin
    rows = (landsat.transform.f - shade.transform.f) / ry
    assert abs(cols - round(cols)) < 1e-6 and abs(rows - round(rows)) < 1e-6
    assert (shade.transform.a, shade.transform.e) == pytest.approx((rx, -ry))
    # reference: the whole shade.tif warped onto the same grid by rasterio.warp.reproject
    with rasterio.open(data_root / SHADE) as src:
        expect = np.full((grid.height, grid.width), 255, dtype=np.uint8)
        reproject(
            rasterio.band(src, 1),
            expect,
            dst_transform=grid.transform,
            dst_crs=grid.crs,
            dst_nodata=255,
            resampling=Resampling.nearest,
        )
    np.testing.assert_array_equal(shade.mask, expect != 255)
    np.testing.assert_array_equal(shade.array[0][shade.mask], expect[shade.mask])
    # a window of the warped file equals the slice of the warped whole
    part = stack.read(1, (10, 12, 8, 9), require_valid=False)
    np.testing.assert_array_equal(part.array, shade.array[:, 10:18, 12:21])
    assert part.transform == rasterio.windows.transform(Window(12, 10, 9, 8), grid.transform)


def test_reprojection_of_data_without_nodata_masks_the_warped_edge(data_root: Path) -> None:
    stack = open_aligned([data_root / SHADE, data_root / S2], reproject=True)
    s2 = stack.read(1)
    assert s2.crs.to_epsg() == 3857 and s2.array.shape[0] == 13
    assert 0.9 < s2.mask.mean() < 1.0  # a rotated footprint: corners lie outside the source
    assert (s2.array[:, ~s2.mask] == 0).all()


def test_same_grid_s2_dates_and_pickling(data_root: Path, tmp_path: Path) -> None:
    paths = sorted((data_root / S2_DIR).glob("S2_L1C_*.tif"))
    assert len(paths) == 5
    check_same_grid([raster_info(p) for p in paths])
    stack = pickle.loads(pickle.dumps(open_aligned(paths)))  # paths and numbers only
    np.testing.assert_array_equal(
        stack.read(3, (5, 6, 7, 8)).array, read_raster(paths[3], (5, 6, 7, 8)).array
    )
    # a crop 10 rows / 20 columns into the tile: same lattice, other extent
    full = read_raster(paths[0])
    shifted = full.transform @ Affine.translation(20, 10)
    crop = _write(
        tmp_path / "crop.tif",
        full.array[:, 10:60, 20:70],
        crs=full.crs,
        transform=shifted,
    )
    with pytest.raises(ValueError, match=r"crop.tif and .*S2_L1C.*not on the same grid"):
        check_same_grid([raster_info(paths[0]), raster_info(crop)])
    pair = open_aligned([paths[0], crop])
    place = pair.grids[0].transform @ (25, 15)  # pixel (row 15, col 25) of the tile
    bounds = (place[0], place[1] - 4 * pair.res[1], place[0] + 4 * pair.res[0], place[1])
    window = pair.window_for(1, bounds)
    assert window == Window(5, 5, 4, 4)
    np.testing.assert_array_equal(pair.read(1, window).array, full.array[:, 15:19, 25:29])
    half = _write(
        tmp_path / "half.tif",
        full.array[:, :8, :8],
        crs=full.crs,
        transform=full.transform @ Affine.translation(0.5, 0),
    )
    with pytest.raises(ValueError, match=r"half.tif and .*not pixel-aligned"):
        open_aligned([paths[0], half])
    with pytest.raises(ValueError, match=r"crs='EPSG:3857'.*reproject=True"):
        open_aligned(paths, crs="EPSG:3857")
