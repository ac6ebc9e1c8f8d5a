"""Fixes for the hostile-input suite (issue 16) in the medical domain: the gzip stream of a
``.nii.gz`` is CRC-checked, nibabel's log stays quiet, a zero DICOM ``RescaleSlope`` is
refused, input contracts and prepare options are validated, absurd crops are refused before
any file is read, and "nothing loaded" errors are one line."""

from __future__ import annotations

import argparse
import gzip
import logging
import struct
import warnings
import zlib
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
from nibabel import imageglobals

from domainfm.core.contract import contract_from_dict
from domainfm.core.size_guard import LIMIT_ENV, AllocationTooLarge
from domainfm.data.shards import prepare_shards
from domainfm.domains.medical3d import (
    VolumeCropDataset,
    VolumePretrainDataModule,
    load_volume,
    nifti,
)
from domainfm.domains.medical3d.contract import VolumeContract
from domainfm.domains.medical3d.io import VolumeSkippedWarning
from domainfm.domains.medical3d.nifti import quiet_nibabel
from domainfm.domains.medical3d.plugin import Medical3DPlugin
from domainfm.domains.medical3d.preprocess import check_resample
from domainfm.domains.medical3d.shards import VolumePreparer

SERIES = "medical/totalsegmentator_examples/ct_dicom_series/dicom"
CT_SMALL = "medical/totalsegmentator_examples/ct_labeled/example_ct_sm.nii.gz"


def _ct(shape: tuple[int, int, int] = (12, 10, 8)) -> np.ndarray:
    """An int16 CT-like volume: air around soft tissue with a bright core."""
    data = np.full(shape, -1000, np.int16)
    data[2:-2, 2:-2, 2:-2] = 40
    data[4:6, 4:6, 3:5] = 400
    return data


def _nifti_bytes(data: np.ndarray, zooms: tuple[float, float, float] = (2.0, 2.0, 2.0)) -> bytes:
    image = nib.Nifti1Image(data, np.diag([*zooms, 1.0]))
    return bytes(image.to_bytes())


def _gzip_with_trailer(payload: bytes, *, crc: int | None = None, size: int | None = None) -> bytes:
    """``payload`` as one gzip member whose CRC-32 / ISIZE trailer may be forged."""
    body = gzip.compress(payload, mtime=0)[:-8]
    crc = zlib.crc32(payload) if crc is None else crc
    size = len(payload) if size is None else size
    return body + struct.pack("<II", crc & 0xFFFFFFFF, size & 0xFFFFFFFF)


# --- gzip integrity -----------------------------------------------------------------------


def test_a_good_nii_gz_loads(tmp_path: Path) -> None:
    data = _ct()
    path = tmp_path / "good.nii.gz"
    path.write_bytes(_gzip_with_trailer(_nifti_bytes(data)))
    np.testing.assert_array_equal(load_volume(path).array[0], data.astype(np.float32))


@pytest.mark.parametrize("forged", [{"crc": 0x12345678}, {"size": 7}])
def test_a_wrong_gzip_trailer_is_refused_naming_the_file(
    tmp_path: Path, forged: dict[str, int]
) -> None:
    # the voxels decode perfectly; only the trailer read after the last slab tells
    path = tmp_path / "scan.nii.gz"
    path.write_bytes(_gzip_with_trailer(_nifti_bytes(_ct()), **forged))
    with pytest.raises(ValueError, match=r"scan\.nii\.gz as NIfTI: damaged gzip stream"):
        load_volume(path)


def test_data_after_the_voxels_inside_the_stream_is_fine(tmp_path: Path) -> None:
    data = _ct()
    path = tmp_path / "tail.nii.gz"
    path.write_bytes(_gzip_with_trailer(_nifti_bytes(data) + bytes(1000)))
    np.testing.assert_array_equal(load_volume(path).array[0], data.astype(np.float32))


def test_a_stream_going_on_for_ever_after_the_voxels_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nifti, "MAX_TRAILING_BYTES", 4096)
    path = tmp_path / "long.nii.gz"
    path.write_bytes(_gzip_with_trailer(_nifti_bytes(_ct()) + bytes(10_000)))
    with pytest.raises(ValueError, match=r"long\.nii\.gz.*after the voxel data"):
        load_volume(path)


