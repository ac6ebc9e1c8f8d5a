"""Prepared raster shards: chips of every date of a place with their georeferencing, nodata
chips dropped, band-count mismatches named, and the window sample maker."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch

from domainfm.domains.geospatial import SENTINEL2_L1C_BANDS, read_raster
from domainfm.domains.geospatial.shards import ChipPreparer, ChipWindows

S2 = "geospatial/eolearn_s2_slovenia_patch/s2_l1c_13band"
LANDSAT = "geospatial/rasterio_landsat_rgb/RGB.byte.tif"


def _starts(length: int, size: int) -> list[int]:
    """The documented chip grid: every ``size`` pixels, the last chip ending on the edge."""
    return [0] if length <= size else [*range(0, length - size, size), length - size]


def _s2_dates(data_root: Path) -> dict[str, str]:
    with open(data_root / S2 / "dates.csv") as handle:
        return {row["file"]: row["acquisition_datetime"] for row in csv.DictReader(handle)}


def _landsat_items(data_root: Path) -> list[dict[str, Any]]:
    preparer = ChipPreparer(chip_size=64, min_valid=0.5)
    return list(preparer.items((data_root / LANDSAT,)))


def test_s2_dates_are_one_source_of_georeferenced_chips(data_root: Path) -> None:
    """The 5 dates of the patch are one source in date order; every chip at every date is
    the file's window at the item's transform, with the file's CRS and the dates."""
    files = sorted((data_root / S2).glob("S2_L1C_*.tif"))
    dates = _s2_dates(data_root)
    expected_order = sorted(files, key=lambda f: dates[f.name])
    preparer = ChipPreparer(chip_size=32, band_names=SENTINEL2_L1C_BANDS)
    sources = preparer.sources(data_root / S2)
    assert sources == [tuple(expected_order)]
    items = list(preparer.items(sources[0]))

    with rasterio.open(files[0]) as ds:
        grid, crs, height, width = ds.transform, ds.crs.to_wkt(), ds.height, ds.width
    positions = []
    for item in items:
        a, b, c, d, e, f = item["transform"]
        assert (a, b, d, e) == pytest.approx((grid.a, grid.b, grid.d, grid.e))
        col, row = (c - grid.c) / grid.a, (f - grid.f) / grid.e
        assert col == pytest.approx(round(col), abs=1e-6) and row == pytest.approx(round(row))
        row, col = round(row), round(col)
        positions.append((row, col))
        assert item["crs"] == crs
        assert [day[:19] for day in json.loads(item["dates"])] == [
            dates[p.name] for p in expected_order
        ]
        assert json.loads(item["bands"]) == list(SENTINEL2_L1C_BANDS)
        assert item["chip"].shape == (5, 13, 32, 32) and item["valid"].shape == (5, 32, 32)
        for t, path in enumerate(expected_order):
            ref = read_raster(path, (row, col, 32, 32), boundless=True, require_valid=False)
            np.testing.assert_array_equal(item["chip"][t], ref.array)
            np.testing.assert_array_equal(item["valid"][t], ref.mask.astype(np.uint8))
    rows, cols = _starts(height, 32), _starts(width, 32)
    assert sorted(positions) == [(r, c) for r in rows for c in cols]


def test_nodata_chips_are_dropped(data_root: Path) -> None:
    """RGB.byte.tif (nodata 0 borders): exactly the grid chips with >= half valid pixels are
    kept, with the file's validity."""
    with rasterio.open(data_root / LANDSAT) as ds:
        assert ds.nodata == 0
        valid = ds.dataset_mask() > 0  # (H, W): GDAL's mask, the (0, 0, 0) border invalid
        height, width = ds.height, ds.width
    expected = [
        (r, c)
        for r in _starts(height, 64)
        for c in _starts(width, 64)
        if valid[r : r + 64, c : c + 64].mean() >= 0.5
    ]
    items = _landsat_items(data_root)
    assert 0 < len(items) == len(expected) < len(_starts(height, 64)) * len(_starts(width, 64))
    with rasterio.open(data_root / LANDSAT) as ds:
        grid = ds.transform
    got = []
    for item in items:
        _, _, c, _, _, f = item["transform"]
        r, col = round((f - grid.f) / grid.e), round((c - grid.c) / grid.a)
        got.append((r, col))
        assert item["valid"].shape == (1, 64, 64) and item["valid"].any()
        np.testing.assert_array_equal(item["valid"][0], valid[r : r + 64, col : col + 64])
        assert np.all(item["chip"][0][:, ~valid[r : r + 64, col : col + 64]] == 0)
    assert sorted(got) == sorted(expected)


