"""TileSetup on the real Landsat and Sentinel-2 GeoTIFFs: the normalization is the selected
bands' standardize contract (from mean/std or from band statistics), tiles cover the raster
edge to edge and are read in order, the session restores the model's mode, and bad
arguments fail naming what is wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from domainfm.domains.geospatial import (
    LANDSAT_RGB,
    SENTINEL2_L1C_BANDS,
    compute_band_stats,
    read_raster,
)
from domainfm.domains.geospatial.raster_header import open_raster
from domainfm.domains.geospatial.tile_setup import TileSetup

LANDSAT = "geospatial/rasterio_landsat_rgb/RGB.byte.tif"
S2 = "geospatial/eolearn_s2_slovenia_patch/s2_l1c_13band/S2_L1C_2015-07-11.tif"


def _setup(model: object, src: Path, dst: Path, **kwargs: object) -> TileSetup:
    options: dict[str, object] = {
        "tile": 64,
        "overlap": 0.25,
        "batch_size": 4,
        "gdal_cache_mb": 16,
        "bands": None,
        "band_names": None,
        "mean": None,
        "std": None,
        "stats": None,
        "device": None,
        **kwargs,
    }
    return TileSetup.check(model, src, dst, **options)  # type: ignore[arg-type]


def test_normalization_follows_the_given_moments_or_the_stats(
    data_root: Path, tmp_path: Path
) -> None:
    s2 = data_root / S2
    stats = compute_band_stats(s2, band_names=SENTINEL2_L1C_BANDS)
    picked = ["B08", "B04"]
    setup = _setup(
        None, s2, tmp_path / "o.tif", bands=picked, band_names=SENTINEL2_L1C_BANDS, stats=stats
    )
    index = [SENTINEL2_L1C_BANDS.index(b) for b in picked]
    assert setup.names == tuple(picked) and setup.shift.shape == (2, 1, 1)
    assert setup.shift.dtype == np.float32 and setup.scale.dtype == np.float32
    assert np.allclose(setup.shift.ravel(), [stats.mean[i] for i in index], rtol=1e-6)
    assert np.allclose(setup.scale.ravel(), [stats.std[i] for i in index], rtol=1e-6)
    given = _setup(
        None, data_root / LANDSAT, tmp_path / "o.tif", mean=[1.0, 2.0, 3.0], std=[2.0, 0.0, 4.0]
    )
    assert given.shift.ravel().tolist() == [1.0, 2.0, 3.0]
    assert given.scale.ravel().tolist() == pytest.approx([2.0, 1e-6, 4.0])  # std floored
    raw = _setup(None, data_root / LANDSAT, tmp_path / "o.tif")
    assert raw.shift.ravel().tolist() == [0.0] * 3 and raw.scale.ravel().tolist() == [1.0] * 3


def test_tiles_cover_the_raster_and_read_normalized(data_root: Path, tmp_path: Path) -> None:
    src = data_root / LANDSAT
    setup = _setup(
        None,
        src,
        tmp_path / "o.tif",
        tile=100,
        overlap=0.5,
        batch_size=3,
        mean=[60.0] * 3,
        std=[40.0] * 3,
        band_names=LANDSAT_RGB,
    )
    rows, cols = setup.tile_starts()
    assert setup.stride == 50 and rows[0] == 0 and cols[0] == 0
    assert rows[-1] == setup.info.height - 100 and cols[-1] == setup.info.width - 100
    positions = [(r, c) for r in rows[:2] for c in cols[:4]]
    with open_raster(src) as ds:
        batches = list(setup.batches(ds, positions))
    assert [len(b) for b, _, _ in batches] == [3, 3, 2]
    assert [p for b, _, _ in batches for p in b] == positions
    row, col = positions[4]
    tiles, masks = batches[1][1], batches[1][2]
    r = read_raster(src, (row, col, 100, 100), require_valid=False)
    expected = (r.array - 60.0) / 40.0
    expected[:, ~r.mask] = 0.0
    assert tiles.shape == (3, 3, 100, 100) and tiles.dtype == torch.float32
    assert np.allclose(tiles[1].numpy(), expected, atol=1e-6)
    assert np.array_equal(masks[1], r.mask)


def test_session_restores_the_model_mode(data_root: Path, tmp_path: Path) -> None:
    model = nn.Conv2d(3, 2, 1).train()
    setup = _setup(model, data_root / LANDSAT, tmp_path / "o.tif")
    with setup.session(model):
        assert not model.training
    assert model.training
    with pytest.raises(RuntimeError, match="boom"), setup.session(model):
        raise RuntimeError("boom")
    assert model.training


def test_bad_arguments_name_what_is_wrong(data_root: Path, tmp_path: Path) -> None:
    src, dst = data_root / LANDSAT, tmp_path / "o.tif"
    stats = compute_band_stats(data_root / S2, band_names=SENTINEL2_L1C_BANDS)
    with pytest.raises(ValueError, match="batch_size=0"):
        _setup(None, src, dst, batch_size=0)
    with pytest.raises(ValueError, match=r"stats do not fit.*band statistics have no"):
        _setup(None, src, dst, stats=stats)
    with pytest.raises(ValueError, match="either stats= or mean=/std="):
        _setup(None, src, dst, stats=stats, mean=[0.0] * 3, std=[1.0] * 3)
    with pytest.raises(ValueError, match="pass both mean= and std="):
        _setup(None, src, dst, mean=[0.0] * 3)
    with pytest.raises(ValueError, match=r"std=\[1\.0, -1\.0, 1\.0\] must be >= 0"):
        _setup(None, src, dst, mean=[0.0] * 3, std=[1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match=r"mean=\[0\.0, nan, 0\.0\] must be finite"):
        _setup(None, src, dst, mean=[0.0, float("nan"), 0.0], std=[1.0] * 3)
    with pytest.raises(ValueError, match=r"model takes 4 input bands"):
        _setup(nn.Conv2d(4, 2, 1), src, dst)