# --- nibabel's log ------------------------------------------------------------------------


def _qform_only(path: Path, pixdim: list[float]) -> Path:
    """A ``.nii.gz`` placed by its qform alone, with the hostile ``pixdim`` as written
    (byte patches: nibabel would fix them on save)."""
    raw = bytearray(_nifti_bytes(_ct()))
    raw[76:108] = struct.pack("<8f", *pixdim)
    raw[252:256] = struct.pack("<hh", 1, 0)  # qform_code 1, sform_code 0
    path.write_bytes(gzip.compress(bytes(raw)))
    return path


@pytest.mark.parametrize(
    "pixdim", [[1.0, 0.0, 0.0, 0.0, 1, 1, 1, 1], [1.0, float("inf"), 2.0, 2.0, 1, 1, 1, 1]]
)
def test_refused_geometry_prints_nothing_but_the_error(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], pixdim: list[float]
) -> None:
    path = _qform_only(tmp_path / "flat.nii.gz", pixdim)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match=r"flat\.nii\.gz: pixdim"):
            load_volume(path)
    out, err = capfd.readouterr()
    assert (out, err, [str(w.message) for w in caught]) == ("", "", [])


def test_nibabel_logs_again_outside_our_reads() -> None:
    records: list[str] = []
    handler = _ListHandler(records)
    handler.setLevel(logging.DEBUG)
    imageglobals.logger.addHandler(handler)
    try:
        with quiet_nibabel():
            imageglobals.logger.error("inside")
        imageglobals.logger.error("outside")
    finally:
        imageglobals.logger.removeHandler(handler)
    assert records == ["outside"]


class _ListHandler(logging.Handler):
    """A logging handler collecting messages."""

    def __init__(self, records: list[str]) -> None:
        super().__init__()
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


# --- DICOM rescale --------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")
@pytest.mark.parametrize(
    ("tag", "value"),
    [("RescaleSlope", 0.0), ("RescaleSlope", "nan"), ("RescaleIntercept", "inf")],
)
def test_dicom_bad_rescale_is_refused_naming_slice_and_tag(
    tmp_path: Path, data_root: Path, tag: str, value: Any
) -> None:
    folder = tmp_path / "series"
    folder.mkdir()
    for n, source in enumerate(sorted((data_root / SERIES).iterdir())[:4]):
        ds = pydicom.dcmread(source)
        if n == 2:
            setattr(ds, tag, value)
        ds.save_as(folder / source.name)
    bad = sorted(folder.iterdir())[2].name
    with pytest.raises(ValueError, match=rf"series: slice {bad} has {tag}"):
        load_volume(folder)


# --- input contracts --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"spacing_mm": 0.0},
        {"spacing_mm": float("nan")},
        {"spacing_mm": [1.0, -1.0, 1.0]},
        {"spacing_mm": [1.0, 1.0]},
        {"hu_window": [1000.0, -1000.0]},
        {"hu_window": [0.0, float("inf")]},
        {"crop_size": [0, 16, 16]},
        {"channels": 0},
    ],
)
def test_a_broken_contract_is_refused_naming_the_checkpoint(fields: dict[str, Any]) -> None:
    good = {"kind": "volume", "modality": "ct", "spacing_mm": 1.5, "crop_size": [16, 16, 16]}
    contract_from_dict(good, source="model.ckpt")  # the base is fine
    field = next(iter(fields))
    with pytest.raises(ValueError, match=rf"^model\.ckpt: {field} must be"):
        contract_from_dict({**good, **fields}, source="model.ckpt")


def test_contract_spacing_forms() -> None:
    assert VolumeContract(modality="ct", spacing_mm=2).spacing == (2.0, 2.0, 2.0)
    assert VolumeContract(modality="ct", spacing_mm=[1, 2, 3]).spacing == (1.0, 2.0, 3.0)


# --- crops and padding ------------------------------------------------------------------------


def test_an_absurd_crop_is_refused_before_any_file_is_read(tmp_path: Path) -> None:
    with pytest.raises(AllocationTooLarge, match=r"training crop of 100000 x 100000 x 100000"):
        VolumeCropDataset(files=[tmp_path / "never_read.nii.gz"], crop_size=100_000)


