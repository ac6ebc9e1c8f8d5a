from __future__ import annotations

from pathlib import Path

import pytest
import torch

from domainfm.domains.medical3d import VolumeCropDataset
from domainfm.domains.medical3d.augment import AugmentedViews
from domainfm.domains.medical3d.views import OverlappingCropPair

CT = "medical/totalsegmentator_examples/ct_full/example_ct.nii.gz"


def test_flips_and_intensity_follow_the_seed(data_root: Path) -> None:
    pair = OverlappingCropPair(crop_size=16, max_shift=0.0)
    views = AugmentedViews(views=pair, flip_prob=1.0, intensity_scale=0.0, intensity_shift=0.0)
    ds = VolumeCropDataset(files=[data_root / CT], views=views, spacing=3.0)
    plain = VolumeCropDataset(files=[data_root / CT], views=pair, spacing=3.0)
    a, b, ref = ds[(0, 7)], ds[(0, 7)], plain[(0, 7)]
    for key in ("view1", "view2"):
        assert torch.equal(a[key], b[key])  # same seed, same augmentation
        assert type(a[key]) is torch.Tensor and a[key].shape == (1, 16, 16, 16)
    # flip_prob=1 flips all three axes: the un-augmented view, flipped
    torch.testing.assert_close(a["view1"], ref["view1"].flip(1, 2, 3))
    assert torch.equal(a["input"], ref["input"])  # keys not listed stay untouched


def test_affine_and_intensity_change_views_independently(data_root: Path) -> None:
    views = AugmentedViews(
        views=OverlappingCropPair(crop_size=16, max_shift=0.0),
        rotate_deg=20.0,
        scale=0.1,
        affine_prob=1.0,
    )
    ds = VolumeCropDataset(files=[data_root / CT], views=views, spacing=3.0)
    sample = ds[(0, 3)]
    assert not torch.equal(sample["view1"], sample["view2"])
    assert not torch.equal(ds[(0, 4)]["view1"], sample["view1"])


def test_unknown_key_is_named(data_root: Path) -> None:
    views = AugmentedViews(views=OverlappingCropPair(crop_size=16), keys=("target1",))
    ds = VolumeCropDataset(files=[data_root / CT], views=views, spacing=3.0)
    with pytest.raises(KeyError, match="target1"):
        ds[(0, 1)]
    with pytest.raises(ValueError, match="flip_prob"):
        AugmentedViews(views=OverlappingCropPair(crop_size=16), flip_prob=2.0)
