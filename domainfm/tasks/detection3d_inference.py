"""How a 3D RetinaNet detects in a volume, as one checked, frozen object and its keyword
arguments: the box selection (score threshold, NMS, detections kept) and the sliding window
(overlap, windows per pass).

:class:`~domainfm.tasks.detection3d_module.Detection3DModule` takes these settings as
``**inference: Unpack[Detection3DInferenceArgs]`` (configs and checkpoint recipes spell them
flat: ``score_threshold: 0.1``), builds one :class:`Detection3DInference` from them and
applies it to MONAI's ``RetinaNetDetector`` (:meth:`Detection3DInference.apply`);
``configure_inference`` (``domainfm detect``'s overrides) replaces some of them
(:meth:`Detection3DInference.updated`). The checks that name a bad setting live here, once.

Example::

    >>> settings = Detection3DInference.from_keywords({"score_threshold": 0.1})
    >>> settings.nms_iou, settings.updated({"nms_iou": 0.5}).nms_iou
    (0.22, 0.5)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self, TypedDict


class Detection3DInferenceArgs(TypedDict, total=False):
    """The inference keywords of a 3D detector (each optional; defaults in
    :class:`Detection3DInference`).

    Keys:
        score_threshold: detections below this score are dropped.
        nms_iou: NMS IoU of one class's boxes (merges overlapping windows' boxes).
        detections_per_volume: most detections kept per volume.
        sw_overlap: overlap of the sliding windows.
        sw_batch_size: windows per forward pass.
    """

    score_threshold: float
    nms_iou: float
    detections_per_volume: int
    sw_overlap: float
    sw_batch_size: int


@dataclass(frozen=True, kw_only=True)
class Detection3DInference:
    """Box selection and sliding window of a 3D detector (see :class:`Detection3DInferenceArgs`).

    Raises:
        ValueError: ``score_threshold`` outside ``[0, 1]``, ``nms_iou`` outside ``(0, 1]``,
            ``sw_overlap`` outside ``[0, 1)``.
    """

    score_threshold: float = 0.05
    nms_iou: float = 0.22
    detections_per_volume: int = 100
    sw_overlap: float = 0.25
    sw_batch_size: int = 1

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):  # each a number of its default's type
            number = int if isinstance(field.default, int) else float
            object.__setattr__(self, field.name, number(getattr(self, field.name)))
        if not 0.0 <= self.score_threshold <= 1.0 or not 0.0 < self.nms_iou <= 1.0:
            raise ValueError(
                f"score_threshold={self.score_threshold} must be in [0, 1] and "
                f"nms_iou={self.nms_iou} in (0, 1]"
            )
        if not 0.0 <= self.sw_overlap < 1.0:
            raise ValueError(f"sw_overlap={self.sw_overlap}: must be in [0, 1)")

    @classmethod
    def from_keywords(cls, keywords: Mapping[str, Any]) -> Self:
        """The settings named in ``keywords`` (a constructor's ``**inference``), the others at
        their defaults.

        Raises:
            TypeError: for a keyword that is not a setting (as for any unknown argument).
            ValueError: for a bad value (see the class).
        """
        return cls(**keywords)

    def updated(self, keywords: Mapping[str, Any]) -> Self:
        """A copy with the settings named in ``keywords`` replaced.

        Raises:
            ValueError: ``unknown inference settings: ...`` for a keyword that is not a
                setting; a bad value (see the class).
        """
        unknown = set(keywords) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown inference settings: {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **keywords)

    def recipe(self) -> dict[str, Any]:
        """The settings as a checkpoint recipe records them (flat)."""
        return dataclasses.asdict(self)

    def apply(self, detector: Any, roi_size: Sequence[int]) -> None:
        """Set a MONAI ``RetinaNetDetector``'s box selection (top 1000 candidates per level,
        per-class NMS) and its Gaussian-blended sliding window of ``roi_size`` voxels."""
        detector.set_box_selector_parameters(
            score_thresh=self.score_threshold,
            topk_candidates_per_level=1000,
            nms_thresh=self.nms_iou,
            detections_per_img=self.detections_per_volume,
        )
        detector.set_sliding_window_inferer(
            roi_size=roi_size,
            sw_batch_size=self.sw_batch_size,
            overlap=self.sw_overlap,
            mode="gaussian",
        )
