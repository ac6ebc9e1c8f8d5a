"""check_same_grid / open_aligned on the real Sentinel-2 and Landsat GeoTIFFs: grid mismatches
naming both files, reprojection onto one lattice, pickling."""

from __future__ import annotations

import pickle
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import rasterio.windows
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import reproject
from rasterio.windows import Window

from domainfm.domains.geospatial.raster_align import check_same_grid, grids_equal, open_aligned
from domainfm.domains.geospatial.raster_header import raster_info
from domainfm.domains.geospatial.raster_read import read_raster

S2_DIR = "geospatial/eolearn_s2_slovenia_patch/s2_l1c_13band"
S2 = f"{S2_DIR}/S2_L1C_2015-07-11.tif"
LANDSAT = "geospatial/rasterio_landsat_rgb/RGB.byte.tif"
SHADE = "geospatial/rasterio_landsat_rgb/shade.tif"


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


def test_grids_equal_within_tolerance(data_root: Path) -> None:
    grid = raster_info(data_root / S2).grid
    assert grids_equal(grid, grid)
    nudged = replace(grid, transform=grid.transform @ Affine.translation(1e-4, 0))
    assert grids_equal(grid, nudged)  # well under GRID_ATOL_PIXELS
    assert not grids_equal(grid, replace(grid, transform=grid.transform @ Affine.translation(1, 0)))
    assert not grids_equal(grid, replace(grid, width=grid.width + 1))
    assert not grids_equal(grid, replace(grid, crs=CRS.from_epsg(3857)))
