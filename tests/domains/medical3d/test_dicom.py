"""A real CT DICOM series (a folder of slices) becomes one volume with header geometry."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai import transforms as mt

from domainfm.domains.medical3d import VolumeCropDataset, volume_transform
from domainfm.domains.medical3d.io import VolumeSkippedWarning
from domainfm.domains.medical3d.preprocess import RAS_LABELS

SERIES = "medical/totalsegmentator_examples/ct_dicom_series/dicom"
LABELS = "medical/totalsegmentator_examples/ct_dicom_series/example_seg_dicom.nii.gz"
NATIVE = (0.9765625, 0.9765625, 2.0)  # from the slices' PixelSpacing and positions


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
        pytest.raises(ValueError, match=r"could not load any of the 1 volumes:\n  .*no_slices"),
    ):
        VolumeCropDataset(files=[empty])
