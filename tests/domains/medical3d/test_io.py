"""load_volume on real NIfTI files and a real DICOM series, and a clear error for each bad input."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai import transforms as mt

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


def _series(
    tmp_path: Path,
    data_root: Path,
    picks: Sequence[int],
    edit: Callable[[int, Any], None] | None = None,
    names: Sequence[str] | None = None,
) -> Path:
    """A folder with the real series' slices ``picks`` (in file-name order), edited."""
    source = sorted((data_root / SERIES).iterdir())
    folder = tmp_path / "series"
    folder.mkdir(parents=True)
    for n, i in enumerate(picks):
        ds = pydicom.dcmread(source[i])
        if edit is not None:
            edit(i, ds)
        ds.save_as(folder / (names[n] if names is not None else source[i].name))
    return folder


@pytest.fixture(scope="module")
def series_volume(data_root: Path) -> Volume:
    return load_volume(data_root / SERIES)


def test_nifti_ct(data_root: Path) -> None:
    raw = nib.load(data_root / CT)
    vol = load_volume(data_root / CT)
    assert vol.array.shape == (1, 122, 101, 112) and vol.array.dtype == np.float32
    assert vol.array.flags.c_contiguous
    np.testing.assert_array_equal(vol.array[0], np.asarray(raw.dataobj, dtype=np.float32))
    np.testing.assert_array_equal(vol.affine, raw.affine)
    assert vol.affine.dtype == np.float64
    assert vol.spacing == (3.0, 3.0, 3.0) and vol.shape == (122, 101, 112)
    assert vol.modality == "ct" and vol.path == data_root / CT


def test_nifti_lps_mri_keeps_file_axes(data_root: Path) -> None:
    raw = nib.load(data_root / MR_LPS)
    vol = load_volume(data_root / MR_LPS)
    assert nib.aff2axcodes(vol.affine) == ("L", "P", "S")  # not reoriented
    np.testing.assert_array_equal(vol.array[0], np.asarray(raw.dataobj, dtype=np.float32))
    np.testing.assert_array_equal(vol.affine, raw.affine)
    assert vol.modality is None


def test_modality_heuristic(tmp_path: Path, data_root: Path) -> None:
    # a T1 MRI (int16) with a few negative interpolation values down to -610: not CT
    assert load_volume(data_root / SMALL / "anatomical.nii").modality is None
    mni = "medical/mni152_2009_nilearn/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    assert load_volume(data_root / mni).modality is None  # uint8
    assert load_volume(data_root / CT_SMALL).modality == "ct"  # int16 HU
    # the same HU stored as float: not integer data, so no guess
    hu = np.asarray(nib.load(data_root / CT_SMALL).dataobj, dtype=np.float32) + 0.25
    assert load_volume(_nifti(tmp_path / "f.nii", hu)).modality is None


def test_dicom_series_matches_monai(data_root: Path, series_volume: Volume) -> None:
    vol = series_volume
    ref = mt.LoadImage(image_only=True, ensure_channel_first=True)(str(data_root / SERIES))
    assert vol.array.shape == (1, 512, 512, 20)  # (C, columns, rows, slices)
    np.testing.assert_array_equal(vol.array, ref.numpy())
    np.testing.assert_array_equal(vol.affine, ref.affine.numpy())
    # spacing from PixelSpacing and the slice positions (2 mm), not SliceThickness (3 mm)
    assert vol.spacing == (0.9765625, 0.9765625, 2.0)
    assert vol.modality == "ct"
    assert vol.array.min() == -1024.0  # RescaleIntercept applied
    # voxel k lies at slice k's ImagePositionPatient (LPS -> RAS flips x and y)
    for k, file in enumerate(sorted((data_root / SERIES).iterdir())):
        ipp = np.asarray(pydicom.dcmread(file, stop_before_pixels=True).ImagePositionPatient)
        np.testing.assert_allclose(vol.affine @ [0, 0, k, 1], [-ipp[0], -ipp[1], ipp[2], 1])


