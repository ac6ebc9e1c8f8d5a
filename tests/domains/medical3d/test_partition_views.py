"""Partition-position views (Chaitanya et al. 2020, strategy G_D): positions, partitions and
intensity-only views checked independently, on synthetic volumes and the shipped BRATS MRI,
and the global + local objectives trained on them with a ViT and the SegResNet encoder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor

from domainfm.core.masking import MaskingSpec
from domainfm.core.objectives import GlobalPartitionContrast, LocalContrast
from domainfm.core.vit import VisionTransformerND
from domainfm.domains.medical3d import SegResNetEncoder3D, VolumePretrainDataModule
from domainfm.domains.medical3d.partition_views import PartitionViews, partition_bins
from domainfm.domains.medical3d.views import VolumeViews
from domainfm.tasks.pretrain_module import PretrainModule

SIZE = (12, 10, 8)


def _volume(shape: tuple[int, ...] = (30, 24, 40), seed: int = 0) -> Tensor:
    return torch.rand((1, *shape), generator=torch.Generator().manual_seed(seed))


def _sample(views: PartitionViews, volume: Tensor, seed: int, fg: Tensor | None = None) -> dict:
    return views(volume, generator=torch.Generator().manual_seed(seed), foreground=fg)


@pytest.mark.parametrize(("length", "crop", "parts"), [(40, 8, 4), (11, 8, 4), (100, 16, 3)])
def test_bins_split_every_start_into_consecutive_partitions(
    length: int, crop: int, parts: int
) -> None:
    bins = partition_bins(length, crop, parts)
    starts = [s for lo, hi in bins for s in range(lo, hi)]
    assert starts == list(range(length - crop + 1))  # every start once, in order
    assert all(hi > lo for lo, hi in bins)
    sizes = [hi - lo for lo, hi in bins]
    assert max(sizes) - min(sizes) <= 1


def test_too_short_an_axis_is_refused() -> None:
    with pytest.raises(ValueError, match="fewer than num_partitions=4"):
        partition_bins(10, 8, 4)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_sample_positions_partitions_and_contents(axis: int) -> None:
    views = PartitionViews(crop_size=SIZE, num_partitions=4, axis=axis)
    assert isinstance(views, VolumeViews)
    volume = _volume()
    bins = partition_bins(volume.shape[1 + axis], SIZE[axis], 4)
    seen = set()
    for seed in range(40):
        sample = _sample(views, volume, seed)
        assert sorted(sample) == ["input", "origin", "partition", "view1", "view2"]
        part, origin = int(sample["partition"]), sample["origin"]
        assert sample["partition"].dtype == torch.int64 and sample["partition"].shape == ()
        lo, hi = bins[part]
        assert lo <= int(origin[axis]) < hi
        x, y, z = origin.tolist()
        expected = volume[:, x : x + SIZE[0], y : y + SIZE[1], z : z + SIZE[2]]
        torch.testing.assert_close(sample["input"], expected)
        seen.add(part)
    assert seen == {0, 1, 2, 3}


def test_partition_is_the_relative_position_whatever_the_length() -> None:
    views = PartitionViews(crop_size=SIZE, num_partitions=4)
    for length in (11, 23, 64):
        volume = _volume((12, 10, length))
        for seed in range(20):
            sample = _sample(views, volume, seed)
            n = length - SIZE[2] + 1  # start positions
            part, relative = int(sample["partition"]), int(sample["origin"][2]) / n
            assert part / 4 - 1 / n < relative < (part + 1) / 4  # bin edges rounded down


def test_views_are_intensity_only_augmentations_of_the_crop() -> None:
    views = PartitionViews(crop_size=SIZE, intensity_scale=0.2, intensity_shift=0.3)
    sample = _sample(views, _volume(), 3)
    x = sample["input"].reshape(-1)
    fits = []
    for key in ("view1", "view2"):
        y = sample[key].reshape(-1)
        design = torch.stack([x, torch.ones_like(x)], dim=1).double()
        scale, shift = torch.linalg.lstsq(design, y.double()[:, None]).solution[:, 0].tolist()
        torch.testing.assert_close(y.double(), design @ torch.tensor([scale, shift]).double())
        assert 0.8 <= scale <= 1.2 and -0.3 <= shift <= 0.3
        fits.append((scale, shift))
    assert fits[0] != pytest.approx(fits[1])  # independent draws


def test_noise_and_determinism() -> None:
    views = PartitionViews(crop_size=SIZE, intensity_scale=0.0, intensity_shift=0.0, noise_std=0.1)
    volume = _volume()
    a, b, c = (_sample(views, volume, seed) for seed in (5, 5, 6))
    for key in a:
        assert torch.equal(a[key], b[key])
    assert any(not torch.equal(a[key], c[key]) for key in ("origin", "view1"))
    residual = a["view1"] - a["input"]
    assert 0.05 < float(residual.std()) < 0.15


def test_foreground_crops_are_centred_on_the_partition_slab() -> None:
    volume = torch.zeros(1, 30, 24, 40)
    volume[0, 20, 5, :] = 1.0  # a line of foreground along z
    fg = (volume[0] > 0.5).nonzero()
    views = PartitionViews(crop_size=SIZE, num_partitions=4, foreground_prob=1.0)
    for seed in range(10):
        sample = _sample(views, volume, seed, fg)
        x, y, _ = sample["origin"].tolist()
        assert x == 20 - SIZE[0] // 2 and y == 5 - SIZE[1] // 2  # centred on the line
        assert float(sample["input"].sum()) == SIZE[2]  # the line crosses the crop


def test_min_size_pads_short_volumes() -> None:
    views = PartitionViews(crop_size=SIZE, num_partitions=5, axis=1)
    assert views.min_size == (12, 14, 8)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_partitions": 0}, "num_partitions"),
        ({"axis": 3}, "axis"),
        ({"noise_std": -1.0}, "noise_std"),
        ({"intensity_scale": 1.0}, "intensity_scale"),
        ({"foreground_prob": 2.0}, "foreground_prob"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PartitionViews(crop_size=SIZE, **kwargs)


# -- the shipped BRATS MRI ---------------------------------------------------------------------

CROP = (16, 16, 8)


@pytest.fixture(scope="module")
def brats_batch(brats_mini: dict[str, dict[str, Path]]) -> dict[str, Tensor]:
    """8 samples of the 4 BRATS FLAIR volumes (4 mm) through the pretraining data module."""
    files = [str(case["flair"]) for case in brats_mini.values()]
    views = PartitionViews(crop_size=CROP, num_partitions=4, foreground_prob=0.8)
    data = VolumePretrainDataModule(
        files=files,
        views=views,
        crop_size=CROP,
        spacing=4.0,
        modality="mri",
        samples_per_volume=2,
        batch_size=8,
        num_workers=0,
        masking=MaskingSpec(patch_size=8),
    )
    data.setup("fit")
    assert data.train_set is not None and len(data.train_set.volumes) == 4
    batch: dict[str, Tensor] = next(iter(data.train_dataloader()))
    return batch


def test_brats_batches_carry_partitions(brats_batch: dict[str, Tensor]) -> None:
    assert brats_batch["partition"].shape == (8,) and brats_batch["partition"].dtype == torch.int64
    assert brats_batch["view1"].shape == (8, 1, *CROP)
    assert int(brats_batch["partition"].min()) >= 0 and int(brats_batch["partition"].max()) < 4


def _objectives() -> dict[str, torch.nn.Module]:
    return {
        "global": GlobalPartitionContrast(hidden_dim=32, out_dim=16),
        "local": LocalContrast(decoder_dim=8, out_dim=8, upsample=1, region_size=1),
    }


@pytest.mark.parametrize("backbone", ["vit", "segresnet"])
def test_global_and_local_train_on_brats(backbone: str, brats_batch: dict[str, Tensor]) -> None:
    torch.manual_seed(0)
    model: torch.nn.Module
    if backbone == "vit":
        model = VisionTransformerND(
            in_chans=1, spatial_dims=3, patch_size=8, embed_dim=32, depth=1, num_heads=2
        )
    else:  # 3 levels: stride 4, a (4, 4, 2) map
        model = SegResNetEncoder3D(
            in_chans=1, init_filters=4, blocks_down=(1, 1, 1), norm="instance"
        )
    module = PretrainModule(backbone=model, objectives=_objectives(), lr=1e-3, warmup_steps=0)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3)
    losses = []
    for _ in range(4):  # a few steps on the same batch: both losses fall
        loss, logs = module.compute_losses(brats_batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append((float(logs["global"]), float(logs["local"])))
    assert all(torch.isfinite(torch.tensor(losses)).reshape(-1))
    assert losses[-1][0] < losses[0][0] and losses[-1][1] < losses[0][1], losses
