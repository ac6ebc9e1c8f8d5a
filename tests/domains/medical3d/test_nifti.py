"""The NIfTI reader on real files: values and affine as nibabel gives them, the modality
heuristic, and a clear error for truncated, corrupt, 2D and 4D files."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from domainfm.domains.medical3d import load_volume
from domainfm.domains.medical3d.io import read_header
from domainfm.domains.medical3d.nifti import is_nifti

TS = "medical/totalsegmentator_examples"
CT = f"{TS}/ct_full/example_ct.nii.gz"
CT_SMALL = f"{TS}/ct_labeled/example_ct_sm.nii.gz"
MR_LPS = f"{TS}/mr_labeled/example_mr_sm.nii.gz"
SMALL = "medical/nibabel_pydicom_small"


def _nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


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


def test_is_nifti_by_name() -> None:
    assert is_nifti(Path("a/ct.nii")) and is_nifti(Path("CT.NII.GZ"))
    assert not is_nifti(Path("ct.nii.bak")) and not is_nifti(Path("slice.dcm"))


def _hostile_nifti(
    path: Path, *, dtype: str = "int16", sform: bool = False, **fields: object
) -> Path:
    """A small NIfTI written at test time with header fields set as given, bypassing
    nibabel's repairs (the way a broken converter writes them)."""
    data = np.arange(4 * 5 * 6).reshape(4, 5, 6).astype(dtype)
    header = nib.Nifti1Header()
    header.set_data_dtype(data.dtype)
    image = nib.Nifti1Image(data, np.diag([1.5, 1.5, 2.0, 1.0]) if sform else None, header)
    if not sform:
        image.header.set_sform(None, code=0)
        image.header.set_qform(None, code=0)
    for key, value in fields.items():
        if key == "pixdim":
            image.header["pixdim"][1:4] = value
        elif key == "srow":
            image.header["srow_x"], image.header["srow_y"], image.header["srow_z"] = value
    raw = image.header.binaryblock  # header bytes as set, then the voxels
    offset = 352
    path.write_bytes(raw + b"\x00" * (offset - len(raw)) + data.tobytes())
    return path


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"pixdim": [0.0, 1.0, 1.0]}, r"pixdim\[1:4\] = \[0.0, 1.0, 1.0\].*finite and positive"),
        ({"pixdim": [1.0, -2.0, 1.0]}, r"pixdim\[1:4\] = \[1.0, -2.0, 1.0\]"),
        ({"pixdim": [float("nan"), 1.0, 1.0]}, r"pixdim\[1:4\] = \[nan"),
        ({"pixdim": [1.0, float("inf"), 1.0]}, r"pixdim\[1:4\] = \[1.0, inf"),
        (
            {"sform": True, "srow": ([1.0, 0, 0, 0], [2.0, 0, 0, 0], [0, 0, 1.0, 0])},
            "the affine .* is singular",
        ),
        (
            {"sform": True, "srow": ([float("nan"), 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0])},
            "non-finite",
        ),
        ({"dtype": "complex64"}, "voxel type complex is not supported"),
    ],
)
def test_invented_or_repaired_geometry_is_refused_naming_the_file(
    tmp_path: Path, fields: dict[str, object], message: str
) -> None:
    path = _hostile_nifti(tmp_path / "bad.nii", **fields)  # type: ignore[arg-type]
    for read in (read_header, load_volume):
        with pytest.raises(ValueError, match=message) as info:
            read(path)
        assert "bad.nii" in str(info.value)


def test_a_well_formed_header_still_loads(tmp_path: Path) -> None:
    volume = load_volume(_hostile_nifti(tmp_path / "ok.nii", pixdim=[1.5, 1.5, 2.0]))
    assert volume.spacing == pytest.approx((1.5, 1.5, 2.0))
