"""SatMAE-style spectral-temporal tokens: the band-group cube layout, the per-group patch
projection (= one conv per group), the group + date + space position code, masking that is
consistent across dates and groups, and an MAE step on real Sentinel-2 series."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from domainfm.core.masking import MaskingSpec, keep_indices
from domainfm.core.objectives.mae import MAE
from domainfm.core.pos_embed import sincos_1d, sincos_pos_embed
from domainfm.domains.geospatial import (
    SENTINEL2_L1C_BANDS,
    RasterPretrainDataModule,
    RasterWindowDataset,
    compute_band_stats,
    read_raster,
)
from domainfm.domains.geospatial.spectral_temporal import (
    SATMAE_S2_GROUPS,
    SpectralTemporalViT,
    band_group_cube,
)

S2 = "geospatial/eolearn_s2_slovenia_patch/s2_l1c_13band"


def _vit(**kw: object) -> SpectralTemporalViT:
    torch.manual_seed(0)
    args = dict(group_size=4, num_groups=3, patch_size=8, embed_dim=32, depth=2, num_heads=4)
    return SpectralTemporalViT(**{**args, **kw})  # type: ignore[arg-type]


def test_cube_slices_are_date_major_groups_zero_padded() -> None:
    series = torch.randn(2, 13, 8, 8)  # (T, C, H, W)
    cube = band_group_cube(series, SENTINEL2_L1C_BANDS, SATMAE_S2_GROUPS)
    assert cube.shape == (4, 6, 8, 8)
    names = list(SENTINEL2_L1C_BANDS)
    for t in range(2):
        for g, group in enumerate(SATMAE_S2_GROUPS):
            for c in range(4):
                expected = series[t, names.index(group[c])] if c < len(group) else 0.0
                assert torch.equal(cube[c, t * 3 + g], torch.as_tensor(expected).expand(8, 8))
    single = band_group_cube(series[0], SENTINEL2_L1C_BANDS, SATMAE_S2_GROUPS)
    assert torch.equal(single, cube[:, :3])
    with pytest.raises(ValueError, match="unknown: \\['B99'\\]"):
        band_group_cube(series, SENTINEL2_L1C_BANDS, [["B02", "B99"]])


def test_group_patch_embedding_is_one_conv_per_group() -> None:
    vit = _vit()
    cube = torch.randn(2, 4, 6, 16, 16)  # (B, C_g, T*G, H, W)
    tokens = vit.patch_embed(cube)  # (B, N, D)
    embed = vit.patch_embed
    for s in range(6):
        g = s % 3
        weight = embed.weight[g].reshape(32, 4, 1, 8, 8)  # (D, C_g, 1, p, p)
        ref = F.conv3d(cube[:, :, s : s + 1], weight, embed.bias[g], stride=(1, 8, 8))
        ref = ref.flatten(2).transpose(1, 2)  # (B, 4, D): this slice's 2x2 patches
        assert torch.allclose(tokens[:, s * 4 : (s + 1) * 4], ref, atol=1e-5)


def test_position_code_is_space_plus_group_plus_date() -> None:
    vit = _vit()
    grid = vit.token_grid((6, 16, 16))  # T=2 dates x G=3 groups, 2x2 patches
    table = vit._patch_pos_embed(grid, torch.zeros(1))[0]  # (N, D)
    space = sincos_pos_embed((2, 2), 32)
    time = sincos_1d(torch.arange(2), 32)
    for s in range(6):
        for n in range(4):
            expected = space[n] + vit.group_embed[s % 3] + time[s // 3]
            assert torch.allclose(table[s * 4 + n], expected, atol=1e-6)
    # tokens of different groups or dates at one place are told apart
    assert not torch.allclose(table[0], table[4]) and not torch.allclose(table[0], table[12])
    with pytest.raises(ValueError, match="not a multiple of num_groups=3"):
        vit.token_grid((4, 16, 16))


def test_dropping_tokens_matches_the_full_pass() -> None:
    vit = _vit().eval()
    cube = torch.randn(1, 4, 6, 16, 16)
    keep = torch.tensor([[0, 5, 9, 23]])
    kept, _ = vit.forward_tokens(cube, keep_idx=keep)
    # the embedded, positioned kept tokens are the full embedding's at those indices
    grid = vit.token_grid(cube.shape[2:])
    full = vit._embed(cube, grid, None)[:, 1:]
    part = vit._embed(cube, grid, keep)[:, 1:]
    assert torch.allclose(part, full[:, keep[0]], atol=1e-6)
    assert kept.shape == (1, 5, 32)


def test_series_dataset_and_tube_masks_on_real_sentinel2(data_root: Path) -> None:
    files = sorted((data_root / S2).glob("S2_L1C_*.tif"))
    stats = compute_band_stats(files, band_names=SENTINEL2_L1C_BANDS)
    ds = RasterWindowDataset(
        files=files,
        size=16,
        band_names=SENTINEL2_L1C_BANDS,
        stats=stats,
        time_steps=3,
        band_groups=SATMAE_S2_GROUPS,
    )
    sample = ds[(0, 7)]
    assert sample["input"].shape == (4, 9, 16, 16)
    # find the window and dates: every slice is a normalized group of one real date
    series = RasterWindowDataset(
        files=files, size=16, band_names=SENTINEL2_L1C_BANDS, stats=stats, time_steps=3
    )[(0, 7)]["input"]  # (C, T, h, w), same seed -> same window and dates
    assert series.shape == (13, 3, 16, 16)
    cube = band_group_cube(series.transpose(0, 1), SENTINEL2_L1C_BANDS, SATMAE_S2_GROUPS)
    assert torch.equal(cube, sample["input"])
    mean = torch.tensor(stats.mean)[:, None, None]
    std = torch.tensor(stats.std)[:, None, None]
    dates = []
    for t in range(3):
        for i, path in enumerate(files):
            full = (torch.from_numpy(read_raster(path).array) - mean) / std
            hits = [
                (r, c)
                for r in range(101 - 15)
                for c in range(100 - 15)
                if torch.allclose(full[:, r : r + 16, c : c + 16], series[:, t], atol=1e-5)
            ]
            if hits:
                dates.append(i)
    assert len(dates) == 3 and dates == sorted(dates)  # three different dates, in order

    dm = RasterPretrainDataModule(
        files=[str(f) for f in files],
        band_names=list(SENTINEL2_L1C_BANDS),
        size=16,
        masking=MaskingSpec(patch_size=8, kind="tube"),
        time_steps=3,
        band_groups=[list(g) for g in SATMAE_S2_GROUPS],
        samples_per_epoch=4,
        batch_size=2,
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["input"].shape == (2, 4, 9, 16, 16)
    mask = batch["mask"].view(2, 9, 4)  # (B, slices, spatial patches)
    assert (mask == mask[:, :1]).all()  # the same patches hidden in every date and group
    assert int(mask[0, 0].sum()) == 3  # 75 % of the 4 spatial patches

    vit = _vit()
    mae = MAE(
        embed_dim=32,
        in_chans=4,
        patch_size=(1, 8, 8),
        decoder_dim=32,
        decoder_depth=1,
        decoder_heads=4,
    )
    tokens, grid = vit.forward_tokens(batch["input"], keep_idx=batch["keep_idx"])
    out = mae(tokens[:, 1:], grid, batch["keep_idx"], batch["mask"], batch["input"])
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert vit.patch_embed.weight.grad is not None and vit.group_embed.grad is not None
    assert keep_indices(batch["mask"]).shape == batch["keep_idx"].shape
