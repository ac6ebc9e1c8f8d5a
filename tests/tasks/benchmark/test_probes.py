from __future__ import annotations

import pytest
import torch

from domainfm.tasks.benchmark.metrics import task_metrics
from domainfm.tasks.benchmark.probes import ProbeData, knn_scores, linear_probe


def _blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randn(n, 5, generator=g) * 0.3
    x[torch.arange(n), y] += 2.0
    return x, y


@pytest.mark.parametrize("probe", [linear_probe, knn_scores])
def test_probes_separate_separable_classes(probe):
    x, y = _blobs(90, 0)
    xt, yt = _blobs(30, 1)
    scores = probe(ProbeData(x, y, xt, "classification", 3))
    assert scores.shape == (30, 3)
    assert task_metrics("classification", scores, yt, num_classes=3)["accuracy"] == 1.0


def test_linear_probe_leaves_unlabeled_rows_out_and_is_deterministic():
    x, y = _blobs(90, 0)
    poisoned = y.clone()
    poisoned[:30] = -1  # unlabeled: would be out-of-range targets if used
    data = ProbeData(x, poisoned, x[:5], "segmentation", 3, ignore_index=-1)
    a, b = linear_probe(data), linear_probe(data)
    assert torch.equal(a, b)
    assert (a.argmax(1) == y[:5]).all()


def test_multilabel_probes_give_per_class_scores():
    x, y = _blobs(90, 0)
    multi = torch.nn.functional.one_hot(y, 3).float()
    multi[:, 2] = 1.0 - multi[:, 0]  # a second label on most rows
    for probe in (linear_probe, knn_scores):
        scores = probe(ProbeData(x, multi, x, "multilabel", 3))
        assert task_metrics("multilabel", scores, multi, num_classes=3)["map"] > 0.95


def test_segmentation_metrics_by_hand():
    preds = torch.tensor([0, 0, 1, 1, 2, 2])
    labels = torch.tensor([0, 1, 1, 1, 2, 255])
    m = task_metrics("segmentation", preds, labels, num_classes=3, ignore_index=255)
    # IoU: class 0 = 1/2, class 1 = 2/3, class 2 = 1/1
    assert m["miou"] == pytest.approx((0.5 + 2 / 3 + 1.0) / 3)
    # Dice over foreground: class 1 = 2*2/(2+3) = 0.8, class 2 = 1
    assert m["dice"] == pytest.approx(0.9)
    assert m["accuracy"] == pytest.approx(4 / 5)
