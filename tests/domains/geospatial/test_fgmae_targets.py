"""FG-MAE targets on real Sentinel-2: indices equal numpy's on the physical values after the
data module's standardization is undone, the concatenated target weighs its parts as
documented, and an MAE step trains with it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from domainfm.core.grid import TokenGrid
from domainfm.core.masking import MaskingSpec
from domainfm.core.objectives.hog_target import HOGTarget
from domainfm.core.objectives.mae import MAE
from domainfm.core.vit import VisionTransformerND
from domainfm.domains.geospatial import (
    SENTINEL2_L1C_BANDS,
    RasterPretrainDataModule,
    compute_band_stats,
    read_raster,
)
from domainfm.domains.geospatial.fgmae_targets import FeatureTargets, NormalizedDifferenceTarget

S2 = "geospatial/eolearn_s2_slovenia_patch/s2_l1c_13band"


def test_indices_are_computed_on_physical_values(data_root: Path, tmp_path: Path) -> None:
    files = sorted((data_root / S2).glob("S2_L1C_*.tif"))
    stats = compute_band_stats(files, band_names=SENTINEL2_L1C_BANDS)
    raw = read_raster(files[0], (0, 0, 32, 32), band_names=SENTINEL2_L1C_BANDS).array
    x = torch.from_numpy(
        (raw - np.array(stats.mean)[:, None, None]) / np.array(stats.std)[:, None, None]
    ).float()[None]
    ndi = NormalizedDifferenceTarget(band_names=SENTINEL2_L1C_BANDS, mean=stats.mean, std=stats.std)
    names = list(SENTINEL2_L1C_BANDS)
    b8, b4, b3, b11 = (raw[names.index(b)] for b in ("B08", "B04", "B03", "B11"))
    expected = np.stack([(b8 - b4) / (b8 + b4), (b3 - b8) / (b3 + b8), (b11 - b8) / (b11 + b8)])
    got = ndi.indices(x)[0].numpy()
    np.testing.assert_allclose(got, np.clip(expected, -1, 1), atol=1e-4)
    assert got[0].mean() > 0.3  # vegetated patch: NDVI clearly positive
    # computing the indices on the standardized numbers would be wrong
    naive = (x[0, names.index("B08")] - x[0, names.index("B04")]).numpy()
    assert not np.allclose(naive, expected[0], atol=0.05)
    # the config path: the data module's statistics, from the same files and cache
    cache = tmp_path / "stats.json"
    from_files = NormalizedDifferenceTarget(
        band_names=SENTINEL2_L1C_BANDS, stats_files=[str(f) for f in files], stats_cache=str(cache)
    )
    np.testing.assert_allclose(from_files.indices(x)[0].numpy(), got, atol=1e-6)
    grid = TokenGrid.from_input((32, 32), 8)
    assert ndi(x, grid).shape == (1, 16, ndi.out_dim(13, (8, 8))) == (1, 16, 3 * 64)
    with pytest.raises(ValueError, match="unknown: \\['B99'\\]"):
        NormalizedDifferenceTarget(
            band_names=SENTINEL2_L1C_BANDS, mean=stats.mean, std=stats.std, pairs=[["B99", "B04"]]
        )


def test_parts_are_weighted_as_documented() -> None:
    torch.manual_seed(0)
    grid = TokenGrid.from_input((16, 16), 8)
    hog = HOGTarget(cell_size=4, num_bins=9)
    names = ["B03", "B04", "B08", "B11"]
    ndi = NormalizedDifferenceTarget(band_names=names, mean=[0.1] * 4, std=[0.05] * 4)
    both = FeatureTargets(targets=[hog, ndi], weights=[3.0, 1.0])
    x = torch.randn(2, 4, 16, 16)
    target = both(x, grid)
    dims = [hog.out_dim(4, (8, 8)), ndi.out_dim(4, (8, 8))]
    assert target.shape[-1] == sum(dims) == both.out_dim(4, (8, 8))
    pred = torch.randn_like(target)
    mse = torch.nn.functional.mse_loss(pred, target)
    parts = [
        torch.nn.functional.mse_loss(
            pred[..., : dims[0]] / (0.75 * sum(dims) / dims[0]) ** 0.5, hog(x, grid)
        ),
        torch.nn.functional.mse_loss(
            pred[..., dims[0] :] / (0.25 * sum(dims) / dims[1]) ** 0.5, ndi(x, grid)
        ),
    ]
    # MSE of the concatenation = 0.75 MSE_hog + 0.25 MSE_ndi (in each part's own units)
    torch.testing.assert_close(mse, 0.75 * parts[0] + 0.25 * parts[1])


def test_an_mae_step_with_fgmae_targets_on_real_windows(data_root: Path) -> None:
    dm = RasterPretrainDataModule(
        files=[str(f) for f in sorted((data_root / S2).glob("*.tif"))],
        band_names=list(SENTINEL2_L1C_BANDS),
        size=32,
        masking=MaskingSpec(patch_size=8),
        samples_per_epoch=4,
        batch_size=4,
    )
    dm.setup("fit")
    assert dm.stats is not None
    target = FeatureTargets(
        targets=[
            HOGTarget(cell_size=4),
            NormalizedDifferenceTarget(
                band_names=SENTINEL2_L1C_BANDS, mean=dm.stats.mean, std=dm.stats.std
            ),
        ]
    )
    batch = next(iter(dm.train_dataloader()))
    vit = VisionTransformerND(
        in_chans=13, spatial_dims=2, patch_size=8, embed_dim=32, depth=2, num_heads=4
    )
    mae = MAE(
        embed_dim=32,
        in_chans=13,
        patch_size=(8, 8),
        decoder_dim=32,
        decoder_depth=1,
        decoder_heads=4,
        target=target,
    )
    assert mae.decoder_pred.out_features == target.out_dim(13, (8, 8))
    tokens, grid = vit.forward_tokens(batch["input"], keep_idx=batch["keep_idx"])
    out = mae(tokens[:, 1:], grid, batch["keep_idx"], batch["mask"], batch["input"])
    out.loss.backward()
    assert torch.isfinite(out.loss) and vit.patch_embed.proj.weight.grad is not None
