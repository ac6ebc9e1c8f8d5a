"""Whole-volume detection output: boxes found on the preprocessed grid land in world RAS mm
through that grid's own affine (an oracle model that answers the label's box gives back the
label's world box), MONAI JSON and CSV agree, the box mask lies on the input's grid and
affine (NIfTI and a DICOM series), nothing is left half-written, and bad inputs are named."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import Tensor

from domainfm.domains.medical3d.boxed_volumes import grid_boxes, preprocess_channels
from domainfm.domains.medical3d.boxes3d import label_map_boxes, read_box_json, world_to_voxel
from domainfm.domains.medical3d.contract import VolumeContract
from domainfm.domains.medical3d.detect_volume import CSV_COLUMNS, JSON_KEY, detect_volume
from domainfm.domains.medical3d.io import load_volume

WHOLE_TUMOUR = {1: 0, 2: 0, 3: 0, 4: 0}
SPACING = 6.0
MRI = VolumeContract(modality="mri", spacing_mm=SPACING)


class _Oracle(torch.nn.Module):
    """Answers the given voxel boxes (on the preprocessed grid) with decreasing scores; checks
    that it sees the preprocessed volume."""

    def __init__(self, boxes: Tensor, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.boxes, self.shape = boxes, shape

    def forward(self, x: Tensor) -> list[dict[str, Tensor]]:
        assert tuple(x.shape[2:]) == self.shape and x.shape[:2] == (1, 1)
        count = len(self.boxes)
        return [
            {
                "boxes": self.boxes,
                "labels": torch.zeros(count, dtype=torch.long),
                "scores": torch.linspace(0.3, 0.9, count) if count else torch.zeros(0),
            }
        ]


def _oracle_for(image: Path, world: np.ndarray, spacing: float = SPACING) -> _Oracle:
    x, affine = preprocess_channels(
        [load_volume(image)], spacing=(spacing,) * 3, modality="mri", hu_window=(-1.0, 1.0)
    )
    boxes, _ = grid_boxes((world, np.zeros(len(world), dtype=np.int64)), affine, x.shape[1:])
    return _Oracle(boxes, tuple(x.shape[1:]))


def test_boxes_land_on_the_label_region_in_world_mm(
    brats_mini: dict[str, dict[str, Path]], tmp_path: Path
) -> None:
    case = brats_mini["brats_2013_pat0006_1"]
    world, _ = label_map_boxes(case["seg"], objects=WHOLE_TUMOUR, min_volume_mm3=1000)
    shifted = world + np.array([20.0, -12.0, 8.0] * 2)  # a second box, lower scored
    oracle = _oracle_for(case["flair"], np.concatenate([shifted, world]))
    out = tmp_path / "found.json"
    report: dict[str, object] = {}
    written = detect_volume(
        oracle,
        case["flair"],
        out,
        contract=VolumeContract(modality="mri", spacing_mm=SPACING, class_names=["whole tumour"]),
        box_mask=tmp_path / "found_mask.nii.gz",
        report=report,
    )
    assert written == [out, tmp_path / "found.csv", tmp_path / "found_mask.nii.gz"]
    assert report["boxes"] == 2 and report["spacing"] == (SPACING,) * 3
    data = json.loads(out.read_text())
    assert data["box_mode"] == "cccwhd" and data["space"] == "RAS"
    entry = data[JSON_KEY][0]
    assert entry["image"] == case["flair"].name and entry["label"] == [0, 0]
    assert entry["score"] == sorted(entry["score"], reverse=True)
    assert entry["class_name"] == ["whole tumour"] * 2
    back = read_box_json(out, key=JSON_KEY)[tmp_path / case["flair"].name][0]
    np.testing.assert_allclose(back[0], world[0], atol=1e-3)  # the top box: the label's
    np.testing.assert_allclose(back[1], shifted[0], atol=1e-3)
    with open(tmp_path / "found.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 2
    corners = [float(rows[0][k]) for k in CSV_COLUMNS[4:10]]
    np.testing.assert_allclose(corners, world[0], atol=1e-3)
    assert float(rows[0]["score"]) == pytest.approx(entry["score"][0], abs=1e-6)
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave no temporaries


def test_box_mask_lies_on_the_input_grid(
    brats_mini: dict[str, dict[str, Path]], tmp_path: Path
) -> None:
    case = brats_mini["brats_2013_pat0006_1"]
    world, _ = label_map_boxes(case["seg"], objects=WHOLE_TUMOUR, min_volume_mm3=1000)
    mask_path = tmp_path / "mask.nii"
    detect_volume(
        _oracle_for(case["flair"], world),
        case["flair"],
        tmp_path / "b.json",
        contract=MRI,
        box_mask=mask_path,
    )
    source, mask = nib.load(case["flair"]), nib.load(mask_path)
    assert mask.shape == source.shape
    np.testing.assert_allclose(mask.affine, source.affine, atol=1e-6)
    assert int(mask.header["sform_code"]) == 1 and int(mask.header["qform_code"]) == 1
    values = np.asarray(mask.dataobj)
    index = np.argwhere(np.ones(values.shape, dtype=bool))
    centres = index @ source.affine[:3, :3].T + source.affine[:3, 3]
    inside = ((centres >= world[0, :3]) & (centres <= world[0, 3:])).all(axis=1)
    assert inside.any()
    np.testing.assert_array_equal(values.reshape(-1) == 1, inside)  # class 0 → value 1
    label = np.asarray(nib.load(case["seg"]).dataobj) > 0
    assert values[label].mean() > 0.99  # the tumour's voxels are covered


def test_dicom_series_input(data_root: Path, tmp_path: Path) -> None:
    """A DICOM folder: the mask is written on the series' voxel grid with its RAS affine."""
    series = data_root / "medical/totalsegmentator_examples/ct_dicom_series/dicom"
    volume = load_volume(series)
    centre = volume.affine @ np.array([*(np.array(volume.shape) / 2), 1.0])
    world = np.array([[*(centre[:3] - 15.0), *(centre[:3] + 15.0)]])
    x, affine = preprocess_channels(
        [volume], spacing=(4.0, 4.0, 4.0), modality="ct", hu_window=(-1000.0, 1000.0)
    )
    boxes = torch.from_numpy(world_to_voxel(world, affine)).float()
    written = detect_volume(
        _Oracle(boxes, tuple(x.shape[1:])),
        series,
        tmp_path / "ct.json",
        contract=VolumeContract(modality="ct", spacing_mm=4.0),
        box_mask=tmp_path / "ct_mask.nii.gz",
    )
    mask = nib.load(written[-1])
    assert mask.shape == volume.shape
    np.testing.assert_allclose(mask.affine, volume.affine, atol=1e-4)
    assert 0 < int(np.asarray(mask.dataobj).sum()) < np.prod(volume.shape)


