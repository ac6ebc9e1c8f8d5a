"""compute_band_stats on the 5 real Sentinel-2 dates and the Landsat scene: agreement with numpy
over all valid pixels, sampling, the JSON cache (no reads when unchanged) and clear errors."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from domainfm.domains.geospatial import (
    LANDSAT_RGB,
    SENTINEL2_L1C_BANDS,
    BandStats,
    compute_band_stats,
    read_raster,
)

S2_DIR = "geospatial/eolearn_s2_slovenia_patch/s2_l1c_13band"
LANDSAT = "geospatial/rasterio_landsat_rgb/RGB.byte.tif"


def _s2_pixels(folder: Path) -> np.ndarray:
    """``(13, N)`` float64: every pixel of the 5 dates (all are valid)."""
    arrays = []
    for path in sorted(folder.glob("S2_L1C_*.tif")):
        with rasterio.open(path) as ds:
            arrays.append(ds.read().reshape(13, -1))
    return np.concatenate(arrays, axis=1).astype(np.float64)


class _CountOpens:
    def __init__(self) -> None:
        self.real = rasterio.open
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.real(*args, **kwargs)


def test_exact_when_the_sample_covers_every_pixel(data_root: Path) -> None:
    pixels = _s2_pixels(data_root / S2_DIR)
    stats = compute_band_stats(data_root / S2_DIR)  # a folder: its 5 .tif files, not dates.csv
    assert stats.band_names == SENTINEL2_L1C_BANDS and stats.reads == 5
    assert stats.count == (5 * 101 * 100,) * 13
    np.testing.assert_allclose(stats.mean, pixels.mean(axis=1), rtol=1e-10)
    np.testing.assert_allclose(stats.std, pixels.std(axis=1), rtol=1e-8)
    p2, p98 = np.percentile(pixels, [2.0, 98.0], axis=1)
    np.testing.assert_allclose(stats.p2, p2, rtol=1e-6)
    np.testing.assert_allclose(stats.p98, p98, rtol=1e-6)


def test_sampling_is_bounded_deterministic_and_close(data_root: Path) -> None:
    pixels = _s2_pixels(data_root / S2_DIR)
    kwargs: dict[str, Any] = {"max_pixels_per_file": 2000, "tile": 16}
    stats = compute_band_stats(data_root / S2_DIR, **kwargs)
    assert all(n == 5 * 2000 for n in stats.count)  # 8 tiles of 16² read, 2000 kept per file
    again = compute_band_stats(data_root / S2_DIR, **kwargs)
    assert again.mean == stats.mean and again.p98 == stats.p98
    other = compute_band_stats(data_root / S2_DIR, seed=1, **kwargs)
    assert other.mean != stats.mean
    std = pixels.std(axis=1)
    assert np.all(np.abs(np.asarray(stats.mean) - pixels.mean(axis=1)) < 0.1 * std)
    assert np.all(np.abs(np.asarray(stats.std) / std - 1) < 0.15)


def test_nodata_pixels_are_left_out(data_root: Path) -> None:
    path = data_root / LANDSAT
    full = read_raster(path)
    valid = full.array[:, full.mask].astype(np.float64)  # (3, n valid)
    stats = compute_band_stats(path, band_names=LANDSAT_RGB, max_pixels_per_file=10**6)
    assert stats.band_names == LANDSAT_RGB
    assert stats.count == (int(full.mask.sum()),) * 3
    np.testing.assert_allclose(stats.mean, valid.mean(axis=1), rtol=1e-10)
    np.testing.assert_allclose(stats.std, valid.std(axis=1), rtol=1e-8)
    assert min(stats.p2) > 0  # the zero border would pull the low percentile to 0
    picked = compute_band_stats(path, bands=["blue"], band_names=LANDSAT_RGB)
    assert picked.band_names == ("blue",)


def test_cache_is_reused_until_a_file_changes(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "s2"
    folder.mkdir()
    for path in sorted((data_root / S2_DIR).glob("S2_L1C_*.tif")):
        shutil.copy2(path, folder / path.name)
    cache = tmp_path / "stats" / "s2.json"
    first = compute_band_stats(folder, cache=cache)
    assert cache.exists() and first.reads == 5

    opens = _CountOpens()
    monkeypatch.setattr(rasterio, "open", opens)
    second = compute_band_stats(folder, cache=cache)
    assert opens.calls == 0 and second.reads == 0  # nothing read: straight from the JSON
    assert second.mean == first.mean and second.p2 == first.p2 and second.count == first.count

    touched = folder / "S2_L1C_2015-08-20.tif"
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    third = compute_band_stats(folder, cache=cache)
    assert third.reads == 5 and opens.calls > 0
    np.testing.assert_allclose(third.mean, first.mean, rtol=1e-12)
    assert BandStats.load(cache).sources == third.sources  # the cache was rewritten

    opens.calls = 0
    compute_band_stats(folder, cache=cache, seed=3)  # other parameters: recomputed
    assert opens.calls > 0


def test_save_load_and_bad_cache(data_root: Path, tmp_path: Path) -> None:
    stats = compute_band_stats(data_root / LANDSAT, band_names=LANDSAT_RGB)
    path = stats.save(tmp_path / "landsat.json")
    loaded = BandStats.load(path)
    assert loaded.band_names == stats.band_names and loaded.mean == stats.mean
    assert loaded.std == stats.std and loaded.count == stats.count
    assert loaded.sources == stats.sources and loaded.params == stats.params
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    with pytest.raises(ValueError, match=r"junk.json is not a band statistics file"):
        BandStats.load(junk)
    redone = compute_band_stats(data_root / LANDSAT, band_names=LANDSAT_RGB, cache=junk)
    assert redone.reads == 1 and BandStats.load(junk).mean == stats.mean
    x = read_raster(data_root / LANDSAT, (300, 300, 8, 8)).array
    z = stats.normalize(x)
    expect = (x - np.asarray(stats.mean, np.float32)[:, None, None]) / np.asarray(
        stats.std, np.float32
    )[:, None, None]
    np.testing.assert_allclose(z, expect, rtol=1e-6)
    with pytest.raises(ValueError, match=r"expected \(3, H, W\)"):
        stats.normalize(x[:2])


def test_mismatched_band_counts_name_both_files(data_root: Path) -> None:
    s2 = sorted((data_root / S2_DIR).glob("S2_L1C_*.tif"))[0]
    with pytest.raises(ValueError, match=r"RGB.byte.tif has 3 bands but .*S2_L1C.*has 13"):
        compute_band_stats([s2, data_root / LANDSAT])
    with pytest.raises(ValueError, match="max_pixels_per_file=0"):
        compute_band_stats(s2, max_pixels_per_file=0)


def test_stats_as_a_standardize_contract_of_any_bands() -> None:
    """``BandStats.contract`` is the typed normalization: its moments are the statistics of
    the bands asked for, in their order, the std floored; unknown bands are named."""
    stats = BandStats(
        band_names=("B02", "B04", "B08"),
        mean=(0.1, 0.2, 0.3),
        std=(0.5, 0.0, 2.0),
        p2=(0.0,) * 3,
        p98=(1.0,) * 3,
        count=(10,) * 3,
    )
    whole = stats.contract()
    assert whole.bands == ["B02", "B04", "B08"] and whole.normalization == {
        "type": "standardize",
        "mean": [0.1, 0.2, 0.3],
        "std": [0.5, 0.0, 2.0],
    }
    picked = stats.contract(["B08", "B04"])
    mean, std = picked.moments()
    assert picked.bands == ["B08", "B04"] and picked.wavelengths_um == [0.842, 0.665]
    assert mean.tolist() == pytest.approx([0.3, 0.2]) and std.tolist() == pytest.approx([2.0, 1e-6])
    with pytest.raises(ValueError, match=r"band statistics have no \['B11'\]"):
        stats.contract(["B04", "B11"])
