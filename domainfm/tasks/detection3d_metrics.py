"""Validation metrics of 3D detection: mAP at IoU 0.1 / 0.25 / 0.5 and FROC sensitivities.

Detections and ground-truth boxes are collected per volume (voxel-edge ``xyzxyz``, 0-based
classes) and matched per volume and class by MONAI's ``matching_batch`` (COCO's greedy
matching: detections by decreasing score take the best still unmatched box with IoU at least
the threshold; ``monai.apps.detection.metrics``, after nnDetection, Baumgartner et al. 2021,
arXiv:2106.00817):

* **AP at IoU t** (MONAI's ``COCOMetric``: 101-point interpolated precision over recall),
  averaged over classes, for ``t`` in ``iou_thresholds`` — logged ``map_10``, ``map_25``,
  ``map_50`` — and the mean over IoU 0.10:0.05:0.50 (``map``).
* **FROC** (free-response ROC, as the LUNA16 challenge scores nodule detection; Setio et al.
  2017, arXiv:1612.08012): all detections of all volumes and classes sorted by score; a
  detection matched at IoU ``froc_iou`` is a true positive, any other a false positive. Cut
  at each distinct score ``s`` (ties together)::

      sensitivity(s) = TP(score ≥ s) / G          G: ground-truth boxes of all volumes
      fp_rate(s)     = FP(score ≥ s) / V          V: volumes

  and the sensitivity at ``r`` false positives per volume is the largest ``sensitivity(s)``
  with ``fp_rate(s) ≤ r`` (0 when no cut qualifies), for ``r`` in 1/8, 1/4, 1/2, 1, 2, 4, 8
  (logged ``froc_fp0.125`` …) and their mean (``froc``, LUNA16's competition score).

Under DDP each rank holds its volumes' results; :meth:`VolumeDetectionMetrics.compute`
gathers them (``all_gather_object``) so every rank scores all volumes.

Example::

    >>> metric = VolumeDetectionMetrics(num_classes=1)
    >>> metric.update([{"boxes": pred, "labels": cls, "scores": score}],
    ...               [{"boxes": gt, "labels": gt_cls}])
    >>> sorted(metric.compute())[:3]
    ['froc', 'froc_fp0.125', 'froc_fp0.25']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch.distributed as dist
from torch import Tensor

AP_IOUS = (0.1, 0.25, 0.5)
"""IoU thresholds of the logged APs."""
FROC_FPS = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""False positives per volume at which FROC sensitivities are read."""

Matches = dict[Any, dict[str, np.ndarray]]
"""One volume's MONAI matching result: per class ``dtMatches`` ``(T, D)``, ``dtScores``
``(D,)``, ``dtIgnore`` ``(T, D)``, ``gtMatches`` ``(T, G)``, ``gtIgnore`` ``(G,)``."""


def froc_sensitivities(
    matches: Sequence[Matches],
    *,
    threshold_index: int,
    num_volumes: int,
    fps_per_volume: Sequence[float] = FROC_FPS,
) -> np.ndarray:
    """Sensitivity at each rate of ``fps_per_volume`` false positives per volume (see the
    module docstring) from per-volume matching results, at the IoU threshold of position
    ``threshold_index``. ``NaN`` everywhere when there is no ground-truth box."""
    scores, hits, total = [], [], 0
    for volume in matches:
        for result in volume.values():
            keep = result["dtIgnore"][threshold_index] == 0
            scores.append(result["dtScores"][keep])
            hits.append(result["dtMatches"][threshold_index][keep] > 0)
            total += int((result["gtIgnore"] == 0).sum())
    rates = np.asarray(fps_per_volume, dtype=np.float64)
    if total == 0:
        return np.full(len(rates), np.nan)
    score = np.concatenate(scores) if scores else np.zeros(0)
    hit = np.concatenate(hits) if hits else np.zeros(0, dtype=bool)
    order = np.argsort(-score, kind="mergesort")
    score, hit = score[order], hit[order]
    tp, fp = np.cumsum(hit), np.cumsum(~hit)
    last = np.r_[score[1:] != score[:-1], True] if len(score) else np.zeros(0, dtype=bool)
    sensitivity = np.r_[0.0, tp[last] / total]  # the empty cut first (no detection kept)
    fp_rate = np.r_[0.0, fp[last] / max(num_volumes, 1)]
    position = np.searchsorted(fp_rate, rates, side="right") - 1  # both grow cut by cut
    return sensitivity[position]


def _box_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """IoU ``(N, M)`` of ``xyzxyz`` boxes (MONAI's ``box_iou``)."""
    from monai.data.box_utils import box_iou

    return np.asarray(box_iou(boxes1, boxes2))


