"""The metrics a benchmark reports for each task kind, from predictions over a test split.

* ``classification``: ``accuracy``, ``macro_f1``, ``balanced_accuracy`` (mean recall);
* ``multilabel``: ``map`` (macro average precision over classes with positives),
  ``micro_f1`` (scores thresholded at 0.5);
* ``segmentation``: ``miou`` (mean IoU over the classes present in the test labels),
  ``dice`` (mean Dice = F1 over the foreground classes present; class 0 is background),
  ``accuracy`` (labeled pixels/voxels), ``macro_f1``; unlabeled positions
  (``ignore_index``) are left out;
* ``timestamps``: frame-level ``map`` and ``macro_f1`` (0.5) over the frames' 0/1 targets.

Example::

    >>> scores = torch.tensor([[2.0, 0.1], [0.2, 1.0], [0.9, 0.3]])
    >>> task_metrics("classification", scores, torch.tensor([0, 1, 1]), num_classes=2)["accuracy"]
    0.6666666865348816
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_f1_score,
    multiclass_jaccard_index,
    multilabel_average_precision,
    multilabel_f1_score,
)

from domainfm.tasks.benchmark.task import TaskKind

HEADLINE: dict[TaskKind, str] = {
    "classification": "accuracy",
    "multilabel": "map",
    "segmentation": "miou",
    "timestamps": "map",
}
"""The metric tables and plots lead with, per kind."""


def task_metrics(
    kind: TaskKind,
    scores: Tensor,
    targets: Tensor,
    *,
    num_classes: int,
    ignore_index: int | None = None,
) -> dict[str, float]:
    """Metrics of ``scores`` against ``targets`` (see the module docstring).

    Args:
        kind: the task kind.
        scores: ``[N, C]`` class scores (logits or probabilities), or ``[N]`` predicted class
            indices for single-label kinds.
        targets: ``[N]`` class indices (single-label kinds) or ``[N, C]`` 0/1 (multi-label
            kinds).
        num_classes: ``C``.
        ignore_index: target value left out (segmentation).
    """
    if kind in ("multilabel", "timestamps"):
        probs = scores.float().sigmoid() if _logits(scores) else scores.float()
        labels = targets.long()
        present = labels.sum(0) > 0
        ap = multilabel_average_precision(probs, labels, num_labels=num_classes, average="none")
        out = {"map": float(ap[present].mean()) if bool(present.any()) else float("nan")}
        f1_kind: Literal["micro", "macro"] = "micro" if kind == "multilabel" else "macro"
        out[f"{f1_kind}_f1"] = float(
            multilabel_f1_score(probs, labels, num_labels=num_classes, average=f1_kind)
        )
        return out
    preds = scores.argmax(-1) if scores.ndim == 2 else scores.long()
    labels = targets.long()
    if ignore_index is not None:
        keep = labels != ignore_index
        preds, labels = preds[keep], labels[keep]
    if labels.numel() == 0:
        raise ValueError("no labeled test positions to score")
    f1 = multiclass_f1_score(preds, labels, average="none", num_classes=num_classes)
    out = {
        "accuracy": float(
            multiclass_accuracy(preds, labels, average="micro", num_classes=num_classes)
        ),
        "macro_f1": float(_present_mean(f1, labels, num_classes)),
    }
    if kind == "segmentation":
        iou = multiclass_jaccard_index(preds, labels, average="none", num_classes=num_classes)
        out["miou"] = float(_present_mean(iou, labels, num_classes))
        foreground = labels[labels != 0]
        out["dice"] = (
            float(_present_mean(f1, foreground, num_classes))
            if foreground.numel()
            else float("nan")
        )
    else:
        recall = multiclass_accuracy(preds, labels, average="none", num_classes=num_classes)
        out["balanced_accuracy"] = float(_present_mean(recall, labels, num_classes))
    return out


def _present_mean(per_class: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Mean over the classes that occur in ``labels`` (absent classes have no score)."""
    present = torch.bincount(labels, minlength=num_classes)[:num_classes] > 0
    return per_class[present].mean()


def _logits(scores: Tensor) -> bool:
    return bool(scores.numel()) and bool((scores.min() < 0) | (scores.max() > 1))
