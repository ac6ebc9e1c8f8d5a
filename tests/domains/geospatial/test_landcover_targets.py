"""Land-cover class fractions of a window, counted on the land-cover raster's own grid inside
the window's footprint (same grid, another resolution and origin, another CRS), against a
pixel-by-pixel loop; and the data module's per-view vectors on the shipped Slovenia LULC."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.warp
import torch
from affine import Affine
from rasterio.crs import CRS

from domainfm.domains.geospatial.datamodule import RasterPretrainDataModule
from domainfm.domains.geospatial.landcover_targets import LandCoverFractions, LandCoverSpec
from domainfm.domains.geospatial.raster_header import SENTINEL2_L1C_BANDS, Grid
from domainfm.domains.geospatial.windows import RasterWindowDataset

UTM33 = CRS.from_epsg(32633)
IMAGE = Grid(crs=UTM33, transform=Affine(10.0, 0.0, 465000.0, 0.0, -10.0, 5080000.0), width=40,
             height=40)  # fmt: skip
CLASSES = [1, 2, 3, 8]


def _write(path: Path, labels: np.ndarray, crs: CRS, transform: Affine, nodata: int | None) -> Path:
    with rasterio.open(
        path, "w", driver="GTiff", width=labels.shape[1], height=labels.shape[0], count=1,
        dtype="uint16", crs=crs, transform=transform, nodata=nodata,
    ) as dst:  # fmt: skip
        dst.write(labels.astype(np.uint16), 1)
    return path


def _labels(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.choice([0, 1, 2, 2, 3, 8, 9], size=shape)  # 0 unlabeled, 9 nodata


def reference_fractions(
    path: Path, grid: Grid, window: tuple[int, int, int, int], ignore: set[int]
) -> list[float]:
    """Every land-cover pixel in turn: its centre mapped to the image's pixel coordinates
    through both CRSs and transforms, counted when inside the window and labeled."""
    row, col, h, w = window
    counts = dict.fromkeys(CLASSES, 0)
    with rasterio.open(path) as src:
        values, nodata = src.read(1), src.nodata
        for r in range(src.height):
            for c in range(src.width):
                x, y = src.transform @ (c + 0.5, r + 0.5)
                if src.crs != grid.crs:
                    (x,), (y,) = rasterio.warp.transform(src.crs, grid.crs, [x], [y])
                u, v = ~grid.transform @ (x, y)
                value = int(values[r, c])
                inside = col <= u < col + w and row <= v < row + h
                if inside and value != nodata and value not in ignore:
                    counts[value] += 1
    total = sum(counts.values())
    return [counts[k] / total if total else 0.0 for k in CLASSES]


@pytest.mark.parametrize(
    ("name", "crs", "transform", "shape"),
    [
        ("same grid", UTM33, IMAGE.transform, (40, 40)),
        ("5 m, shifted origin", UTM33, Affine(5.0, 0.0, 465012.5, 0.0, -5.0, 5079991.0), (70, 75)),
        ("other CRS", CRS.from_epsg(3857), Affine(12.0, 0.0, 1619530.0, 0.0, -12.0, 5760030.0),
         (60, 60)),
    ],
)  # fmt: skip
def test_fractions_match_a_pixel_loop(
    tmp_path: Path, name: str, crs: CRS, transform: Affine, shape: tuple[int, int]
) -> None:
    path = _write(tmp_path / "lc.tif", _labels(shape), crs, transform, nodata=9)
    cover = LandCoverFractions(file=path, classes=CLASSES, ignore_values=[0])
    assert cover.num_classes == 4
    for window in [(0, 0, 16, 16), (7, 11, 16, 20), (24, 24, 16, 16)]:
        got = cover.fractions(IMAGE, window)
        expected = reference_fractions(path, IMAGE, window, {0})
        assert got.dtype == torch.float32 and got.shape == (4,)
        if sum(expected):  # the footprint holds labeled land cover
            np.testing.assert_allclose(got.numpy(), expected, atol=1e-6, err_msg=name)
            assert abs(float(got.sum()) - 1.0) < 1e-6


def test_same_grid_counts_exactly_the_window_pixels(tmp_path: Path) -> None:
    labels = _labels((40, 40), seed=1)
    path = _write(tmp_path / "lc.tif", labels, UTM33, IMAGE.transform, nodata=9)
    got = LandCoverFractions(file=path, classes=CLASSES).fractions(IMAGE, (4, 6, 10, 12))
    part = labels[4:14, 6:18]
    part = part[(part != 0) & (part != 9)]  # unlabeled and nodata excluded
    expected = [np.mean(part == k) for k in CLASSES]
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-6)


def test_unlabeled_outside_and_unknown(tmp_path: Path) -> None:
    zeros = _write(tmp_path / "zeros.tif", np.zeros((40, 40)), UTM33, IMAGE.transform, None)
    cover = LandCoverFractions(file=zeros, classes=CLASSES)
    assert torch.equal(cover.fractions(IMAGE, (0, 0, 8, 8)), torch.zeros(4))
    far = Grid(crs=UTM33, transform=IMAGE.transform @ Affine.translation(500, 0), width=40,
               height=40)  # fmt: skip
    assert torch.equal(cover.fractions(far, (0, 0, 8, 8)), torch.zeros(4))  # misses the raster
    odd = np.full((40, 40), 5)
    path = _write(tmp_path / "odd.tif", odd, UTM33, IMAGE.transform, None)
    with pytest.raises(ValueError, match=r"values \[5\] are neither classes"):
        LandCoverFractions(file=path, classes=CLASSES).fractions(IMAGE, (0, 0, 8, 8))
    with pytest.raises(ValueError, match="distinct"):
        LandCoverFractions(file=path, classes=[1, 1])
    with pytest.raises(ValueError, match="both classes and ignored"):
        LandCoverFractions(file=path, classes=[0, 1], ignore_values=[0])


S2 = "geospatial/eolearn_s2_slovenia_patch/s2_l1c_13band/*.tif"
LULC = "geospatial/eolearn_s2_slovenia_patch/labels/LULC.tif"


def test_shipped_windows_carry_the_lulc_fractions_of_both_views(data_root: Path) -> None:
    lulc = data_root / LULC
    cover = LandCoverFractions(file=lulc, classes=range(1, 11), ignore_values=[0])
    files = sorted((data_root / S2).parent.glob("*.tif"))
    ds = RasterWindowDataset(
        files=files, size=32, band_names=SENTINEL2_L1C_BANDS, views=2, sampling="grid",
        stride=23, landcover=cover,
    )  # fmt: skip
    with rasterio.open(lulc) as src:
        labels = src.read(1)
    for index in range(0, len(ds), 3):
        _, row, col, _ = ds.grid[index]
        sample = ds[index]
        assert torch.equal(sample["landcover1"], sample["landcover2"])
        part = labels[row : row + 32, col : col + 32]
        part = part[part != 0]
        expected = np.bincount(part, minlength=11)[1:] / part.size
        np.testing.assert_allclose(sample["landcover1"].numpy(), expected, atol=1e-6)


def test_data_module_landcover_option(data_root: Path, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DOMAINFM_DATA", str(data_root))
    module = RasterPretrainDataModule(
        files=[S2], band_names=SENTINEL2_L1C_BANDS, size=32, views=2, samples_per_epoch=8,
        batch_size=4, num_workers=0, stats_cache=str(tmp_path / "stats.json"),
        landcover=LandCoverSpec(file=LULC, classes=list(range(1, 11))),
    )  # fmt: skip
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    assert batch["landcover1"].shape == (4, 10) and batch["view1"].shape == (4, 13, 32, 32)
    torch.testing.assert_close(batch["landcover1"].sum(dim=1), torch.ones(4))
    single = RasterPretrainDataModule(
        files=[S2], band_names=SENTINEL2_L1C_BANDS, size=32, samples_per_epoch=4, batch_size=4,
        num_workers=0, stats_cache=str(tmp_path / "stats.json"),
        landcover=LandCoverSpec(file=LULC, classes=list(range(1, 11))),
    )  # fmt: skip
    single.setup("fit")
    assert next(iter(single.train_dataloader()))["landcover"].shape == (4, 10)