def test_slices_are_sorted_by_position_not_name(
    tmp_path: Path, data_root: Path, series_volume: Volume
) -> None:
    picks = [4, 5, 6, 7]
    folder = _series(tmp_path, data_root, picks, names=["b.dcm", "d.dcm", "a.dcm", "c.dcm"])
    vol = load_volume(folder)
    np.testing.assert_array_equal(vol.array, series_volume.array[..., 4:8])
    np.testing.assert_allclose(vol.affine @ [0, 0, 0, 1], series_volume.affine @ [0, 0, 4, 1])
    np.testing.assert_allclose(vol.affine[:3, :3], series_volume.affine[:3, :3])


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


def test_truncated_and_corrupt_nifti(tmp_path: Path, data_root: Path) -> None:
    data = (data_root / CT_SMALL).read_bytes()
    half = tmp_path / "half.nii.gz"
    half.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"could not read .*half\.nii\.gz as NIfTI: .*truncated"):
        load_volume(half)
    plain = (data_root / SMALL / "anatomical.nii").read_bytes()
    cut = tmp_path / "cut.nii"
    cut.write_bytes(plain[: len(plain) // 2])
    with pytest.raises(ValueError, match=r"cut\.nii as NIfTI: the file has \d+ bytes.*truncated"):
        read_header(cut)  # an uncompressed file is caught from its header and size alone
    for name, junk in (("junk.nii.gz", b"\x1f\x8b not gzip"), ("junk.nii", bytes(range(256)))):
        (tmp_path / name).write_bytes(junk)
        with pytest.raises(ValueError, match=rf"could not read .*{name} as NIfTI"):
            load_volume(tmp_path / name)


def test_dimensionality(tmp_path: Path, data_root: Path) -> None:
    with pytest.raises(ValueError, match=r"example4d\.nii\.gz has shape \(128, 96, 24, 2\).*4D"):
        load_volume(data_root / SMALL / "example4d.nii.gz")
    rng = np.random.default_rng(0)
    vol = load_volume(_nifti(tmp_path / "one.nii", rng.random((8, 9, 10, 1), np.float32)))
    assert vol.array.shape == (1, 8, 9, 10)  # a 4th axis of size 1 is fine
    for shape in ((16, 16), (16, 16, 1)):
        with pytest.raises(ValueError, match=rf"flat\.nii has shape \({shape[0]}, .*2D image"):
            load_volume(_nifti(tmp_path / "flat.nii", rng.random(shape, np.float32)))


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


def test_dicom_single_slice_and_no_dicom(tmp_path: Path, data_root: Path) -> None:
    one = tmp_path / "one"
    one.mkdir()
    (one / "CT_small.dcm").write_bytes((data_root / SMALL / "CT_small.dcm").read_bytes())
    with pytest.raises(ValueError, match=r"one holds a single 2D DICOM slice \(CT_small\.dcm\)"):
        load_volume(one)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README.txt").write_text("no slices here")
    with pytest.raises(ValueError, match=r"empty holds no DICOM files"):
        load_volume(empty)


def test_dicom_mixed_series_lists_them(tmp_path: Path, data_root: Path) -> None:
    def two_series(i: int, ds: Any) -> None:
        ds.SeriesInstanceUID = "1.2.826.0.1.1" if i < 2 else "1.2.826.0.1.2"

    folder = _series(tmp_path, data_root, [0, 1, 2, 3], edit=two_series)
    with pytest.raises(ValueError, match=r"series mixes 2 DICOM series .*1\.1'.*1\.2'"):
        load_volume(folder)


@pytest.mark.parametrize("tag", ["PixelSpacing", "ImagePositionPatient"])
def test_dicom_missing_geometry(tmp_path: Path, data_root: Path, tag: str) -> None:
    def drop(i: int, ds: Any) -> None:
        if i == 2:
            delattr(ds, tag)

    folder = _series(tmp_path, data_root, [0, 1, 2, 3], edit=drop)
    with pytest.raises(ValueError, match=rf"series: slice \S+16575\.dcm has no {tag}"):
        load_volume(folder)


def test_dicom_gap_is_an_error(tmp_path: Path, data_root: Path) -> None:
    folder = _series(tmp_path, data_root, [0, 1, 2, 4, 5])  # slice 3 missing: a 4 mm gap
    with pytest.raises(ValueError, match=r"inconsistent slice spacing: gaps from 2 to 4 mm"):
        load_volume(folder)
    assert load_volume(_series(tmp_path / "ok", data_root, [0, 2, 4])).spacing[2] == 4.0


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
