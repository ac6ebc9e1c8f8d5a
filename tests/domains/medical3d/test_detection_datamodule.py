"""Volumes with boxes for 3D detection: boxes on the preprocessed grid through its own affine,
box-aware seeded crops with clipped boxes, the same boxes from a label map and from a MONAI
detection JSON, whole validation volumes, the recorded contract, and refused configurations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from domainfm.domains.medical3d.boxed_volumes import BoxedVolumeDataset, clip_boxes, collate_boxes
from domainfm.domains.medical3d.boxes3d import label_map_boxes, voxel_to_world
from domainfm.domains.medical3d.detection_datamodule import VolumeDetectionDataModule

WHOLE_TUMOUR = {1: 0, 2: 0, 3: 0, 4: 0}
CASE = "brats_2013_pat0006_1"


def _targets(seg: Path) -> tuple[np.ndarray, np.ndarray]:
    return label_map_boxes(seg, objects=WHOLE_TUMOUR, min_volume_mm3=1000)


def test_grid_boxes_go_back_to_the_same_world_box(brats_mini: dict[str, dict[str, Path]]) -> None:
    """World box → voxel box on the 6 mm RAS grid (resampled, reoriented, padded) → world with
    that grid's affine gives the label's world box again."""
    case = brats_mini[CASE]
    world, classes = _targets(case["seg"])
    ds = BoxedVolumeDataset(
        images=[case["flair"]],
        targets=[(world, classes)],
        crop_size=16,
        spacing=6.0,
        modality="mri",
    )
    assert ds.volumes[0].shape[0] == 1 and ds.affines[0][0, 0] > 0  # RAS
    np.testing.assert_allclose(voxel_to_world(ds.boxes[0], ds.affines[0]), world, atol=1e-3)
    assert ds.labels[0].tolist() == [0]


def test_crops_hold_their_clipped_boxes_and_follow_the_seed(
    brats_mini: dict[str, dict[str, Path]],
) -> None:
    case = brats_mini[CASE]
    ds = BoxedVolumeDataset(
        images=[case["flair"]],
        targets=[_targets(case["seg"])],
        crop_size=16,
        spacing=4.0,
        modality="mri",
        positive_fraction=1.0,
        samples_per_volume=4,
    )
    full = ds.boxes[0][0]
    for seed in range(6):
        sample = ds[(seed % 4, seed)]
        assert sample["input"].shape == (1, 16, 16, 16)
        boxes = sample["boxes"]
        assert boxes.shape == (1, 6) and sample["labels"].tolist() == [0]  # centred in it
        assert (boxes[:, :3] >= 0).all() and (boxes[:, 3:] <= 16).all()
        assert (boxes[:, 3:] > boxes[:, :3]).all()
        again = ds[(seed % 4, seed)]
        assert torch.equal(again["input"], sample["input"]) and torch.equal(again["boxes"], boxes)
        assert (boxes[0, 3:] - boxes[0, :3] <= full[3:] - full[:3] + 1e-6).all()


def test_clip_boxes_drops_boxes_outside_the_window() -> None:
    boxes = torch.tensor([[0.0, 0, 0, 4, 4, 4], [10, 10, 10, 12, 12, 12], [6, 1, 1, 9, 3, 3]])
    kept, labels = clip_boxes(boxes, torch.tensor([0, 1, 2]), (2, 0, 0), (6, 6, 6))
    assert kept.tolist() == [[0, 0, 0, 2, 4, 4], [4, 1, 1, 6, 3, 3]]
    assert labels.tolist() == [0, 2]
    batch = collate_boxes([{"input": torch.zeros(1, 2, 2, 2), "boxes": kept, "labels": labels}])
    assert batch["input"].shape == (1, 1, 2, 2, 2) and batch["boxes"][0].shape == (2, 6)


def test_label_maps_and_json_give_the_same_cases(
    brats_mini: dict[str, dict[str, Path]], tmp_path: Path
) -> None:
    case, other = brats_mini[CASE], brats_mini["brats_2013_pat0004_1"]
    common = {"modality": "mri", "spacing": 4.0, "crop_size": 16, "samples_per_volume": 2}
    from_labels = VolumeDetectionDataModule(
        images=[str(case["flair"])],
        labels=[str(case["seg"])],
        val_images=[str(other["flair"])],
        val_labels=[str(other["seg"])],
        objects=WHOLE_TUMOUR,
        min_volume_mm3=1000,
        class_names=["whole tumour"],
        **common,
    )
    from_labels.setup("fit")

    def entry(paths: dict[str, Path]) -> dict[str, object]:
        world, labels = _targets(paths["seg"])
        centre, size = (world[:, :3] + world[:, 3:]) / 2, world[:, 3:] - world[:, :3]
        return {
            "image": str(paths["flair"]),
            "box": np.concatenate([centre, size], 1).tolist(),
            "label": labels.tolist(),
        }

    data_list = tmp_path / "boxes.json"
    data_list.write_text(json.dumps({"training": [entry(case)], "validation": [entry(other)]}))
    from_json = VolumeDetectionDataModule(boxes=str(data_list), **common)
    from_json.setup("fit")
    for mine, theirs in (
        (from_labels.train_set, from_json.train_set),
        (from_labels.val_set, from_json.val_set),
    ):
        assert mine is not None and theirs is not None
        torch.testing.assert_close(mine.boxes[0], theirs.boxes[0], atol=1e-4, rtol=0)
    val = from_labels.val_dataloader()
    batch = next(iter(val))  # type: ignore[arg-type]
    assert (
        batch["input"].shape[0] == 1
        and batch["input"].shape[2:] == from_labels.val_set.volumes[0].shape[1:]
    )  # type: ignore[union-attr]
    assert len(batch["boxes"]) == 1 and batch["boxes"][0].shape == (1, 6)
    contract = from_labels.input_contract()
    assert contract.class_names == ["whole tumour"] and contract.modality == "mri"
    assert contract.extra["objects"] == WHOLE_TUMOUR and contract.crop_size == 16


def test_refused_configurations(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no training cases"):
        VolumeDetectionDataModule()
    with pytest.raises(ValueError, match="not both"):
        VolumeDetectionDataModule(images=["a.nii.gz"], labels=["b.nii.gz"], boxes="c.json")
    with pytest.raises(ValueError, match="objects"):
        VolumeDetectionDataModule(images=["a.nii.gz"], labels=["b.nii.gz"])
    with pytest.raises(ValueError, match="val_images and val_labels differ"):
        VolumeDetectionDataModule(
            images=["a.nii.gz"], labels=["b.nii.gz"], objects={1: 0}, val_images=["c.nii.gz"]
        )
    with pytest.raises(FileNotFoundError, match=r"absent\.nii\.gz"):
        BoxedVolumeDataset(
            images=[tmp_path / "absent.nii.gz"], targets=[(np.zeros((0, 6)), np.zeros(0))]
        )