def test_no_boxes_still_writes_valid_files(
    brats_mini: dict[str, dict[str, Path]], tmp_path: Path
) -> None:
    case = brats_mini["brats_2013_pat0004_1"]
    detect_volume(
        _oracle_for(case["flair"], np.zeros((0, 6))),
        case["flair"],
        tmp_path / "none.json",
        contract=MRI,
        box_mask=tmp_path / "none.nii.gz",
    )
    assert json.loads((tmp_path / "none.json").read_text())[JSON_KEY][0]["box"] == []
    assert (tmp_path / "none.csv").read_text().splitlines() == [",".join(CSV_COLUMNS)]
    assert not np.asarray(nib.load(tmp_path / "none.nii.gz").dataobj).any()


def test_bad_inputs_are_named(brats_mini: dict[str, dict[str, Path]], tmp_path: Path) -> None:
    case = brats_mini["brats_2013_pat0004_1"]
    with pytest.raises(FileNotFoundError, match="absent"):
        detect_volume(
            _Oracle(torch.zeros(0, 6), (1,)), tmp_path / "absent.nii.gz", tmp_path / "o.json",
            contract=MRI,
        )  # fmt: skip
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a nifti")
    with pytest.raises(ValueError, match=r"broken\.nii\.gz"):
        detect_volume(
            _Oracle(torch.zeros(0, 6), (1,)), broken, tmp_path / "o.json",
            contract=MRI,
        )  # fmt: skip
    with pytest.raises(ValueError, match=f"{case['flair'].name}.*Detection3DModule"):
        detect_volume(
            lambda x: torch.zeros(1, 2), case["flair"], tmp_path / "o.json",
            contract=MRI,
        )  # fmt: skip
    assert not (tmp_path / "o.json").exists()
