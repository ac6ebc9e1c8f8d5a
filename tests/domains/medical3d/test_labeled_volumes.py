from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from domainfm.domains.medical3d import LabeledVolumeDataset
from domainfm.domains.medical3d.labeled_volumes import remap_labels

CT = "medical/totalsegmentator_examples/ct_labeled/example_ct_sm.nii.gz"
CT_SEG = "medical/totalsegmentator_examples/ct_labeled/example_seg.nii.gz"
BRATS = "medical/brats2015_deepmedic/train/brats_2013_pat0005_1"


def test_remap_labels() -> None:
    raw = torch.tensor([[0.0, 5.0, 1.0, 7.0, 2.0]])
    assert remap_labels(raw, {5: 1, 1: 2}).tolist() == [[0, 1, 2, 0, 0]]
    assert remap_labels(raw, None).tolist() == [[0, 5, 1, 7, 2]]


def test_ct_pair_stays_aligned_and_crops_hit_foreground(data_root: Path) -> None:
    ds = LabeledVolumeDataset(
        images=[data_root / CT],
        labels=[data_root / CT_SEG],
        crop_size=32,
        spacing=3.0,
        label_map={5: 1, 1: 2},
        positive_fraction=1.0,
    )
    raw = np.asarray(nib.load(data_root / CT_SEG).dataobj)
    expected = np.where(raw == 5, 1, np.where(raw == 1, 2, 0))
    # 3 mm RAS already: the label keeps its grid (30 slices padded to 32, one on each side)
    label = ds.labels[0][0].numpy()
    np.testing.assert_array_equal(label[:, :, 1:31], expected)
    assert not label[:, :, [0, 31]].any()
    for seed in range(8):  # positive_fraction=1: every crop is centred on a labeled voxel
        item = ds[(seed % len(ds), seed)]
        assert item["input"].shape == (1, 32, 32, 32) and item["label"].shape == (1, 32, 32, 32)
        assert int(item["label"].sum()) > 0
    a, b = ds[(0, 5)], ds[(0, 5)]
    assert torch.equal(a["input"], b["input"]) and torch.equal(a["label"], b["label"])


def test_multichannel_mri_whole_volume(data_root: Path) -> None:
    ds = LabeledVolumeDataset(
        images=[
            [
                data_root / BRATS / "Flair_subtrMeanDivStd.nii.gz",
                data_root / BRATS / "T1c_subtrMeanDivStd.nii.gz",
            ]
        ],
        labels=[data_root / BRATS / "OTMultiClass.nii.gz"],
        crop_size=None,
        spacing=4.0,
        modality="mri",
        label_map={1: 1, 2: 1, 3: 1, 4: 1},
    )
    item = ds[0]
    assert item["input"].shape[0] == 2 and ds.in_chans == 2
    # 240 x 240 x 155 at 1 mm -> 4 mm: MONAI keeps the extent, ceil(239 / 4 + 1) = 61
    assert item["input"].shape[1:] == item["label"].shape[1:] == (61, 61, 40)
    for channel in item["input"]:  # percentile scaling per channel
        assert float(channel.min()) == 0.0 and float(channel.max()) == 1.0
    assert set(item["label"].unique().tolist()) == {0, 1}


def test_mismatched_pair_names_both_files(tmp_path: Path, data_root: Path) -> None:
    other = data_root / "medical/totalsegmentator_examples/mr_labeled/example_seg_mr.nii.gz"
    with pytest.raises(ValueError, match=r"example_seg_mr\.nii\.gz and image .*example_ct_sm"):
        LabeledVolumeDataset(images=[data_root / CT], labels=[other], crop_size=16)
    with pytest.raises(ValueError, match="one label map per case"):
        LabeledVolumeDataset(images=[data_root / CT], labels=[], crop_size=16)
