"""RasterReader: cached-handle reads equal read_raster, the cache is bounded (LRU), handles
never cross processes (pickling, fork), and bad files still fail with their name."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from domainfm.domains.geospatial import LANDSAT_RGB, SENTINEL2_L1C_BANDS, read_raster
from domainfm.domains.geospatial.raster_reader import RasterReader

S2 = "geospatial/eolearn_s2_slovenia_patch/s2_l1c_13band"
LANDSAT = "geospatial/rasterio_landsat_rgb/RGB.byte.tif"


def test_reads_equal_read_raster(data_root: Path) -> None:
    s2 = sorted((data_root / S2).glob("S2_L1C_*.tif"))[0]
    reader = RasterReader(band_names=SENTINEL2_L1C_BANDS)
    cases = [
        ((0, 0, 32, 32), None, False),
        ((90, 80, 32, 32), ["B08", "B04"], True),
        (None, [2, 3], False),
    ]
    for window, bands, boundless in cases:
        expected = read_raster(
            s2,
            window,
            bands,
            band_names=SENTINEL2_L1C_BANDS,
            boundless=boundless,
            require_valid=False,
        )
        got = reader.read(s2, window, bands, boundless=boundless, require_valid=False)
        assert np.array_equal(got.array, expected.array)
        assert np.array_equal(got.mask, expected.mask)
        assert got.transform == expected.transform and got.band_names == expected.band_names
    landsat = RasterReader(band_names=LANDSAT_RGB)
    corner = landsat.read(data_root / LANDSAT, (0, 0, 16, 16), require_valid=False)
    assert not corner.mask.any()  # nodata corner of the real scene
    with pytest.raises(ValueError, match="no valid pixel"):
        landsat.read(data_root / LANDSAT, (0, 0, 16, 16))


def test_cache_is_bounded_and_handles_stay_in_their_process(data_root: Path) -> None:
    files = sorted((data_root / S2).glob("S2_L1C_*.tif"))[:3]
    reader = RasterReader(max_open=2)
    for f in files:
        reader.read(f, (0, 0, 8, 8))
    assert list(reader._handles) == files[1:]  # the least recently used was closed
    clone = pickle.loads(pickle.dumps(reader))
    assert not clone._handles  # no handle is pickled
    assert np.array_equal(
        clone.read(files[0], (0, 0, 8, 8)).array, reader.read(files[0], (0, 0, 8, 8)).array
    )
    kept = [ds for ds, _ in reader._handles.values()]
    # after a fork the child must not use (or close) the parent's handles
    reader._pid = os.getpid() + 1  # as seen from a forked child
    reader.read(files[2], (0, 0, 8, 8))
    assert len(reader._handles) == 1 and reader._pid == os.getpid()
    assert not any(ds.closed for ds in kept)  # the parent's handles were left alone
    reader.close()
    assert not reader._handles


def test_bad_files_are_named(tmp_path: Path) -> None:
    reader = RasterReader()
    with pytest.raises(FileNotFoundError, match=r"missing\.tif"):
        reader.read(tmp_path / "missing.tif")
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00 not really a tiff")
    with pytest.raises(ValueError, match=r"corrupt\.tif"):
        reader.read(corrupt)
    with pytest.raises(ValueError, match="max_open=0"):
        RasterReader(max_open=0)
