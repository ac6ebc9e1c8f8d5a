"""DetectionTask: what the 2D and 3D detection modules share — the class-count check, the
recipe entry under the task's key, the per-sample targets of a batch and the backbone
referenced (not registered) by their feature extractors."""

from __future__ import annotations

import pytest
import torch

from domainfm.core.vit import VisionTransformerND
from domainfm.tasks.detection3d_module import Detection3DModule, VolumeFeaturePyramid
from domainfm.tasks.detection_module import DetectionModule
from domainfm.tasks.detection_task import DetectionTask, check_num_classes


def _vit(spatial_dims: int) -> VisionTransformerND:
    return VisionTransformerND(
        in_chans=1, spatial_dims=spatial_dims, patch_size=8, embed_dim=32, depth=2, num_heads=2
    )


def test_check_num_classes() -> None:
    check_num_classes(1, 1, "object classes")
    with pytest.raises(ValueError, match=r"num_classes=1: must be >= 2 \(background \+ objects\)"):
        check_num_classes(1, 2, "background + objects")


def test_recipes_sit_under_each_task_key() -> None:
    flat = DetectionModule(backbone=_vit(2), num_classes=2, image_size=32, lr=2e-3)
    volume = Detection3DModule(backbone=_vit(3), num_classes=1, roi_size=32, score_threshold=0.2)
    assert isinstance(flat, DetectionTask) and isinstance(volume, DetectionTask)
    recipe = flat.checkpoint_recipe()["detect"]
    assert (recipe["num_classes"], recipe["lr"], recipe["image_size"]) == (2, 2e-3, 32)
    recipe3d = volume.checkpoint_recipe()["detect3d"]
    assert (recipe3d["num_classes"], recipe3d["lr"], recipe3d["score_threshold"]) == (1, 1e-3, 0.2)
    assert (volume.weight_decay, volume.warmup_steps) == (0.05, 0)


def test_unknown_keyword_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="score_thresh"):
        Detection3DModule(backbone=_vit(3), num_classes=1, roi_size=32, score_thresh=0.2)  # type: ignore[call-arg]


def test_targets_pair_each_sample_boxes_and_labels() -> None:
    batch = {
        "boxes": [torch.zeros(2, 6), torch.zeros(0, 6)],
        "labels": [torch.tensor([0, 1]), torch.tensor([], dtype=torch.long)],
    }
    targets = DetectionTask._targets(batch)
    assert [len(t["boxes"]) for t in targets] == [2, 0] and targets[0]["labels"].tolist() == [0, 1]


def test_feature_extractor_references_the_backbone() -> None:
    backbone = _vit(3)
    features = VolumeFeaturePyramid(backbone, out_channels=16)
    assert not any(name.startswith("encoder") for name, _ in features.named_parameters())
    maps = features(torch.randn(1, 1, 32, 32, 32))
    assert all(m.shape[1] == 16 for m in maps)
