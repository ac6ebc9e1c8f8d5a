"""valid_grid_windows on the real Landsat scene (rotated footprint, nodata corners): the
summed-area-table count equals reading every window's mask, strip boundaries do not matter,
and all-nodata windows are dropped."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from domainfm.domains.geospatial import read_raster
from domainfm.domains.geospatial.window_grid import valid_grid_windows, window_starts

LANDSAT = "geospatial/rasterio_landsat_rgb/RGB.byte.tif"


def test_window_starts_cover_the_axis_and_end_on_the_edge() -> None:
    assert window_starts(101, 64, 48) == [0, 37]
    assert window_starts(128, 32, 32) == [0, 32, 64, 96]
    assert window_starts(20, 32, 8) == [0]
    for length, size, stride in [(718, 64, 48), (791, 50, 30), (100, 100, 7)]:
        starts = window_starts(length, size, stride)
        assert starts[0] == 0 and starts[-1] == length - size
        assert all(b - a <= stride for a, b in itertools.pairwise(starts))


def _brute_force(path: Path, size: int, stride: int, min_valid: float) -> list[tuple[int, int]]:
    full = read_raster(path, require_valid=False).mask  # (H, W)
    out = []
    for row in window_starts(full.shape[0], size, stride):
        for col in window_starts(full.shape[1], size, stride):
            count = int(full[row : row + size, col : col + size].sum())
            if count >= min_valid * size * size and (min_valid == 0 or count > 0):
                out.append((row, col))
    return out


@pytest.mark.parametrize("size,stride", [(64, 48), (60, 60), (50, 35)])
def test_counts_equal_reading_every_window(data_root: Path, size: int, stride: int) -> None:
    path = data_root / LANDSAT
    for min_valid in (0.0, 1e-9, 0.5, 1.0):
        expected = _brute_force(path, size, stride, min_valid)
        got = valid_grid_windows(path, size=size, stride=stride, min_valid=min_valid)
        assert got == expected, (size, stride, min_valid)
        small_strips = valid_grid_windows(
            path, size=size, stride=stride, min_valid=min_valid, strip_rows=7
        )
        assert small_strips == expected
    everything = valid_grid_windows(path, size=64, stride=48, min_valid=0.0)
    some_valid = valid_grid_windows(path, size=64, stride=48, min_valid=1e-9)
    assert len(everything) == len(window_starts(718, 64, 48)) * len(window_starts(791, 64, 48))
    assert len(some_valid) < len(everything)  # the scene's nodata corners are dropped


def test_bad_arguments_and_small_rasters(data_root: Path) -> None:
    path = data_root / LANDSAT
    with pytest.raises(ValueError, match="smaller than the window"):
        valid_grid_windows(path, size=1000)
    with pytest.raises(ValueError, match="min_valid=2"):
        valid_grid_windows(path, size=64, min_valid=2)
    with pytest.raises(ValueError, match="stride"):
        valid_grid_windows(path, size=64, stride=0)
