"""VoCo crops on the example CT: positions, contents and overlap labels checked independently."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor

from domainfm.domains.medical3d import VoCoCrops
from domainfm.domains.medical3d.views import VolumeViews
from domainfm.domains.medical3d.volumes import VolumeCropDataset

CT = "medical/totalsegmentator_examples/ct_full/example_ct.nii.gz"


@pytest.fixture(scope="module")
def dataset(data_root: Path) -> VolumeCropDataset:
    views = VoCoCrops(crop_size=(16, 12, 8), grid=(2, 3, 1), num_crops=5, foreground_prob=0.5)
    return VolumeCropDataset(files=[data_root / CT], views=views, spacing=3.0)


def _slice(volume: Tensor, origin: Tensor, size: tuple[int, ...]) -> Tensor:
    x, y, z = origin.tolist()
    return volume[:, x : x + size[0], y : y + size[1], z : z + size[2]]


def _painted_overlap(origins: Tensor, base_origins: Tensor, size: tuple[int, ...]) -> Tensor:
    """Fractions by painting: label each base crop's voxels, count them under each crop."""
    lo = base_origins.min(dim=0).values
    hi = base_origins.max(dim=0).values + torch.tensor(size)
    canvas = torch.full(tuple((hi - lo).tolist()), -1, dtype=torch.int64)
    for k, origin in enumerate(base_origins):
        x, y, z = (origin - lo).tolist()
        canvas[x : x + size[0], y : y + size[1], z : z + size[2]] = k
    out = torch.zeros(len(origins), len(base_origins))
    for r, origin in enumerate(origins):
        x, y, z = (origin - lo).tolist()
        window = canvas[x : x + size[0], y : y + size[1], z : z + size[2]]
        assert window.numel() == size[0] * size[1] * size[2] and bool((window >= 0).all())
        counts = torch.bincount(window.reshape(-1), minlength=len(base_origins))
        out[r] = counts.float() / window.numel()
    return out


def test_crops_and_labels_on_real_ct(dataset: VolumeCropDataset) -> None:
    views = dataset.views
    assert isinstance(views, VoCoCrops) and isinstance(views, VolumeViews)
    size = views.crop_size
    volume = dataset.volumes[0]
    for seed in range(6):
        sample = dataset[(seed, seed)]
        base_origin, crop_origin = sample["voco_base_origin"], sample["voco_crop_origin"]
        assert sample["voco_base"].shape == (6, 1, *size)
        assert sample["voco_crops"].shape == (5, 1, *size)
        assert sample["voco_overlap"].shape == (5, 6)
        assert base_origin.shape == (6, 3) and crop_origin.shape == (5, 3)
        # base crops tile the region exactly, in C order of the grid
        start = base_origin[0]
        cells = torch.tensor([[i, j, 0] for i in range(2) for j in range(3)])
        torch.testing.assert_close(base_origin, start + cells * torch.tensor(size))
        region = torch.tensor(views.min_size)
        assert views.min_size == (32, 36, 8)
        assert bool((start >= 0).all())
        assert bool((start + region <= torch.tensor(volume.shape[1:])).all())
        # every crop is the volume at its origin; random crops lie inside the region
        for base, origin in zip(sample["voco_base"], base_origin, strict=True):
            torch.testing.assert_close(base, _slice(volume, origin, size))
        for crop, origin in zip(sample["voco_crops"], crop_origin, strict=True):
            torch.testing.assert_close(crop, _slice(volume, origin, size))
        assert bool((crop_origin >= start).all())
        assert bool((crop_origin + torch.tensor(size) <= start + region).all())
        torch.testing.assert_close(sample["input"], sample["voco_crops"][0])
        # labels: rows sum to 1 and equal painted overlaps
        overlap = sample["voco_overlap"]
        assert overlap.dtype == torch.float32
        torch.testing.assert_close(overlap.sum(dim=1), torch.ones(5))
        torch.testing.assert_close(overlap, _painted_overlap(crop_origin, base_origin, size))


def test_same_seed_same_sample(dataset: VolumeCropDataset) -> None:
    a, b, c = dataset[(0, 7)], dataset[(0, 7)], dataset[(0, 8)]
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key])
    assert not torch.equal(a["voco_crop_origin"], c["voco_crop_origin"])


def test_random_crops_cover_the_region() -> None:
    """Uniform placement: over many draws, crops reach every corner of the region."""
    views = VoCoCrops(crop_size=4, grid=(2, 2, 1), num_crops=8)
    volume = torch.arange(8 * 8 * 4, dtype=torch.float32).reshape(1, 8, 8, 4)
    gen = torch.Generator().manual_seed(0)
    origins = torch.cat(
        [views(volume, generator=gen, foreground=None)["voco_crop_origin"] for _ in range(50)]
    )
    assert origins.min(dim=0).values.tolist() == [0, 0, 0]
    assert origins.max(dim=0).values.tolist() == [4, 4, 0]
    labels = views(volume, generator=gen, foreground=None)["voco_overlap"]
    assert bool((labels.max(dim=1).values >= 0.25).all())


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="grid"):
        VoCoCrops(grid=(2, 2))
    with pytest.raises(ValueError, match="grid"):
        VoCoCrops(grid=(2, 0, 1))
    with pytest.raises(ValueError, match="num_crops=0"):
        VoCoCrops(num_crops=0)
    with pytest.raises(ValueError, match="foreground_prob"):
        VoCoCrops(foreground_prob=1.5)
    with pytest.raises(ValueError, match="larger than the volume"):
        VoCoCrops(crop_size=8, grid=(2, 2, 1))(
            torch.zeros(1, 15, 16, 8), generator=None, foreground=None
        )