def test_padding_to_the_crop_is_size_guarded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LIMIT_ENV, "0.001")  # 1 MiB
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    check_resample("small.nii.gz", (20, 20, 20), affine, (1.0, 1.0, 1.0), 1, (32, 32, 32))
    with pytest.raises(AllocationTooLarge, match=r"^small\.nii\.gz: padding .* crop size"):
        check_resample("small.nii.gz", (20, 20, 20), affine, (1.0, 1.0, 1.0), 1, (80, 80, 80))


# --- data modules and datasets ------------------------------------------------------------------


def test_config_errors_are_refused_at_construction(tmp_path: Path) -> None:
    files = [str(tmp_path / "a.nii.gz")]
    with pytest.raises(ValueError, match=r"spacing must be"):
        VolumePretrainDataModule(files=files, spacing=-2.0)
    with pytest.raises(ValueError, match=r"hu_window must be"):
        VolumePretrainDataModule(files=files, hu_window=(1000.0, -1000.0))
    with pytest.raises(ValueError, match=r"batch_size must be >= 1"):
        VolumePretrainDataModule(files=files, batch_size=0)
    with pytest.raises(ValueError, match=r"num_workers must be >= 0"):
        VolumePretrainDataModule(files=files, num_workers=-1)
    with pytest.raises(ValueError, match=r"spacing must be"):
        VolumeCropDataset(files=files, spacing=0.0)


def _bad_files(tmp_path: Path, count: int) -> list[Path]:
    paths = []
    for i in range(count):
        path = tmp_path / f"bad{i}.nii.gz"
        path.write_bytes(b"not a nifti file at all")
        paths.append(path)
    return paths


def test_nothing_loaded_is_one_line_listing_a_few(tmp_path: Path) -> None:
    bad = _bad_files(tmp_path, 7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VolumeSkippedWarning)
        with pytest.raises(ValueError) as err:
            VolumeCropDataset(files=bad, crop_size=8)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("could not load any of the 7 volumes: ")
    assert str(bad[0]) in message and str(bad[4]) in message and str(bad[5]) not in message
    assert message.endswith("; and 2 more")


def test_data_module_skip_warnings_only_when_something_loaded(
    tmp_path: Path, data_root: Path
) -> None:
    (bad,) = _bad_files(tmp_path, 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = VolumePretrainDataModule(files=[str(bad)], crop_size=8)
        with pytest.raises(ValueError, match=r"could not load any of the 1 volumes: .*bad0"):
            module.setup("fit")
    assert not [w for w in caught if issubclass(w.category, VolumeSkippedWarning)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = VolumePretrainDataModule(
            files=[str(bad), str(data_root / CT_SMALL)], crop_size=8, samples_per_volume=1
        )
        module.setup("fit")
    skips = [w for w in caught if issubclass(w.category, VolumeSkippedWarning)]
    assert len(skips) == 1 and "bad0.nii.gz" in str(skips[0].message)


# --- prepare -------------------------------------------------------------------------------------


def _prepare_args(**overrides: Any) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dtype")
    Medical3DPlugin().add_prepare_arguments(parser)
    args = parser.parse_args([])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"spacing": [0.0]}, r"--spacing must be"),
        ({"spacing": [-1.0]}, r"--spacing must be"),
        ({"spacing": [1.0, float("nan"), 1.0]}, r"--spacing must be"),
        ({"hu_window": [1000.0, -1000.0]}, r"--hu-window must be"),
        ({"hu_window": [5.0, 5.0]}, r"--hu-window must be"),
    ],
)
def test_prepare_options_are_refused_up_front(overrides: dict[str, Any], match: str) -> None:
    Medical3DPlugin().preparer(_prepare_args())  # the defaults are fine
    with pytest.raises(ValueError, match=match):
        Medical3DPlugin().preparer(_prepare_args(**overrides))
    args = _prepare_args(**overrides)
    with pytest.raises(ValueError):  # the API refuses them too
        VolumePreparer(spacing=args.spacing, hu_window=args.hu_window)


def test_nothing_prepared_is_one_line(tmp_path: Path) -> None:
    src = tmp_path / "raw"
    src.mkdir()
    with pytest.raises(ValueError) as err:
        prepare_shards(VolumePreparer(spacing=2.0), src, tmp_path / "out")
    assert str(err.value) == f"nothing could be prepared from {src}: no inputs found"