def _numpy(value: Tensor | np.ndarray) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)


class VolumeDetectionMetrics:
    """mAP and FROC over the volumes seen since the last :meth:`reset`.

    Args:
        num_classes: object classes (0-based labels).
        iou_thresholds: IoUs of the logged APs.
        froc_iou: IoU at which a detection hits a box for the FROC.
        fps_per_volume: false-positive rates of the FROC.
        max_detections: detections per volume and class that are scored (highest first).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        iou_thresholds: Sequence[float] = AP_IOUS,
        froc_iou: float = 0.1,
        fps_per_volume: Sequence[float] = FROC_FPS,
        max_detections: int = 100,
    ) -> None:
        from monai.apps.detection.metrics.coco import COCOMetric

        if num_classes < 1:
            raise ValueError(f"num_classes={num_classes}: must be >= 1")
        if not all(
            0.1 <= t <= 0.5 and round(t * 100) % 5 == 0 for t in [*iou_thresholds, froc_iou]
        ):
            raise ValueError("IoU thresholds must be multiples of 0.05 in [0.1, 0.5]")
        self.iou_thresholds = tuple(float(t) for t in iou_thresholds)
        self.coco = COCOMetric(
            classes=[str(c) for c in range(num_classes)],
            iou_list=self.iou_thresholds,
            iou_range=(0.1, 0.5, 0.05),
            max_detection=(max_detections,),
            per_class=False,
            verbose=False,
        )
        thresholds = [float(t) for t in self.coco.iou_thresholds]
        self.froc_index = int(np.argmin([abs(t - froc_iou) for t in thresholds]))
        self.fps_per_volume = tuple(float(r) for r in fps_per_volume)
        self.max_detections = max_detections
        self.volumes: list[tuple[np.ndarray, ...]] = []

    def reset(self) -> None:
        self.volumes = []

    def update(
        self, preds: Sequence[Mapping[str, Tensor]], targets: Sequence[Mapping[str, Tensor]]
    ) -> None:
        """Add volumes: ``preds`` with ``boxes`` ``(K, 6)``, ``labels`` ``(K,)``, ``scores``
        ``(K,)``; ``targets`` with ``boxes`` ``(N, 6)``, ``labels`` ``(N,)``."""
        for pred, target in zip(preds, targets, strict=True):
            self.volumes.append(
                (
                    _numpy(pred["boxes"]).reshape(-1, 6).astype(np.float64),
                    _numpy(pred["labels"]).reshape(-1),
                    _numpy(pred["scores"]).reshape(-1).astype(np.float64),
                    _numpy(target["boxes"]).reshape(-1, 6).astype(np.float64),
                    _numpy(target["labels"]).reshape(-1),
                )
            )

    def _all_volumes(self) -> list[tuple[np.ndarray, ...]]:
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self.volumes
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, self.volumes)
        return [volume for part in gathered for volume in part]

    def compute(self) -> dict[str, float]:
        """``map_10``, ``map_25``, ``map_50`` (per ``iou_thresholds``), ``map`` (IoU
        0.10:0.50), ``froc_fp<r>`` per rate and ``froc`` (their mean)."""
        from monai.apps.detection.metrics.matching import matching_batch

        volumes = self._all_volumes()
        matches = matching_batch(
            iou_fn=_box_iou,
            iou_thresholds=[float(t) for t in self.coco.iou_thresholds],
            pred_boxes=[v[0] for v in volumes],
            pred_classes=[v[1] for v in volumes],
            pred_scores=[v[2] for v in volumes],
            gt_boxes=[v[3] for v in volumes],
            gt_classes=[v[4] for v in volumes],
            max_detections=self.max_detections,
        )
        scores, _ = self.coco(matches) if volumes else ({}, None)
        suffix = f"MaxDet_{self.max_detections}"
        out = {"map": float(scores.get(f"mAP_IoU_0.10_0.50_0.05_{suffix}", np.nan))}
        for t in self.iou_thresholds:
            out[f"map_{round(t * 100)}"] = float(scores.get(f"AP_IoU_{t:.2f}_{suffix}", np.nan))
        froc = froc_sensitivities(
            matches,
            threshold_index=self.froc_index,
            num_volumes=len(volumes),
            fps_per_volume=self.fps_per_volume,
        )
        for rate, value in zip(self.fps_per_volume, froc, strict=True):
            out[f"froc_fp{rate:g}"] = float(value)
        out["froc"] = float(np.mean(froc))
        return out
