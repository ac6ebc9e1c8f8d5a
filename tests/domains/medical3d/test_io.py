"""load_volume / read_header dispatch, the value checks shared by both formats, the MONAI
MetaTensor of a Volume, and label maps checked against their image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch

from domainfm.domains.medical3d import Volume, check_label_pair, load_volume, volume_transform
from domainfm.domains.medical3d.io import read_header

TS = "medical/totalsegmentator_examples"
CT = f"{TS}/ct_full/example_ct.nii.gz"
CT_SMALL = f"{TS}/ct_labeled/example_ct_sm.nii.gz"
CT_SEG = f"{TS}/ct_labeled/example_seg.nii.gz"
MR_LPS = f"{TS}/mr_labeled/example_mr_sm.nii.gz"
MR_SEG = f"{TS}/mr_labeled/example_seg_mr.nii.gz"
SERIES = f"{TS}/ct_dicom_series/dicom"
SERIES_SEG = f"{TS}/ct_dicom_series/example_seg_dicom.nii.gz"
SMALL = "medical/nibabel_pydicom_small"


def _nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


@pytest.fixture(scope="module")
def series_volume(data_root: Path) -> Volume:
    return load_volume(data_root / SERIES)


@pytest.mark.parametrize(
    ("path", "load", "modality"), [(CT, True, "ct"), (MR_LPS, True, "mri"), (SERIES, False, "ct")]
)
def test_metatensor_preprocessing_equals_monai_loader(
    data_root: Path, path: str, load: bool, modality: str, series_volume: Volume
) -> None:
    """volume_transform(load=False) on the Volume = volume_transform(load=True) on the path."""
    source = data_root / path
    kwargs: dict[str, Any] = {"spacing": (2.5, 3.0, 3.5), "modality": modality}
    expected = volume_transform(**kwargs, min_size=(48, 48, 48))(str(source))
    vol = load_volume(source) if load else series_volume
    got = volume_transform(**kwargs, min_size=(48, 48, 48), load=False)(vol.to_metatensor())
    assert torch.equal(got.as_tensor(), expected.as_tensor())
    torch.testing.assert_close(got.affine, expected.affine, rtol=0, atol=1e-9)


def test_missing_and_unsupported(tmp_path: Path, data_root: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.nii\.gz does not exist"):
        load_volume(tmp_path / "nope.nii.gz")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match=r"notes\.txt is not a NIfTI file"):
        load_volume(text)
    with pytest.raises(ValueError, match=r"CT_small\.dcm is a single DICOM file .*2D"):
        load_volume(data_root / SMALL / "CT_small.dcm")


def test_constant_and_non_finite(tmp_path: Path) -> None:
    zeros = _nifti(tmp_path / "zeros.nii", np.zeros((8, 8, 8), np.int16))
    with pytest.raises(ValueError, match=r"zeros\.nii is constant \(every voxel is 0\)"):
        load_volume(zeros)
    assert load_volume(zeros, allow_constant=True).array.shape == (1, 8, 8, 8)
    for bad in (np.nan, np.inf, -np.inf):
        data = np.ones((8, 8, 8), np.float32)
        data[1, 2, 3] = data[4, 5, 6] = bad
        path = _nifti(tmp_path / "bad.nii", data)
        with pytest.raises(ValueError, match=r"bad\.nii has 2 non-finite voxel values"):
            load_volume(path)


def test_label_pairs_that_match(data_root: Path) -> None:
    check_label_pair(data_root / CT_SMALL, data_root / CT_SEG)
    check_label_pair(data_root / MR_LPS, data_root / MR_SEG)
    # the series' labels are stored with two axes flipped: the same voxels in another order
    labels = nib.load(data_root / SERIES_SEG)
    assert nib.aff2axcodes(labels.affine) != nib.aff2axcodes(read_header(data_root / SERIES).affine)
    check_label_pair(data_root / SERIES, data_root / SERIES_SEG)
    check_label_pair(load_volume(data_root / CT_SMALL), load_volume(data_root / CT_SEG))


def test_label_pairs_that_do_not(tmp_path: Path, data_root: Path) -> None:
    with pytest.raises(
        ValueError, match=r"label .*example_seg\.nii\.gz and image .*example_ct\.nii"
    ):
        check_label_pair(data_root / CT, data_root / CT_SEG)  # 30 vs 112 slices
    seg = nib.load(data_root / CT_SEG)
    labels = np.asarray(seg.dataobj)
    for shift, ok in ((1e-4, True), (0.01, False)):
        affine = seg.affine.copy()
        affine[0, 3] += shift
        moved = _nifti(tmp_path / "moved.nii.gz", labels, affine)
        if ok:
            check_label_pair(data_root / CT_SMALL, moved)
        else:
            with pytest.raises(ValueError, match=r"moved\.nii\.gz and image .* different affines"):
                check_label_pair(data_root / CT_SMALL, moved)
    soft = _nifti(tmp_path / "soft.nii.gz", labels.astype(np.float32) * 0.5, seg.affine)
    with pytest.raises(ValueError, match=r"soft\.nii\.gz .*non-integer values \(e\.g\. \d+\.5\)"):
        check_label_pair(data_root / CT_SMALL, soft)
    negative = _nifti(tmp_path / "neg.nii.gz", labels.astype(np.int16) - 1, seg.affine)
    with pytest.raises(ValueError, match=r"neg\.nii\.gz .*negative values"):
        check_label_pair(data_root / CT_SMALL, negative)
    empty = _nifti(tmp_path / "empty.nii.gz", np.zeros_like(labels), seg.affine)
    check_label_pair(data_root / CT_SMALL, empty)  # no foreground is a valid label map
