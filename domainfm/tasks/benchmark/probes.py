"""Frozen-feature protocols: a linear probe and a k-nearest-neighbour classifier.

Both run on :class:`~domainfm.tasks.benchmark.task.ItemFeatures` rows (one per item, or one
per token/frame for dense tasks) and return class scores for the test rows, scored by
:func:`~domainfm.tasks.benchmark.metrics.task_metrics`.

* **Linear probe** (fixed recipe, no tuning on the test side): features standardized with the
  training rows' mean and std, then multinomial logistic regression (softmax cross-entropy;
  sigmoid/BCE for multi-label kinds) with L2 penalty ``l2`` on the weights, fitted by L-BFGS
  from zero weights. The problem is convex and the start fixed, so the fit is deterministic.
  At most :data:`MAX_ROWS` training rows are used (a seeded draw), which bounds dense tasks.
* **kNN** (Wu et al. 2018; the recipe of DINO, Caron et al. 2021): cosine similarity to the
  training rows, the ``k`` nearest vote with weight ``exp(cos / T)``; multi-label kinds
  average the neighbours' 0/1 label vectors with the same weights. Queries are processed in
  chunks so memory stays ``CHUNK x train rows``.

Example::

    >>> data = ProbeData(x_train, y_train, x_test, kind="classification", num_classes=10)
    >>> scores = linear_probe(data)
    >>> task_metrics("classification", scores, y_test, num_classes=10)["accuracy"]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from domainfm.tasks.benchmark.task import TaskKind
from domainfm.tasks.monitors.knn import knn_votes

MULTI_LABEL: tuple[TaskKind, ...] = ("multilabel", "timestamps")
MAX_ROWS = 200_000
"""Most training rows a probe uses (a seeded draw beyond): bounds dense tasks' memory."""
CHUNK = 1024
"""kNN queries per similarity block (memory ``CHUNK x training rows``)."""


@dataclass(frozen=True)
class ProbeData:
    """What a probe fits and scores: training rows with labels, test rows, the label format.

    Attributes:
        x_train, x_test: ``[N, D]`` features.
        y_train: ``[N]`` class indices, or ``[N, C]`` 0/1 for multi-label kinds.
        kind: the task kind (multi-label kinds score each class independently).
        num_classes: ``C``.
        ignore_index: label of unlabeled training rows (left out).
    """

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    kind: TaskKind
    num_classes: int
    ignore_index: int | None = None

    @property
    def multi_label(self) -> bool:
        return self.kind in MULTI_LABEL

    def training_rows(self, max_rows: int, seed: int) -> tuple[Tensor, Tensor]:
        """The labeled training rows, at most ``max_rows`` of them (a draw with ``seed``).

        Raises:
            ValueError: when no training row is labeled.
        """
        x, y = self.x_train, self.y_train
        if self.ignore_index is not None and y.ndim == 1:
            keep = y != self.ignore_index
            x, y = x[keep], y[keep]
        if x.shape[0] == 0:
            raise ValueError("the probe has no labeled training rows")
        if x.shape[0] > max_rows:
            generator = torch.Generator().manual_seed(seed)
            rows = torch.randperm(x.shape[0], generator=generator)[:max_rows].sort().values
            x, y = x[rows], y[rows]
        return x, y


def linear_probe(
    data: ProbeData,
    *,
    l2: float = 1e-3,
    max_iter: int = 200,
    seed: int = 0,
) -> Tensor:
    """Scores ``[N_test, C]`` of a logistic-regression probe (see the module docstring).

    Args:
        data: the rows (multi-label kinds fit independent sigmoids).
        l2: L2 penalty on the weights (the bias is not penalized).
        max_iter: L-BFGS iterations.
        seed: draws the rows when there are more than :data:`MAX_ROWS`.
    """
    x, y = data.training_rows(MAX_ROWS, seed)
    x = x.double()
    mean, std = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-6)
    x = (x - mean) / std
    weight = torch.zeros(x.shape[1], data.num_classes, dtype=x.dtype, requires_grad=True)
    bias = torch.zeros(data.num_classes, dtype=x.dtype, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], max_iter=max_iter, line_search_fn="strong_wolfe", tolerance_grad=1e-9
    )
    target = y.double() if data.multi_label else y.long()

    def closure() -> Tensor:
        optimizer.zero_grad()
        logits = x @ weight + bias
        if data.multi_label:
            loss = F.binary_cross_entropy_with_logits(logits, target)
        else:
            loss = F.cross_entropy(logits, target)
        loss = loss + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        return (((data.x_test.double() - mean) / std) @ weight + bias).float()


def knn_scores(
    data: ProbeData,
    *,
    k: int = 20,
    temperature: float = 0.07,
    seed: int = 0,
) -> Tensor:
    """Scores ``[N_test, C]`` of a weighted kNN classifier (see the module docstring)."""
    bank, labels = data.training_rows(MAX_ROWS, seed)
    bank = F.normalize(bank.float(), dim=1)
    out = []
    for start in range(0, data.x_test.shape[0], CHUNK):
        queries = F.normalize(data.x_test[start : start + CHUNK].float(), dim=1)
        if data.multi_label:
            top_sim, top_idx = (queries @ bank.T).topk(min(k, bank.shape[0]), dim=1)
            weights = (top_sim / temperature).softmax(dim=1)
            out.append(torch.einsum("qk,qkc->qc", weights, labels[top_idx].float()))
        else:
            votes = knn_votes(
                queries,
                bank,
                labels.long(),
                data.num_classes,
                k=k,
                temperature=temperature,
                normalize=False,
            )
            out.append(votes / votes.sum(1, keepdim=True).clamp_min(1e-12))
    return torch.cat(out) if out else torch.zeros(0, data.num_classes)
