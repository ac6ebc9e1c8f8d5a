"""predict_raster on the real Landsat and Sentinel-2 GeoTIFFs: the output lies on the input's
grid, tiled prediction of a pointwise model equals whole-raster prediction (no seams, right
placement), blending follows the Hann formula, memory does not grow with the raster's height,
and bad inputs fail with clear errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window
from torch import Tensor, nn

from domainfm.domains.geospatial import (
    LANDSAT_RGB,
    SENTINEL2_L1C_BANDS,
    compute_band_stats,
    predict_raster,
    read_raster,
)
from domainfm.domains.geospatial.tiled_inference import blend_window

LANDSAT = "geospatial/rasterio_landsat_rgb/RGB.byte.tif"
S2 = "geospatial/eolearn_s2_slovenia_patch/s2_l1c_13band/S2_L1C_2015-07-11.tif"
RGB_MEAN, RGB_STD = [60.0, 60.0, 60.0], [40.0, 40.0, 40.0]


def _pointwise(in_chans: int, classes: int, seed: int = 0) -> nn.Conv2d:
    """A 1×1 conv with fixed random weights: each pixel's logits depend on that pixel only."""
    torch.manual_seed(seed)
    conv = nn.Conv2d(in_chans, classes, 1)
    nn.init.normal_(conv.weight, std=1.0)
    nn.init.normal_(conv.bias, std=0.5)
    return conv


def _normalized(path: Path, bands: list[str] | None, mean: list[float], std: list[float]):
    """The whole raster normalized as in training: ``(C, H, W)`` and the validity mask."""
    r = read_raster(path, bands=bands, require_valid=False)
    m = np.asarray(mean, np.float32)[:, None, None]
    s = np.asarray(std, np.float32)[:, None, None]
    x = (r.array - m) / s
    x[:, ~r.mask] = 0.0
    return torch.from_numpy(x), r.mask


def _whole_logits(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x[None])[0]  # (K, H, W)


