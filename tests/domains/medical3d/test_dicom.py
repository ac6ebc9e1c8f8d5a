"""The DICOM series reader on a real CT series (a folder of slices): slices sorted by
position, header geometry equal to MONAI's loader, a clear error for each broken series, and
the series as one training volume."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import torch
from monai import transforms as mt

from domainfm.domains.medical3d import Volume, VolumeCropDataset, load_volume, volume_transform
from domainfm.domains.medical3d.dicom import is_dicom_file, read_dicom_series
from domainfm.domains.medical3d.io import VolumeSkippedWarning
from domainfm.domains.medical3d.preprocess import RAS_LABELS

SERIES = "medical/totalsegmentator_examples/ct_dicom_series/dicom"
LABELS = "medical/totalsegmentator_examples/ct_dicom_series/example_seg_dicom.nii.gz"
NATIVE = (0.9765625, 0.9765625, 2.0)  # from the slices' PixelSpacing and positions
SMALL = "medical/nibabel_pydicom_small"


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


def test_series_folder_loads_sorted_with_header_spacing(data_root: Path) -> None:
    x = volume_transform(spacing=NATIVE, modality="ct")(str(data_root / SERIES))
    assert tuple(x.shape) == (1, 512, 512, 20)
    torch.testing.assert_close(x.pixdim.float(), torch.tensor(NATIVE))
    # the label map (a NIfTI written from the same series, stored with two axes flipped) lands
    # on the same RAS grid ...
    load_ras = mt.Compose(
        [
            mt.LoadImage(image_only=True, ensure_channel_first=True),
            mt.Orientation(axcodes="RAS", labels=RAS_LABELS),
        ]
    )
    labels = load_ras(str(data_root / LABELS))
    torch.testing.assert_close(x.affine.double(), labels.affine.double())
    # ... and on the same anatomy: organ voxels are soft tissue (HU > -200 -> > 0.4 after the
    # [-1000, 1000] window); with the AP axis flipped this fraction drops to about 0.72
    organ = labels[0] > 0
    soft = x[0] > 0.4
    assert float((soft & organ).sum() / organ.sum()) > 0.9
    assert float((soft.flip(1) & organ).sum() / organ.sum()) < 0.8


def test_series_as_training_volume(data_root: Path) -> None:
    ds = VolumeCropDataset(files=[data_root / SERIES], crop_size=32, spacing=3.0)
    assert ds[0]["input"].shape == (1, 32, 32, 32)


def test_empty_folder_names_the_folder(tmp_path: Path) -> None:
    empty = tmp_path / "no_slices"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"could not load volume .*no_slices: .*no DICOM files"):
        VolumeCropDataset(files=[empty], strict=True)
    with (
        pytest.warns(VolumeSkippedWarning, match=r"skipping volume .*no_slices"),
        pytest.raises(ValueError, match=r"could not load any of the 1 volumes: .*no_slices"),
    ):
        VolumeCropDataset(files=[empty])


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


def test_header_only_read_has_the_loaded_geometry(data_root: Path, series_volume: Volume) -> None:
    header, slices = read_dicom_series(data_root / SERIES, pixels=False)
    assert header.kind == "dicom" and header.shape == series_volume.shape
    np.testing.assert_array_equal(header.affine, series_volume.affine)
    assert header.spacing == series_volume.spacing and header.modality == "ct"
    assert len(slices) == 20 and "PixelData" not in slices[0]


def test_dicom_file_detection(tmp_path: Path, data_root: Path) -> None:
    data = (data_root / SMALL / "CT_small.dcm").read_bytes()
    (tmp_path / "IM0001").write_bytes(data)  # no suffix: found by the DICM marker
    (tmp_path / ".hidden.dcm").write_bytes(data)
    (tmp_path / "DICOMDIR").write_bytes(data)
    (tmp_path / "notes.txt").write_text("not an image")
    assert data[128:132] == b"DICM"
    found = [p.name for p in tmp_path.iterdir() if is_dicom_file(p)]
    assert found == ["IM0001"]
