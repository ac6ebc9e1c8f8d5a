"""check_input_scale on the 5 real Sentinel-2 scenes (reflectance 0..1): refused for the
SSL4EO-S12 contract (DN / 10000) with the fix in the message, accepted ×10000; the other
direction, band subsets, masks, tensors, and the mean/std formula."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from domainfm.domains.geospatial.normalization import check_input_scale, normalize_input
from domainfm.domains.geospatial.raster_header import SENTINEL2_L1C_BANDS
from domainfm.domains.geospatial.raster_read import read_raster
from domainfm.domains.geospatial.released import S2_L1C_DN_INPUT

S2_DIR = "geospatial/eolearn_s2_slovenia_patch/s2_l1c_13band"


def _scenes(data_root: Path) -> list[Path]:
    paths = sorted((data_root / S2_DIR).glob("S2_L1C_*.tif"))
    assert len(paths) == 5
    return paths


def test_reflectance_is_refused_and_digital_numbers_accepted(data_root: Path) -> None:
    for path in _scenes(data_root):
        r = read_raster(path)  # float32 TOA reflectance 0..1, (13, 101, 100)
        with pytest.raises(ValueError) as err:
            check_input_scale(r.array, S2_L1C_DN_INPUT, source=path.name, mask=r.mask)
        message = str(err.value)
        assert message.startswith(f"{path.name}: input is in the wrong units")
        assert "divide by 10000" in message and "B02, B03, B04, B08" in message
        assert "Sentinel-2 Level-1C digital numbers" in message
        assert "about 10000x too small" in message and "multiply it by 10000" in message
        assert "(a scale of 10000)" in message
        dn = r.array * 10000.0
        x = check_input_scale(dn, S2_L1C_DN_INPUT, source=path.name, mask=r.mask)
        np.testing.assert_allclose(x, r.array, rtol=1e-6)  # DN / 10000
        assert x.dtype == np.float32


def test_the_rule_is_the_median_of_bright_bands(data_root: Path) -> None:
    r = read_raster(_scenes(data_root)[0])
    bright = r.array[[1, 2, 3, 7]]  # B02, B03, B04, B08 in reflectance
    median = float(np.median(bright))
    lo, _ = S2_L1C_DN_INPUT.extra["scale_check"]["median_range"]
    # scaled so that the median sits just inside / just outside the documented range
    check_input_scale(r.array * 10000 * (lo / median) * 1.01, S2_L1C_DN_INPUT, source="in")
    with pytest.raises(ValueError, match=r"median of the valid pixels .* is 0\.00099"):
        check_input_scale(r.array * 10000 * (lo / median) * 0.99, S2_L1C_DN_INPUT, source="x")
    with pytest.raises(
        ValueError, match=r"about 10000x too large .*: divide it by 10000 .* would then be 0\.07"
    ):
        check_input_scale(r.array * 1e8, S2_L1C_DN_INPUT, source="dn twice")
    # B10 (cirrus, ~0.001) does not drag the median down: only the bright bands count
    assert float(np.median(r.array[10])) < lo * 2


def test_band_subsets_tensors_and_masks(data_root: Path) -> None:
    r = read_raster(_scenes(data_root)[1], bands=["B04", "B08"])
    dn = torch.from_numpy(r.array * 10000)[None].repeat(2, 1, 1, 1)  # (2, 2, H, W)
    x = check_input_scale(dn, S2_L1C_DN_INPUT, source="t", bands=["B04", "B08"])
    assert isinstance(x, torch.Tensor) and x.shape == dn.shape
    torch.testing.assert_close(x, dn / 10000)
    with pytest.raises(ValueError, match="2 bands but 13 band names"):
        check_input_scale(dn, S2_L1C_DN_INPUT, source="t")
    with pytest.raises(ValueError, match=r"bands \['B99'\] are not bands of the contract"):
        check_input_scale(dn[:, :1], S2_L1C_DN_INPUT, source="t", bands=["B99"])
    none = np.zeros(r.mask.shape, dtype=bool)
    with pytest.raises(ValueError, match="t: no valid pixel"):
        check_input_scale(dn, S2_L1C_DN_INPUT, source="t", bands=["B04", "B08"], mask=none)
    zeros = np.zeros_like(r.array)  # zero-filled nodata everywhere is not "valid"
    with pytest.raises(ValueError, match="no valid pixel"):
        check_input_scale(zeros, S2_L1C_DN_INPUT, source="z", bands=["B04", "B08"])


def test_mean_std_normalization_formula() -> None:
    contract = {
        "bands": ["R", "G", "B"],
        "normalization": {
            "type": "mean_std",
            "scale": 1 / 255,
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
        },
    }
    rgb = np.random.default_rng(0).integers(0, 256, (3, 4, 5)).astype(np.float32)
    expected = (rgb / 255 - np.array([0.485, 0.456, 0.406])[:, None, None]) / np.array(
        [0.229, 0.224, 0.225]
    )[:, None, None]
    np.testing.assert_allclose(normalize_input(rgb, contract), expected, atol=1e-6)
    gb = torch.from_numpy(rgb[1:])[None]  # (1, 2, 4, 5), bands G, B
    torch.testing.assert_close(
        normalize_input(gb, contract, bands=["G", "B"]),
        torch.from_numpy(expected[1:]).float()[None],
    )
    with pytest.raises(ValueError, match="defines no scale_check"):
        check_input_scale(rgb, contract, source="rgb.png")
    with pytest.raises(ValueError, match="normalization type 'hu_window' is not supported"):
        normalize_input(rgb, {"bands": ["R", "G", "B"], "normalization": {"type": "hu_window"}})


def test_data_module_follows_a_release_contract_and_refuses_wrong_units(
    data_root: Path,
) -> None:
    """A fine-tuning data module told to feed SSL4EO weights (L1C digital numbers / 10000)
    refuses the shipped reflectance scenes, naming the file and the fix, and with
    input_scale=10000 normalizes them exactly as the release does."""
    from domainfm.domains.geospatial import RasterSegDataModule

    kwargs = dict(
        images=[str(p) for p in sorted((data_root / S2_DIR).glob("S2_L1C_*.tif"))],
        label=str(data_root / "geospatial/eolearn_s2_slovenia_patch/labels/LULC.tif"),
        band_names=list(SENTINEL2_L1C_BANDS),
        label_map={1: 1, 2: 2, 3: 3, 4: 4, 8: 5},
        train_rows=(0, 64),
        val_rows=(69, 101),
        size=16,
        samples_per_epoch=4,
        released_input="torchgeo-resnet50-sentinel2-all-moco",
    )
    with pytest.raises(ValueError, match=r"S2_L1C_2015-07-11\.tif.*multiply it by 10000"):
        RasterSegDataModule(**kwargs).setup("fit")  # type: ignore[arg-type]
    dm = RasterSegDataModule(**kwargs, input_scale=10000.0)  # type: ignore[arg-type]
    dm.setup("fit")
    assert dm.input_contract().to_dict()["normalization"]["std"] == [1.0] * 13  # 10000 / 10000
    assert dm.input_contract().to_dict()["released_input"] == "torchgeo-resnet50-sentinel2-all-moco"
    assert dm.train_set is not None
    image, row, col = dm.train_set._window((0, 3))
    raw = read_raster(dm.files[image], (row, col, 16, 16), band_names=SENTINEL2_L1C_BANDS)
    expected = check_input_scale(raw.array * 10000, S2_L1C_DN_INPUT, source="t")  # DN / 10000
    torch.testing.assert_close(dm.train_set[(0, 3)]["input"], torch.from_numpy(expected))