def test_band_count_mismatch_names_the_file(data_root: Path, tmp_path: Path) -> None:
    """A 3-band raster in a dataset of 13 S2 bands is its own source and fails, named."""
    (tmp_path / "rgb.tif").symlink_to(data_root / LANDSAT)
    preparer = ChipPreparer(chip_size=32, band_names=SENTINEL2_L1C_BANDS)
    assert preparer.sources(tmp_path) == [(tmp_path / "rgb.tif",)]
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "rgb.tif"))):
        list(preparer.items((tmp_path / "rgb.tif",)))


def _normalized(chip: np.ndarray, valid: np.ndarray, mean: list[float], std: list[float]):
    """(x - mean) / std per band, invalid pixels 0 (numpy, float64)."""
    out = (chip.astype(np.float64) - np.asarray(mean)[:, None, None]) / np.asarray(std)[
        :, None, None
    ]
    return np.where(valid[None].astype(bool), out, 0.0)


def test_windows_are_normalized_with_invalid_pixels_zero(data_root: Path) -> None:
    """views=1: the window is a normalized part of the chip, invalid pixels 0."""
    item = next(i for i in _landsat_items(data_root) if 0.5 < i["valid"].mean() < 0.99)
    mean, std = [40.0, 50.0, 60.0], [20.0, 25.0, 30.0]
    full = ChipWindows(size=64, mean=mean, std=std)
    sample = full(item, torch.Generator().manual_seed(0))
    expected = _normalized(item["chip"][0], item["valid"][0], mean, std)
    np.testing.assert_allclose(sample["input"].numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(sample["valid"][0].numpy(), item["valid"][0].astype(bool))

    small = ChipWindows(size=16, mean=mean, std=std)
    sample = small(item, torch.Generator().manual_seed(3))
    assert sample["input"].shape == (3, 16, 16)
    matches = [
        (r, c)
        for r in range(49)
        for c in range(49)
        if np.allclose(sample["input"].numpy(), expected[:, r : r + 16, c : c + 16], atol=1e-5)
        and np.array_equal(sample["valid"][0].numpy(), item["valid"][0, r : r + 16, c : c + 16])
    ]
    assert matches, "the window is no part of the normalized chip"
    again = small(item, torch.Generator().manual_seed(3))
    assert torch.equal(again["input"], sample["input"])


def test_two_views_are_one_window_at_two_dates(data_root: Path) -> None:
    """views=2 gives the same window at two different dates; a 1-date chip is refused."""
    preparer = ChipPreparer(chip_size=32, band_names=SENTINEL2_L1C_BANDS)
    (source,) = preparer.sources(data_root / S2)
    item = next(iter(preparer.items(source)))
    mean = [float(m) for m in item["chip"].mean(axis=(0, 2, 3))]
    std = [float(s) for s in item["chip"].std(axis=(0, 2, 3))]
    maker = ChipWindows(size=16, mean=mean, std=std, views=2)
    normalized = [_normalized(item["chip"][t], item["valid"][t], mean, std) for t in range(5)]
    for seed in range(4):
        sample = maker(item, torch.Generator().manual_seed(seed))
        found: dict[str, set[tuple[int, int, int]]] = {"view1": set(), "view2": set()}
        for key in found:
            view = sample[key].numpy()
            for t, r, c in np.ndindex(5, 17, 17):
                if np.allclose(view, normalized[t][:, r : r + 16, c : c + 16], atol=1e-4):
                    found[key].add((t, r, c))
        pairs = [
            (a, b) for a in found["view1"] for b in found["view2"] if a[1:] == b[1:] and a != b
        ]
        assert pairs, (seed, found)  # one window, two different dates
        assert torch.equal(sample["input"], sample["view1"])
        assert sample["valid"].shape == (1, 16, 16) and bool(sample["valid"].all())

    one_date = {**item, "chip": item["chip"][:1], "valid": item["valid"][:1]}
    with pytest.raises(ValueError, match="1 date"):
        maker(one_date, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="views"):
        ChipWindows(size=16, mean=mean, std=std, views=3)


def test_a_mostly_nodata_date_is_dropped_from_its_chip(tmp_path: Path) -> None:
    """A date with less than min_valid valid pixels in a chip is left out of that chip (and
    its dates); a chip invalid at every date is not written."""
    transform = rasterio.transform.from_origin(500000.0, 4000000.0, 10.0, 10.0)
    first = np.arange(64, dtype=np.float32).reshape(1, 8, 8) + 1.0
    second = first + 100.0
    second[:, :, :4] = -9999.0  # left half nodata on the second date
    first[:, 4:, 4:] = -9999.0  # bottom-right quarter nodata on both dates
    second[:, 4:, 4:] = -9999.0
    for name, data in (("scene_2020-01-01.tif", first), ("scene_2020-02-01.tif", second)):
        with rasterio.open(
            tmp_path / name, "w", driver="GTiff", width=8, height=8, count=1,
            dtype="float32", crs="EPSG:32633", transform=transform, nodata=-9999.0,
        ) as ds:  # fmt: skip
            ds.write(data)
    preparer = ChipPreparer(chip_size=4, min_valid=0.5)
    (source,) = preparer.sources(tmp_path)
    items = {(i["transform"][5], i["transform"][2]): i for i in preparer.items(source)}
    top, left = 4000000.0, 500000.0
    assert sorted(items) == [(top - 40.0, left), (top, left), (top, left + 40.0)]
    for (y, x), item in items.items():
        row, col = round((top - y) / 10.0), round((x - left) / 10.0)
        kept = [first] if col == 0 else [first, second]
        days = [day[:10] for day in json.loads(item["dates"])]
        assert days == ["2020-01-01", "2020-02-01"][: len(kept)]
        expected = np.stack([k[:, row : row + 4, col : col + 4] for k in kept])
        np.testing.assert_array_equal(item["chip"], expected)
        assert item["valid"].all()


def test_series_and_band_group_cubes_follow_the_dates(data_root: Path) -> None:
    """time_steps=3 gives 3 of the chip's dates in date order as (C, T, s, s); with band
    groups the same series laid out as SatMAE's cube; too few dates are refused."""
    from domainfm.domains.geospatial.spectral_temporal import band_group_cube

    preparer = ChipPreparer(chip_size=32, band_names=SENTINEL2_L1C_BANDS)
    item = next(iter(preparer.items(preparer.sources(data_root / S2)[0])))
    mean, std = [0.1] * 13, [0.05] * 13
    series = ChipWindows(size=32, mean=mean, std=std, time_steps=3)
    out = series(item, torch.Generator().manual_seed(1))["input"]
    assert out.shape == (13, 3, 32, 32)
    picked = []
    for t in range(3):
        found = [
            k
            for k in range(item["chip"].shape[0])
            if np.allclose(
                out[:, t].numpy(),
                _normalized(item["chip"][k], item["valid"][k], mean, std),
                atol=1e-5,
            )
        ]
        assert len(found) == 1
        picked += found
    assert picked == sorted(picked) and len(set(picked)) == 3  # distinct dates, in order

    groups = [["B02", "B03", "B04"], ["B08"], ["B11", "B12"]]
    cube = ChipWindows(
        size=32,
        mean=mean,
        std=std,
        time_steps=3,
        band_names=SENTINEL2_L1C_BANDS,
        band_groups=groups,
    )(item, torch.Generator().manual_seed(1))["input"]
    expected = band_group_cube(out.transpose(0, 1), SENTINEL2_L1C_BANDS, groups)
    torch.testing.assert_close(cube, expected)

    one_date = {**item, "chip": item["chip"][:2], "valid": item["valid"][:2]}
    with pytest.raises(ValueError, match="2 date"):
        series(one_date, torch.Generator().manual_seed(0))
