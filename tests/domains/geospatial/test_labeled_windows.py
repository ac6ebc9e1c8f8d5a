from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from domainfm.domains.geospatial import (
    SENTINEL2_L1C_BANDS,
    LabeledRasterDataset,
    RasterSegDataModule,
    read_raster,
)

S2 = "geospatial/eolearn_s2_slovenia_patch/s2_l1c_13band"
LULC = "geospatial/eolearn_s2_slovenia_patch/labels/LULC.tif"
LANDSAT = "geospatial/rasterio_landsat_rgb/RGB.byte.tif"
CLASSES = {1: 1, 2: 2, 3: 3, 4: 4, 8: 5}


def test_windows_pair_bands_with_their_labels(data_root: Path) -> None:
    files = sorted((data_root / S2).glob("S2_L1C_*.tif"))
    ds = LabeledRasterDataset(
        images=files,
        label=data_root / LULC,
        size=16,
        band_names=SENTINEL2_L1C_BANDS,
        label_map=CLASSES,
        rows=(0, 60),
        samples_per_epoch=8,
    )
    raw = read_raster(data_root / LULC).array[0]
    expected_map = np.zeros_like(raw, dtype=np.int64)
    for value, cls in CLASSES.items():
        expected_map[raw == value] = cls
    for seed in range(8):
        image, row, col = ds._window((0, seed))
        assert row >= 0 and row + 16 <= 60  # inside the training rows
        item = ds[(0, seed)]
        assert item["input"].shape == (13, 16, 16) and item["label"].dtype == torch.int64
        np.testing.assert_array_equal(
            item["label"][0].numpy(), expected_map[row : row + 16, col : col + 16]
        )
        bands = read_raster(files[image], window=(row, col, 16, 16)).array
        np.testing.assert_allclose(item["input"].numpy(), bands)  # no stats: raw values
    grid = LabeledRasterDataset(
        images=files[:1],
        label=data_root / LULC,
        size=16,
        rows=(69, 101),
        samples_per_epoch=None,
    )
    rows = sorted({r for _, r, _ in grid.grid})
    assert rows == [69, 85] and len(grid) == 2 * 7  # 100 px wide: 6 strides + an edge window


def test_label_on_another_grid_is_refused(data_root: Path) -> None:
    with pytest.raises(ValueError, match=r"LULC\.tif|RGB\.byte\.tif"):
        LabeledRasterDataset(images=[data_root / LANDSAT], label=data_root / LULC, size=16)


def test_datamodule_records_bands_and_classes(data_root: Path) -> None:
    dm = RasterSegDataModule(
        images=[f"{S2}/*.tif"],
        label=LULC,
        band_names=list(SENTINEL2_L1C_BANDS),
        label_map=CLASSES,
        size=32,
        train_rows=(0, 64),
        val_rows=(69, 101),
        batch_size=4,
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["input"].shape == (4, 13, 32, 32) and batch["label"].shape == (4, 1, 32, 32)
    assert abs(float(batch["input"].mean())) < 1.0  # normalized with the band statistics
    contract = dm.input_contract()
    assert contract["bands"] == list(SENTINEL2_L1C_BANDS) and contract["label_map"] == CLASSES