def _read(path: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as ds:
        return ds.read(), dict(ds.profile) | {"descriptions": ds.descriptions, "tags": ds.tags(1)}


def test_output_is_on_the_input_grid_with_nodata_where_input_is_invalid(
    data_root: Path, tmp_path: Path
) -> None:
    src = data_root / LANDSAT
    out = predict_raster(
        _pointwise(3, 4),
        src,
        tmp_path / "sub" / "labels.tif",
        tile=128,
        overlap=0.25,
        mean=RGB_MEAN,
        std=RGB_STD,
        class_names=["a", "b", "c", "d"],
    )
    assert out == tmp_path / "sub" / "labels.tif"
    assert [p.name for p in out.parent.iterdir()] == ["labels.tif"]  # no temporary left
    labels, profile = _read(out)
    with rasterio.open(src) as ds:
        assert profile["crs"] == ds.crs
        assert profile["transform"] == ds.transform
        assert (profile["width"], profile["height"]) == (ds.width, ds.height) == (791, 718)
    assert profile["count"] == 1 and profile["dtype"] == "uint8" and profile["nodata"] == 255
    assert profile["tiled"] and (profile["blockxsize"], profile["blockysize"]) == (256, 256)
    assert profile["compress"] == "deflate"
    assert profile["descriptions"] == ("labels",)
    assert profile["tags"]["class_2"] == "c"
    mask = read_raster(src, require_valid=False).mask
    assert 0 < (~mask).sum() < mask.size  # the real nodata border
    assert np.all(labels[0][~mask] == 255)
    assert labels[0][mask].max() < 4

    probs_path = predict_raster(
        _pointwise(3, 4),
        src,
        tmp_path / "probs.tif",
        tile=128,
        mean=RGB_MEAN,
        std=RGB_STD,
        output="probabilities",
        compress=None,
    )
    probs, profile = _read(probs_path)
    assert profile["count"] == 4 and profile["dtype"] == "float32"
    assert math.isnan(profile["nodata"]) and profile.get("compress") is None
    assert profile["descriptions"] == ("class_0", "class_1", "class_2", "class_3")
    assert np.isnan(probs[:, ~mask]).all() and np.isfinite(probs[:, mask]).all()
    np.testing.assert_allclose(probs[:, mask].sum(axis=0), 1.0, atol=1e-5)


def test_small_raster_blocks_and_many_classes_use_uint16(data_root: Path, tmp_path: Path) -> None:
    out = predict_raster(
        _pointwise(13, 300),
        data_root / S2,
        tmp_path / "many.tif",
        tile=64,
        band_names=SENTINEL2_L1C_BANDS,
        mean=[1000.0] * 13,
        std=[1000.0] * 13,
    )
    labels, profile = _read(out)
    assert profile["dtype"] == "uint16" and profile["nodata"] == 65535
    assert (profile["width"], profile["height"]) == (100, 101)
    assert (profile["blockxsize"], profile["blockysize"]) == (96, 96)  # largest 16k <= raster
    assert labels.max() < 300


@pytest.mark.parametrize(
    ("raster", "tile", "overlap", "blend"),
    [
        ("landsat", 256, 0.25, "hann"),
        ("landsat", 160, 0.5, "hann"),  # divides neither 718 nor 791
        ("landsat", 200, 0.0, "constant"),
        ("s2", 128, 0.25, "hann"),  # raster (101x100) smaller than the tile: padded
        ("s2", 101, 0.5, "hann"),  # tile = height, wider than the raster
    ],
)
def test_tiled_equals_whole_raster_for_a_pointwise_model(
    data_root: Path, tmp_path: Path, raster: str, tile: int, overlap: float, blend: str
) -> None:
    if raster == "landsat":
        src, bands, names, k = data_root / LANDSAT, None, LANDSAT_RGB, 5
        mean, std, kwargs = RGB_MEAN, RGB_STD, {"mean": RGB_MEAN, "std": RGB_STD}
    else:  # normalization from BandStats, a band subset picked by name
        src, bands, names, k = data_root / S2, ["B04", "B03", "B02", "B08"], None, 3
        stats = compute_band_stats(src, band_names=SENTINEL2_L1C_BANDS)
        index = [SENTINEL2_L1C_BANDS.index(b) for b in bands]
        mean, std = [stats.mean[i] for i in index], [stats.std[i] for i in index]
        kwargs = {"stats": stats, "band_names": SENTINEL2_L1C_BANDS}
    model = _pointwise(len(bands or names or ()), k)
    common = {"tile": tile, "overlap": overlap, "bands": bands, "blend": blend, "batch_size": 3}
    x, mask = _normalized(src, bands, mean, std) if bands else _normalized(src, None, mean, std)
    logits = _whole_logits(model, x)  # (K, H, W)

    probs_path = predict_raster(
        model, src, tmp_path / "p.tif", output="probabilities", **common, **kwargs
    )
    probs, _ = _read(probs_path)
    expected = torch.softmax(logits, dim=0).numpy()
    np.testing.assert_allclose(probs[:, mask], expected[:, mask], atol=2e-5, rtol=0)

    labels_path = predict_raster(model, src, tmp_path / "l.tif", **common, **kwargs)
    labels, _ = _read(labels_path)
    top2 = torch.topk(logits, 2, dim=0).values
    clear = mask & (top2[0] - top2[1] > 1e-4).numpy()  # float rounding cannot flip these
    assert clear.sum() > 0.99 * mask.sum()
    assert np.array_equal(labels[0][clear], logits.argmax(0).numpy()[clear])
    assert np.all(labels[0][~mask] == 255)


class _RampModel(nn.Module):
    """Pointwise logits plus a per-class ramp across the tile's columns: the output depends
    on where a pixel lies inside its tile, so overlapping tiles disagree."""

    def __init__(self, in_chans: int, classes: int) -> None:
        super().__init__()
        self.conv = _pointwise(in_chans, classes, seed=1)
        self.slope = nn.Parameter(torch.linspace(-3.0, 3.0, classes), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        ramp = torch.linspace(-1.0, 1.0, x.shape[-1])  # (w,) across the tile
        return self.conv(x) + self.slope[None, :, None, None] * ramp  # (B, K, h, w)


def _starts(length: int, tile: int, stride: int) -> list[int]:
    starts, pos = [], 0
    while pos + tile < length:
        starts.append(pos)
        pos += stride
    return [*starts, length - tile]


def _reference_blend(model: nn.Module, x: Tensor, tile: int, stride: int, blend: str):
    """Blended and last-tile-wins logits ``(K, H, W)`` over the whole raster, written plainly:
    sum over tiles of w * logits / sum of w, with the textbook Hann window."""
    _, height, width = x.shape
    n = torch.arange(tile, dtype=torch.float64)
    hann = 0.5 - 0.5 * torch.cos(2 * math.pi * (n + 0.5) / tile)
    w = torch.outer(hann, hann) if blend == "hann" else torch.ones(tile, tile, dtype=torch.float64)
    total = wsum = last = None
    for r in _starts(height, tile, stride):
        for c in _starts(width, tile, stride):
            with torch.no_grad():
                out = model(x[None, :, r : r + tile, c : c + tile])[0].double()  # (K, t, t)
            if total is None:
                total = torch.zeros(out.shape[0], height, width, dtype=torch.float64)
                wsum = torch.zeros(height, width, dtype=torch.float64)
                last = torch.zeros(out.shape[0], height, width, dtype=torch.float64)
            total[:, r : r + tile, c : c + tile] += w * out
            wsum[r : r + tile, c : c + tile] += w
            last[:, r : r + tile, c : c + tile] = out
    return total / wsum, last


@pytest.mark.parametrize("blend", ["hann", "constant"])
def test_blending_matches_the_formula_and_is_not_last_tile_wins(
    data_root: Path, tmp_path: Path, blend: str
) -> None:
    src, bands = data_root / S2, ["B04", "B03", "B02"]
    mean, std = [1500.0, 1500.0, 1500.0], [800.0, 800.0, 800.0]
    model = _RampModel(3, 4)
    x, mask = _normalized(src, bands, mean, std)
    blended, last = _reference_blend(model, x, tile=32, stride=16, blend=blend)

    path = predict_raster(
        model,
        src,
        tmp_path / "b.tif",
        tile=32,
        overlap=0.5,
        bands=bands,
        blend=blend,
        band_names=SENTINEL2_L1C_BANDS,
        mean=mean,
        std=std,
        output="probabilities",
    )
    probs, _ = _read(path)
    expected = torch.softmax(blended, dim=0).numpy()
    np.testing.assert_allclose(probs[:, mask], expected[:, mask], atol=1e-5, rtol=0)
    naive = torch.softmax(last, dim=0).numpy()
    assert np.abs(probs - naive)[:, mask].max() > 0.05  # blending changed the mosaic

    labels, _ = _read(
        predict_raster(
            model,
            src,
            tmp_path / "l.tif",
            tile=32,
            overlap=0.5,
            bands=bands,
            blend=blend,
            band_names=SENTINEL2_L1C_BANDS,
            mean=mean,
            std=std,
        )
    )
    assert (labels[0] != last.argmax(0).numpy())[mask].any()


class _ConstantLogits(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        logits = torch.tensor([1.0, 2.0, 0.5])[None, :, None, None]
        return logits.expand(x.shape[0], 3, x.shape[2], x.shape[3]) + 0 * x[:, :1]


def test_constant_logits_give_constant_probabilities(data_root: Path, tmp_path: Path) -> None:
    """The Hann weights are normalized by their sum: overlaps of 1, 2 or 4 tiles (and the
    raster's edges, covered by one tile's taper) all give the same value."""
    src = data_root / LANDSAT
    path = predict_raster(
        _ConstantLogits(),
        src,
        tmp_path / "c.tif",
        tile=96,
        overlap=0.3,
        blend="hann",
        output="probabilities",
    )
    probs, _ = _read(path)
    mask = read_raster(src, require_valid=False).mask
    expected = torch.softmax(torch.tensor([1.0, 2.0, 0.5]), dim=0).numpy()
    np.testing.assert_allclose(
        probs[:, mask], expected[:, None] * np.ones((1, mask.sum())), atol=1e-6
    )


def test_hann_window_is_positive_and_sums_to_one_at_half_overlap() -> None:
    w = blend_window(64, "hann")
    assert w.shape == (64, 64) and float(w.min()) > 0
    taper = w[32].double() / w[32, 32].double().sqrt()  # one row / h(32): h itself
    np.testing.assert_allclose((taper[:32] + taper[32:]).numpy(), 1.0, atol=1e-6)
    assert torch.equal(blend_window(8, "constant"), torch.ones(8, 8))


def _tall_raster(src: Path, path: Path, height: int) -> None:
    """A (height x 256) one-band uint8 raster stacked from real Landsat rows, written strip
    by strip (nodata 0 kept)."""
    strip = read_raster(src, bands=1, window=(0, 200, 718, 256), require_valid=False)
    pixels = strip.array[0].astype(np.uint8)  # (718, 256), invalid pixels are 0 = nodata
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=256,
        height=height,
        count=1,
        dtype="uint8",
        crs=strip.crs,
        transform=strip.transform,
        nodata=0,
    ) as ds:
        for row in range(0, height, 718):
            n = min(718, height - row)
            ds.write(pixels[None, :n], window=Window(0, row, 256, n))


def test_accumulators_do_not_grow_with_the_raster_height(data_root: Path, tmp_path: Path) -> None:
    reports = {}
    for height in (1000, 4000):
        src = tmp_path / f"tall_{height}.tif"
        _tall_raster(data_root / LANDSAT, src, height)
        report: dict = {}
        out = predict_raster(
            _pointwise(1, 2),
            src,
            tmp_path / f"out_{height}.tif",
            tile=128,
            overlap=0.25,
            mean=[60.0],
            std=[40.0],
            batch_size=8,
            report=report,
        )
        labels, profile = _read(out)
        assert (profile["height"], profile["width"]) == (height, 256)
        with rasterio.open(src) as ds:
            assert np.array_equal(labels[0] == 255, ds.read(1) == 0)  # nodata follows input
        reports[height] = report
    short, tall = reports[1000], reports[4000]
    assert tall["tiles"] > 3 * short["tiles"]
    assert short["accumulator_shape"] == tall["accumulator_shape"] == (2, 128, 256)
    # finished rows wait for at most one 256-row output block plus one stride
    assert tall["max_buffered_rows"] <= 256 + 96 and short["max_buffered_rows"] <= 256 + 96


def test_gdal_block_cache_is_bounded_during_the_call(data_root: Path, tmp_path: Path) -> None:
    """GDAL's default cache (5 % of RAM) would fill with decompressed input blocks of a large
    raster; predict_raster bounds it for the call and restores the caller's setting."""
    from rasterio.env import get_gdal_config

    seen: list[int] = []
    conv = _pointwise(3, 2)

    def model(x: Tensor) -> Tensor:
        seen.append(int(get_gdal_config("GDAL_CACHEMAX")))
        return conv(x)

    outside = get_gdal_config("GDAL_CACHEMAX")
    kwargs = dict(tile=256, mean=RGB_MEAN, std=RGB_STD, batch_size=16)
    predict_raster(model, data_root / LANDSAT, tmp_path / "a.tif", gdal_cache_mb=32, **kwargs)
    assert seen and set(seen) == {32 * 2**20}
    seen.clear()
    predict_raster(model, data_root / LANDSAT, tmp_path / "b.tif", **kwargs)
    assert set(seen) == {64 * 2**20}  # the default
    assert get_gdal_config("GDAL_CACHEMAX") == outside
    with pytest.raises(ValueError, match="gdal_cache_mb=0"):
        predict_raster(model, data_root / LANDSAT, tmp_path / "c.tif", gdal_cache_mb=0, **kwargs)


def test_clear_errors(data_root: Path, tmp_path: Path) -> None:
    src, dst = data_root / LANDSAT, tmp_path / "o.tif"
    model = _pointwise(3, 2)
    with pytest.raises(ValueError, match=r"overlap=1\.0"):
        predict_raster(model, src, dst, overlap=1.0)
    with pytest.raises(ValueError, match=r"overlap=-0\.1"):
        predict_raster(model, src, dst, overlap=-0.1)
    with pytest.raises(ValueError, match="tile=0"):
        predict_raster(model, src, dst, tile=0)
    with pytest.raises(ValueError, match=r"model takes 4 input bands.*RGB\.byte\.tif"):
        predict_raster(_pointwise(4, 2), src, dst)
    with pytest.raises(ValueError, match=r"mean has 13 values.*RGB\.byte\.tif"):
        predict_raster(model, src, dst, mean=[0.0] * 13, std=[1.0] * 13)
    with pytest.raises(ValueError, match=r"first tiles.*RGB\.byte\.tif"):
        predict_raster(nn.Sequential(nn.Flatten(), nn.Linear(5, 2)), src, dst, tile=16)
    with pytest.raises(ValueError, match=r"returned \(2, 3\).*RGB\.byte\.tif"):
        predict_raster(lambda x: x.sum(dim=(2, 3)), src, dst, tile=16, batch_size=2)
    with pytest.raises(ValueError, match=r"class_names has 3 names.*2 classes"):
        predict_raster(model, src, dst, tile=256, class_names=["a", "b", "c"])
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00 this is not a GeoTIFF")
    with pytest.raises(ValueError, match=r"broken\.tif"):
        predict_raster(model, broken, dst)
    with pytest.raises(FileNotFoundError, match=r"missing\.tif"):
        predict_raster(model, tmp_path / "missing.tif", dst)
    assert not dst.exists() and [p.name for p in tmp_path.iterdir()] == ["broken.tif"]
