"""3D detection metrics: FROC sensitivities against a loop reference written from the
definition (greedy matching per volume and class, every score cut, ties together), APs at IoU
0.1/0.25/0.5 on boxes of known overlap, and a 2-process Gloo run whose ranks each score half
of the volumes yet report the metrics of all of them."""

from __future__ import annotations

from pathlib import Path
from runpy import run_path
from typing import Any

import numpy as np
import pytest
import torch

from domainfm.tasks.detection3d_metrics import FROC_FPS, VolumeDetectionMetrics

Volume = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    low, high = np.maximum(a[:3], b[:3]), np.minimum(a[3:], b[3:])
    inter = float(np.prod(np.clip(high - low, 0, None)))
    return inter / (float(np.prod(a[3:] - a[:3])) + float(np.prod(b[3:] - b[:3])) - inter)


def _volumes(seed: int, count: int = 6) -> list[Volume]:
    """Random volumes: 0-3 boxes of 2 classes each, detections near some boxes (jittered),
    some far, scores rounded to 1 decimal so that ties happen."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        n = int(rng.integers(0, 4))
        low = rng.uniform(0, 40, size=(n, 3))
        gt = np.concatenate([low, low + rng.uniform(4, 12, size=(n, 3))], axis=1)
        gt_cls = rng.integers(0, 2, size=n)
        preds, cls = [], []
        for box, c in zip(gt, gt_cls, strict=True):
            for _ in range(int(rng.integers(0, 3))):  # duplicates are false positives
                preds.append(box + rng.normal(scale=1.5, size=6))
                cls.append(c if rng.random() < 0.8 else 1 - c)
        for _ in range(int(rng.integers(0, 4))):
            lo = rng.uniform(0, 40, size=3)
            preds.append(np.concatenate([lo, lo + rng.uniform(3, 8, size=3)]))
            cls.append(int(rng.integers(0, 2)))
        boxes = np.array(preds).reshape(-1, 6)
        boxes[:, 3:] = np.maximum(boxes[:, 3:], boxes[:, :3] + 0.5)
        scores = np.round(rng.uniform(0.05, 1.0, size=len(boxes)), 1)
        out.append(
            (
                {
                    "boxes": torch.tensor(boxes, dtype=torch.float64),
                    "labels": torch.tensor(cls, dtype=torch.long).reshape(-1),
                    "scores": torch.tensor(scores, dtype=torch.float64),
                },
                {"boxes": torch.tensor(gt), "labels": torch.tensor(gt_cls, dtype=torch.long)},
            )
        )
    return out


def _froc_reference(volumes: list[Volume], iou: float) -> list[float]:
    """From the definition, with loops: per volume and class, detections by decreasing score
    take the best still unmatched box of IoU >= iou (a hit) or are false positives; then for
    every cut at a detection score (and the empty cut) count hits and false positives over
    all volumes; the sensitivity at r FPs/volume is the best of the cuts with FP/V <= r."""
    marked: list[tuple[float, bool]] = []
    total = 0
    for pred, target in volumes:
        gt, gt_cls = target["boxes"].numpy(), target["labels"].numpy()
        total += len(gt)
        boxes, cls, scores = (pred[k].numpy() for k in ("boxes", "labels", "scores"))
        for c in set(cls.tolist()) | set(gt_cls.tolist()):
            taken: set[int] = set()
            order = sorted([i for i in range(len(boxes)) if cls[i] == c], key=lambda i: -scores[i])
            for i in order:
                best, best_iou = -1, min(iou, 1 - 1e-10)
                for g in range(len(gt)):
                    if gt_cls[g] != c or g in taken:
                        continue
                    value = _iou(boxes[i], gt[g])
                    if value >= best_iou:
                        best, best_iou = g, value
                if best >= 0:
                    taken.add(best)
                marked.append((float(scores[i]), best >= 0))
    cuts = [float("inf"), *sorted({s for s, _ in marked}, reverse=True)]
    points = []
    for cut in cuts:
        hits = sum(1 for s, hit in marked if s >= cut and hit)
        false = sum(1 for s, hit in marked if s >= cut and not hit)
        points.append((false / len(volumes), hits / total))
    return [max(sens for fp, sens in points if fp <= rate) for rate in FROC_FPS]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("iou", [0.1, 0.25])
def test_froc_matches_the_loop_reference(seed: int, iou: float) -> None:
    volumes = _volumes(seed)
    metric = VolumeDetectionMetrics(num_classes=2, froc_iou=iou)
    metric.update([p for p, _ in volumes], [t for _, t in volumes])
    got = metric.compute()
    expected = _froc_reference(volumes, iou)
    assert [got[f"froc_fp{r:g}"] for r in FROC_FPS] == pytest.approx(expected, abs=1e-12)
    assert got["froc"] == pytest.approx(float(np.mean(expected)), abs=1e-12)
    assert 0 < got["froc"] < 1  # a non-trivial case


def test_ap_at_each_iou_threshold() -> None:
    """One box per volume; the detection overlaps it with IoU 1/3: a hit at IoU 0.1 and 0.25,
    a miss (and a false positive) at 0.5."""
    gt = torch.tensor([[0.0, 0.0, 0.0, 10.0, 10.0, 10.0]])
    shifted = torch.tensor([[0.0, 0.0, 5.0, 10.0, 10.0, 15.0]])
    assert _iou(shifted[0].numpy(), gt[0].numpy()) == pytest.approx(1 / 3)
    metric = VolumeDetectionMetrics(num_classes=1)
    pred = {"boxes": shifted, "labels": torch.tensor([0]), "scores": torch.tensor([0.9])}
    metric.update([pred, pred], [{"boxes": gt, "labels": torch.tensor([0])}] * 2)
    got = metric.compute()
    assert got["map_10"] == pytest.approx(1.0) and got["map_25"] == pytest.approx(1.0)
    assert got["map_50"] == pytest.approx(0.0)
    assert got["froc_fp0.125"] == 1.0  # IoU 0.1: both hit, no false positive
    metric.reset()
    perfect = {"boxes": gt, "labels": torch.tensor([0]), "scores": torch.tensor([0.5])}
    metric.update([perfect], [{"boxes": gt, "labels": torch.tensor([0])}])
    assert metric.compute()["map"] == pytest.approx(1.0)


def test_no_ground_truth_and_bad_settings() -> None:
    metric = VolumeDetectionMetrics(num_classes=1)
    empty = {"boxes": torch.zeros(0, 6), "labels": torch.zeros(0, dtype=torch.long)}
    metric.update([{**empty, "scores": torch.zeros(0)}], [empty])
    assert np.isnan(metric.compute()["froc"])
    with pytest.raises(ValueError, match=r"multiples of 0\.05"):
        VolumeDetectionMetrics(num_classes=1, froc_iou=0.33)
    with pytest.raises(ValueError, match="num_classes"):
        VolumeDetectionMetrics(num_classes=0)


GLOO = run_path(str(Path(__file__).parents[1] / "gloo_ranks.py"))
WORLD = 2


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    with GLOO["gloo_group"](rank, init_file, world=WORLD):
        volumes = _volumes(7, count=8)[rank::WORLD]  # each rank: half of the volumes
        metric = VolumeDetectionMetrics(num_classes=2)
        metric.update([p for p, _ in volumes], [t for _, t in volumes])
        GLOO["save_rank"](metric.compute(), out_dir, rank)


def test_two_ranks_score_all_volumes(tmp_path: Path) -> None:
    ranks: list[dict[str, Any]] = GLOO["spawn_ranks"](_worker, tmp_path, world=WORLD)
    volumes = _volumes(7, count=8)
    single = VolumeDetectionMetrics(num_classes=2)
    order = [*volumes[0::2], *volumes[1::2]]  # the gathered order: rank 0's, then rank 1's
    single.update([p for p, _ in order], [t for _, t in order])
    expected = single.compute()
    alone = VolumeDetectionMetrics(num_classes=2)
    alone.update([p for p, _ in volumes[0::2]], [t for _, t in volumes[0::2]])
    assert alone.compute() != expected  # half of the volumes alone scores differently
    for got in ranks:
        assert got.keys() == expected.keys()
        for name, value in expected.items():
            assert got[name] == pytest.approx(value, nan_ok=True), name
