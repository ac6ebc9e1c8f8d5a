from __future__ import annotations

from pathlib import Path

import pytest
import torch

from domainfm.core.masking import MaskingSpec
from domainfm.domains.geospatial import (
    LANDSAT_RGB,
    SENTINEL2_L1C_BANDS,
    RasterPretrainDataModule,
    RasterWindowDataset,
    compute_band_stats,
    read_raster,
)

S2 = "geospatial/eolearn_s2_slovenia_patch/s2_l1c_13band"
LANDSAT = "geospatial/rasterio_landsat_rgb/RGB.byte.tif"


def _s2(data_root: Path) -> list[Path]:
    return sorted((data_root / S2).glob("S2_L1C_*.tif"))


def test_temporal_pairs_are_the_same_window_on_two_dates(data_root: Path) -> None:
    files = _s2(data_root)
    stats = compute_band_stats(files, band_names=SENTINEL2_L1C_BANDS)
    ds = RasterWindowDataset(
        files=files, size=16, band_names=SENTINEL2_L1C_BANDS, stats=stats, views=2
    )
    assert len(ds.groups) == 1 and len(ds.groups[0]) == 5  # one place, five dates
    sample = ds[(0, 11)]
    assert sample["view1"].shape == sample["view2"].shape == (13, 16, 16)
    assert torch.equal(ds[(0, 11)]["view2"], sample["view2"])  # the seed decides everything
    mean = torch.tensor(stats.mean)[:, None, None]
    std = torch.tensor(stats.std)[:, None, None]
    found = []
    for path in files:  # each view is the normalized window of one date, at one position
        full = torch.from_numpy(read_raster(path, band_names=SENTINEL2_L1C_BANDS).array)
        full = (full - mean) / std
        for key in ("view1", "view2"):
            for r in range(full.shape[1] - 15):
                for c in range(full.shape[2] - 15):
                    if torch.allclose(full[:, r : r + 16, c : c + 16], sample[key], atol=1e-5):
                        found.append((key, path.name, r, c))
    keys = {k for k, *_ in found}
    assert keys == {"view1", "view2"}
    (_, d1, r1, c1), (_, d2, r2, c2) = (
        next(f for f in found if f[0] == "view1"),
        next(f for f in found if f[0] == "view2"),
    )
    assert (r1, c1) == (r2, c2) and d1 != d2


def test_nodata_windows_are_redrawn(data_root: Path) -> None:
    ds = RasterWindowDataset(
        files=[data_root / LANDSAT], size=64, band_names=LANDSAT_RGB, min_valid=0.95
    )
    for seed in range(20):
        assert float(ds[(0, seed)]["valid"].float().mean()) >= 0.95
    assert ds.redrawn > 0  # the scene's nodata border is wide: some draws were rejected
    strict = RasterWindowDataset(
        files=[data_root / LANDSAT], size=700, band_names=LANDSAT_RGB, min_valid=1.0, max_tries=3
    )
    with pytest.raises(ValueError, match=r"RGB\.byte\.tif"):
        strict[(0, 0)]


def test_datamodule_globs_files_and_masks_batches(data_root: Path, tmp_path: Path) -> None:
    dm = RasterPretrainDataModule(
        files=[f"{S2}/*.tif"],
        band_names=list(SENTINEL2_L1C_BANDS),
        stats_cache=str(tmp_path / "stats.json"),
        size=32,
        masking=MaskingSpec(patch_size=8),
        batch_size=4,
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["input"].shape == (4, 13, 32, 32) and batch["mask"].shape == (4, 16)
    assert (tmp_path / "stats.json").exists()
    contract = dm.input_contract().to_dict()
    assert contract["bands"] == list(SENTINEL2_L1C_BANDS) and contract["crs"] == "EPSG:32633"
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        RasterPretrainDataModule(files=["geospatial/nothing_here/*.tif"]).setup("fit")


def test_grid_sampling_lists_every_valid_window_of_every_date(data_root: Path) -> None:
    files = _s2(data_root)
    stats = compute_band_stats(files, band_names=SENTINEL2_L1C_BANDS)
    ds = RasterWindowDataset(
        files=files,
        size=32,
        stride=24,
        band_names=SENTINEL2_L1C_BANDS,
        stats=stats,
        sampling="grid",
        samples_per_epoch=3,  # ignored: the grid is the epoch
    )
    per_file = 4 * 4  # 101 rows: 0, 24, 48, 69; 100 cols: 0, 24, 48, 68
    assert len(ds) == len(files) * per_file
    mean = torch.tensor(stats.mean)[:, None, None]
    std = torch.tensor(stats.std)[:, None, None]
    seen = set()
    for i in range(len(ds)):
        _, row, col, (index,) = ds.grid[i]
        seen.add((index, row, col))
        if i % 7 == 0:  # a sample is that window of that date, normalized
            window = read_raster(
                files[index], window=(row, col, 32, 32), band_names=SENTINEL2_L1C_BANDS
            )
            expected = (torch.from_numpy(window.array) - mean) / std
            assert torch.allclose(ds[(i, 123)]["input"], expected, atol=1e-5)
    assert len(seen) == len(ds)
    pairs = RasterWindowDataset(
        files=files,
        size=32,
        stride=24,
        band_names=SENTINEL2_L1C_BANDS,
        stats=stats,
        sampling="grid",
        views=2,
    )
    assert len(pairs) == per_file  # one entry per place and position
    a, _b = pairs[(5, 1)], pairs[(5, 2)]
    assert a["view1"].shape == (13, 32, 32)
    assert not torch.equal(a["view1"], a["view2"])  # two different dates


def test_grid_sampling_drops_nodata_windows(data_root: Path) -> None:
    path = data_root / LANDSAT
    keep_all = RasterWindowDataset(
        files=[path], size=64, band_names=LANDSAT_RGB, sampling="grid", min_valid=0.0
    )
    some = RasterWindowDataset(
        files=[path], size=64, band_names=LANDSAT_RGB, sampling="grid", min_valid=0.9
    )
    assert len(some) < len(keep_all)
    for i in range(len(some)):
        assert float(some[(i, 0)]["valid"].float().mean()) >= 0.9
    with pytest.raises(ValueError, match="sampling='tiles'"):
        RasterWindowDataset(files=[path], size=64, sampling="tiles")  # type: ignore[arg-type]
