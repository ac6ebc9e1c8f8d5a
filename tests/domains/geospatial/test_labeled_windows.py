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
    contract = dm.input_contract().to_dict()
    assert contract["bands"] == list(SENTINEL2_L1C_BANDS) and contract["label_map"] == CLASSES


def test_dominant_class_ignores_unlabeled_pixels_and_breaks_ties_low() -> None:
    from domainfm.domains.geospatial.labeled_windows import dominant_class

    assert int(dominant_class(torch.tensor([[0, 0, 0, 3, 3, 2]]))) == 3  # 0 never wins
    assert int(dominant_class(torch.tensor([[5, 5, 2, 2, 0]]))) == 2  # tie -> smaller id
    assert int(dominant_class(torch.zeros(1, 4, 4, dtype=torch.long))) == 0
    assert dominant_class(torch.tensor([[1]])).ndim == 0


def test_scene_labels_are_the_dominant_class_of_the_mask(data_root: Path) -> None:
    import lightning as L

    from domainfm.core.vit import VisionTransformerND
    from domainfm.domains.geospatial.seg_datamodule import RasterSceneDataModule
    from domainfm.tasks.finetune_module import FinetuneModule

    files = sorted((data_root / S2).glob("S2_L1C_*.tif"))
    kwargs = dict(
        images=files,
        label=data_root / LULC,
        size=16,
        label_map=CLASSES,
        band_names=SENTINEL2_L1C_BANDS,
        samples_per_epoch=12,
    )
    masks = LabeledRasterDataset(**kwargs)  # type: ignore[arg-type]
    scenes = LabeledRasterDataset(**kwargs, label_type="scene")  # type: ignore[arg-type]
    found = set()
    for seed in range(12):
        mask, scene = masks[(0, seed)], scenes[(0, seed)]
        assert torch.equal(mask["input"], scene["input"])
        counts = np.bincount(mask["label"].numpy().ravel(), minlength=6)
        counts[0] = 0
        expected = int(np.argmax(counts)) if counts.any() else 0
        assert scene["label"].ndim == 0 and int(scene["label"]) == expected
        found.add(expected)
    assert len(found) >= 2  # the real scene has several dominant covers

    dm = RasterSceneDataModule(
        images=[str(f) for f in files],
        label=str(data_root / LULC),
        size=16,
        band_names=SENTINEL2_L1C_BANDS,
        label_map=CLASSES,
        train_rows=(0, 64),
        val_rows=(69, 101),
        samples_per_epoch=8,
        batch_size=4,
    )
    vit = VisionTransformerND(
        in_chans=13, spatial_dims=2, patch_size=8, embed_dim=32, depth=2, num_heads=4
    )
    module = FinetuneModule(backbone=vit, task="classification", num_classes=6)
    trainer = L.Trainer(
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=dm)
    metrics = trainer.validate(module, datamodule=dm, verbose=False)[0]
    assert {"val/acc", "val/macc"} <= set(metrics)
    assert dm.input_contract().to_dict()["label_type"] == "scene"


def test_box_targets_are_the_patches_of_the_label_window(data_root: Path) -> None:
    from domainfm.domains.geospatial import RasterDetectionDataModule, mask_boxes

    files = sorted((data_root / S2).glob("S2_L1C_*.tif"))
    ds = LabeledRasterDataset(
        images=files,
        label=data_root / LULC,
        size=32,
        band_names=SENTINEL2_L1C_BANDS,
        label_map={4: 1, 8: 2},
        rows=(0, 64),
        samples_per_epoch=8,
        label_type="boxes",
        object_classes=[1, 2],
        min_object_pixels=4,
    )
    raw = read_raster(data_root / LULC).array[0]
    mapped = np.zeros_like(raw, dtype=np.int64)
    mapped[raw == 4], mapped[raw == 8] = 1, 2
    total = 0
    for seed in range(8):
        _, row, col = ds._window((0, seed))
        item = ds[(0, seed)]
        assert set(item) == {"input", "boxes", "labels"} and item["input"].shape == (13, 32, 32)
        window = torch.from_numpy(mapped[row : row + 32, col : col + 32])
        boxes, classes = mask_boxes(window, classes=[1, 2], min_pixels=4)
        torch.testing.assert_close(item["boxes"], boxes)
        assert torch.equal(item["labels"], classes)
        for x0, y0, x1, y1 in item["boxes"].long().tolist():  # each box bounds its class
            assert 0 <= x0 < x1 <= 32 and 0 <= y0 < y1 <= 32
        total += len(boxes)
    assert total > 0
    with pytest.raises(ValueError, match="object_classes"):
        LabeledRasterDataset(images=files, label=data_root / LULC, label_type="boxes")

    dm = RasterDetectionDataModule(
        images=[str(data_root / S2 / "*.tif")],
        label=str(data_root / LULC),
        size=32,
        band_names=SENTINEL2_L1C_BANDS,
        label_map={4: 1, 8: 2},
        object_classes=[1, 2],
        train_rows=(0, 64),
        val_rows=(69, 101),
        samples_per_epoch=8,
        batch_size=4,
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["input"].shape == (4, 13, 32, 32) and len(batch["boxes"]) == 4
    assert dm.input_contract().to_dict()["object_classes"] == [1, 2]
    assert len(next(iter(dm.val_dataloader()))["labels"]) == 4
