"""What the volume fine-tuning datasets and data modules share: the channel files of a case,
the arguments refused before any file is read, the missing files named at once, whole
validation volumes only with validation cases, and the recorded input contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from domainfm.domains.medical3d.boxed_volumes import BoxedVolumeDataset
from domainfm.domains.medical3d.detection_datamodule import VolumeDetectionDataModule
from domainfm.domains.medical3d.labeled_volumes import LabeledVolumeDataset
from domainfm.domains.medical3d.seg_datamodule import VolumeSegDataModule
from domainfm.domains.medical3d.volume_cases import image_files, require_files

NO_BOXES = (np.zeros((0, 6)), np.zeros(0, dtype=np.int64))


def test_image_files() -> None:
    assert image_files("a.nii.gz") == [Path("a.nii.gz")]
    assert image_files(["a.nii.gz", Path("b.nii.gz")]) == [Path("a.nii.gz"), Path("b.nii.gz")]


def test_missing_files_are_named_together(tmp_path: Path) -> None:
    present = tmp_path / "x.nii.gz"
    present.touch()
    with pytest.raises(FileNotFoundError, match=r"files not found: .*a\.nii\.gz, .*b\.nii\.gz"):
        require_files([tmp_path / "a.nii.gz", present, tmp_path / "b.nii.gz"])
    with pytest.raises(FileNotFoundError, match=r"c\.nii\.gz"):
        LabeledVolumeDataset(images=[present], labels=[tmp_path / "c.nii.gz"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"images": []}, "images is empty"),
        ({"images": ["a.nii.gz", "b.nii.gz"]}, "differ in length"),
        ({"positive_fraction": 1.5}, "positive_fraction"),
        ({"modality": "pet"}, "modality"),
        ({"spacing": -1.0}, "spacing"),
    ],
)
def test_both_datasets_refuse_arguments_before_reading(kwargs: dict, match: str) -> None:
    """Nothing exists on disk: each error is raised before any file is looked at."""
    labeled = {"images": ["a.nii.gz"], "labels": ["a_seg.nii.gz"], **kwargs}
    boxed = {"images": ["a.nii.gz"], "targets": [NO_BOXES], **kwargs}
    with pytest.raises(ValueError, match=match):
        LabeledVolumeDataset(**labeled)
    with pytest.raises(ValueError, match=match):
        BoxedVolumeDataset(**boxed)


def test_no_validation_cases_no_validation_loader() -> None:
    seg = VolumeSegDataModule(images=["a.nii.gz"], labels=["a_seg.nii.gz"], spacing=2.0)
    det = VolumeDetectionDataModule(images=["a.nii.gz"], labels=["a_seg.nii.gz"], objects={1: 0})
    for module in (seg, det):
        module.val_set = None
        assert module.val_dataloader() == [] and module.test_dataloader() == []


def test_contracts_record_the_cases_and_the_task() -> None:
    seg = VolumeSegDataModule(
        images=[["t1.nii.gz", "t2.nii.gz"]],
        labels=["seg.nii.gz"],
        label_map={1: 1},
        class_names=["bg", "lesion"],
        modality="mri",
        spacing=2.0,
        crop_size=32,
    )
    contract = seg.input_contract()
    assert (contract.channels, contract.spacing, contract.class_names) == (
        2,
        (2.0, 2.0, 2.0),
        ["bg", "lesion"],
    )
    assert contract.extra == {"label_map": {1: 1}}
    det = VolumeDetectionDataModule(images=["a.nii.gz"], labels=["s.nii.gz"], objects={1: 0})
    assert det.input_contract().extra == {"objects": {1: 0}, "task": "detection"}
    assert det.input_contract().channels == 1
