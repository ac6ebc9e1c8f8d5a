"""Detection3DInference: the inference settings of the 3D detector — defaults, numbers of
their defaults' types, refused values and names, replaced settings, and what they set on
MONAI's detector."""

from __future__ import annotations

from typing import Any

import pytest

from domainfm.tasks.detection3d_inference import Detection3DInference, Detection3DInferenceArgs


class _Detector:
    """Records what the settings set on a MONAI ``RetinaNetDetector``."""

    def __init__(self) -> None:
        self.calls: dict[str, dict[str, Any]] = {}

    def set_box_selector_parameters(self, **kwargs: Any) -> None:
        self.calls["box_selector"] = kwargs

    def set_sliding_window_inferer(self, **kwargs: Any) -> None:
        self.calls["sliding_window"] = kwargs


def test_defaults_and_keywords_are_the_same_names() -> None:
    settings = Detection3DInference()
    assert settings.recipe() == {
        "score_threshold": 0.05,
        "nms_iou": 0.22,
        "detections_per_volume": 100,
        "sw_overlap": 0.25,
        "sw_batch_size": 1,
    }
    assert set(settings.recipe()) == set(Detection3DInferenceArgs.__annotations__)


def test_numbers_take_their_defaults_types() -> None:
    settings = Detection3DInference.from_keywords({"score_threshold": 0, "sw_batch_size": 2.0})
    assert settings.score_threshold == 0.0 and isinstance(settings.score_threshold, float)
    assert settings.sw_batch_size == 2 and isinstance(settings.sw_batch_size, int)


@pytest.mark.parametrize(
    ("keywords", "match"),
    [
        ({"score_threshold": 1.5}, "score_threshold"),
        ({"nms_iou": 0.0}, "nms_iou"),
        ({"sw_overlap": 1.0}, "sw_overlap"),
    ],
)
def test_bad_values_are_named(keywords: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Detection3DInference.from_keywords(keywords)


def test_unknown_names() -> None:
    with pytest.raises(TypeError, match="roi"):
        Detection3DInference.from_keywords({"roi": 3})  # as an unknown constructor argument
    with pytest.raises(ValueError, match="unknown inference settings: roi"):
        Detection3DInference().updated({"roi": 3})


def test_updated_replaces_only_the_named_settings() -> None:
    base = Detection3DInference.from_keywords({"nms_iou": 0.3})
    new = base.updated({"score_threshold": 0.5})
    assert (new.score_threshold, new.nms_iou, base.score_threshold) == (0.5, 0.3, 0.05)


def test_apply_sets_box_selection_and_sliding_window() -> None:
    detector = _Detector()
    Detection3DInference(score_threshold=0.1, sw_batch_size=4).apply(detector, (32, 32, 16))
    assert detector.calls["box_selector"] == {
        "score_thresh": 0.1,
        "topk_candidates_per_level": 1000,
        "nms_thresh": 0.22,
        "detections_per_img": 100,
    }
    assert detector.calls["sliding_window"] == {
        "roi_size": (32, 32, 16),
        "sw_batch_size": 4,
        "overlap": 0.25,
        "mode": "gaussian",
    }
