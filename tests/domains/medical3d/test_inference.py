"""Sliding-window segmentation written back as NIfTI on the input's grid, on real volumes."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from domainfm.core.vit import VisionTransformerND
from domainfm.domains.medical3d.inference import segment_volume
from domainfm.domains.medical3d.io import load_volume
from domainfm.tasks.finetune_module import FinetuneModule

CT = "medical/totalsegmentator_examples/ct_labeled/example_ct_sm.nii.gz"
MR_LPS = "medical/totalsegmentator_examples/mr_labeled/example_mr_sm.nii.gz"
FOUR_D = "medical/nibabel_pydicom_small/example4d.nii.gz"
SERIES = "medical/totalsegmentator_examples/ct_dicom_series/dicom"


def threshold_model(t: torch.Tensor) -> torch.Tensor:
    """Two-class logits: class 1 where the normalized intensity is above 0.5."""
    return torch.cat([0.5 - t, t - 0.5], dim=1)


def _mri_above_half(ref: nib.Nifti1Image) -> np.ndarray:
    """Voxels above the middle of the 0.5-99.5 percentile range, in the file's own order."""
    ras = np.asarray(nib.as_closest_canonical(ref).dataobj, dtype=np.float32)
    lo, hi = np.percentile(ras, [0.5, 99.5])
    data = np.asarray(ref.dataobj, dtype=np.float32)
    return np.clip((data - lo) / (hi - lo), 0, 1) > 0.5


def _same_geometry(out: nib.Nifti1Image, ref: nib.Nifti1Image) -> None:
    assert out.shape == ref.shape
    np.testing.assert_allclose(out.affine, ref.affine)
    assert out.header.get_zooms() == ref.header.get_zooms()
    assert int(out.header["sform_code"]) == int(ref.header["sform_code"])
    assert nib.aff2axcodes(out.affine) == nib.aff2axcodes(ref.affine)


def test_ct_labels_land_on_the_input_voxels(tmp_path: Path, data_root: Path) -> None:
    ref = nib.load(data_root / CT)
    out_path = segment_volume(
        threshold_model,
        data_root / CT,
        tmp_path / "seg.nii.gz",
        roi_size=32,
        spacing=3.0,
        modality="ct",
        overlap=0.25,
    )
    out = nib.load(out_path)
    _same_geometry(out, ref)
    assert out.get_data_dtype() == np.uint8
    hu = np.asarray(ref.dataobj, dtype=np.float32)
    expected = np.clip((hu + 1000) / 2000, 0, 1) > 0.5  # HU > 0
    assert np.array_equal(np.asarray(out.dataobj) == 1, expected)


def test_lps_mri_is_written_back_in_lps(tmp_path: Path, data_root: Path) -> None:
    ref = nib.load(data_root / MR_LPS)
    assert nib.aff2axcodes(ref.affine) != ("R", "A", "S")
    out = nib.load(
        segment_volume(
            threshold_model,
            data_root / MR_LPS,
            tmp_path / "mr.nii",
            roi_size=32,
            spacing=3.0,
            modality="mri",
        )
    )
    _same_geometry(out, ref)
    assert np.array_equal(np.asarray(out.dataobj) == 1, _mri_above_half(ref))


def test_resampled_inference_returns_to_input_grid(tmp_path: Path, data_root: Path) -> None:
    """At a finer model spacing, labels are resampled back (nearest) onto the input grid."""
    ref = nib.load(data_root / MR_LPS)
    out = nib.load(
        segment_volume(
            threshold_model,
            data_root / MR_LPS,
            tmp_path / "mr2.nii.gz",
            roi_size=48,
            spacing=2.0,
            modality="mri",
        )
    )
    _same_geometry(out, ref)
    agreement = (np.asarray(out.dataobj) == 1) == _mri_above_half(ref)
    assert agreement.mean() > 0.95  # disagreements only where 3 mm -> 2 mm -> 3 mm blurs edges


def test_finetune_module_segments_a_whole_volume(tmp_path: Path, data_root: Path) -> None:
    torch.manual_seed(0)
    vit = VisionTransformerND(
        in_chans=1, spatial_dims=3, patch_size=8, embed_dim=32, depth=2, num_heads=4
    )
    module = FinetuneModule(
        backbone=vit, task="segmentation", num_classes=3, num_maps=2, decoder_dim=16
    ).eval()
    ref = nib.load(data_root / CT)
    out = nib.load(
        segment_volume(
            module,
            data_root / CT,
            tmp_path / "m.nii.gz",
            roi_size=32,
            spacing=3.0,
            modality="ct",
            sw_batch_size=4,
        )
    )
    _same_geometry(out, ref)
    assert set(np.unique(np.asarray(out.dataobj))) <= {0, 1, 2}


def test_dicom_series_is_segmented_on_its_grid(tmp_path: Path, data_root: Path) -> None:
    """A DICOM folder: the labels are written on the series' voxel grid with its RAS affine."""
    series = load_volume(data_root / SERIES)
    out = nib.load(
        segment_volume(
            threshold_model,
            data_root / SERIES,
            tmp_path / "series_seg.nii",
            roi_size=64,
            spacing=3.0,
            modality="ct",
            overlap=0.25,
        )
    )
    assert out.shape == series.shape == (512, 512, 20)
    np.testing.assert_allclose(out.affine, series.affine, atol=1e-4)  # stored as float32
    assert int(out.header["sform_code"]) == int(out.header["qform_code"]) == 1
    assert out.header.get_zooms() == pytest.approx(series.spacing)
    # labels follow the series' own voxels: HU > 0 up to the blur of 1 -> 3 -> 1 mm resampling
    expected = series.array[0] > 0
    labels = np.asarray(out.dataobj) == 1
    assert (labels == expected).mean() > 0.95
    assert (labels == expected[::-1]).mean() < (labels == expected).mean() - 0.05


def test_bad_inputs_name_the_file(tmp_path: Path, data_root: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"absent\.nii\.gz"):
        segment_volume(
            threshold_model,
            tmp_path / "absent.nii.gz",
            tmp_path / "o.nii.gz",
            roi_size=32,
            spacing=3.0,
            modality="ct",
        )
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(ValueError, match=r"could not read .*broken\.nii\.gz as NIfTI"):
        segment_volume(
            threshold_model, broken, tmp_path / "o.nii.gz", roi_size=32, spacing=3.0, modality="ct"
        )
    with pytest.raises(ValueError, match=r"example4d\.nii\.gz has shape \(128, 96, 24, 2\)"):
        segment_volume(
            threshold_model,
            data_root / FOUR_D,
            tmp_path / "o.nii.gz",
            roi_size=32,
            spacing=3.0,
            modality="mri",
        )
    with pytest.raises(ValueError, match="overlap must be in"):
        segment_volume(
            threshold_model,
            data_root / CT,
            tmp_path / "o.nii.gz",
            roi_size=32,
            spacing=3.0,
            modality="ct",
            overlap=1.0,
        )
