"""Label-light monitors: weighted k-nearest-neighbour accuracy and a linear probe.

Weighted kNN (Wu et al. 2018, "Unsupervised feature learning via non-parametric instance
discrimination", arXiv:1805.01978, Eq. 9; the evaluation protocol of DINO, Caron et al. 2021,
arXiv:2104.14294, ``eval_knn.py``): features are L2-normalized, each query takes its ``k``
most cosine-similar bank items, neighbour ``i`` votes for its class with weight
``exp(s_i / T)``, and the class with the largest summed vote is the prediction
(``k = 20``, ``T = 0.07``). Ties go to the lowest class index.

The linear probe follows MAE's linear probing (He et al. 2022, arXiv:2111.06377, §A.2):
a ``BatchNorm1d`` without affine parameters, then a linear classifier, trained on frozen
(detached) features with its own optimizer.

Shapes::

    bank features  (M, D), bank labels  (M,)   integer classes in [0, num_classes)
    query features (Q, D), query labels (Q,)
    knn_votes      (Q, num_classes)

Example::

    >>> knn = KNNClassifier(num_classes=10)
    >>> knn.update_bank(train_features, train_labels)     # (M, D), (M,)
    >>> knn.update(val_features, val_labels)              # (Q, D), (Q,)
    >>> top1 = knn.compute()                              # accuracy in [0, 1]
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

__all__ = ["KNNClassifier", "LinearProbe", "knn_votes"]


def knn_votes(
    queries: Tensor,
    bank: Tensor,
    bank_labels: Tensor,
    num_classes: int,
    *,
    k: int = 20,
    temperature: float = 0.07,
    normalize: bool = True,
) -> Tensor:
    """Summed neighbour weights per class, ``(Q, num_classes)``.

    Args:
        queries: ``(Q, D)`` query features.
        bank: ``(M, D)`` bank features.
        bank_labels: ``(M,)`` integer labels of the bank.
        num_classes: number of classes ``C``.
        k: neighbours per query; ``min(k, M)`` are used when the bank is smaller.
        temperature: ``T`` in the weight ``exp(cos / T)``.
        normalize: L2-normalize queries and bank first (skip if they already are).
    """
    if normalize:
        queries, bank = F.normalize(queries, dim=1), F.normalize(bank, dim=1)
    sim = queries @ bank.T  # (Q, M) cosine similarities
    top_sim, top_idx = sim.topk(min(k, bank.shape[0]), dim=1)  # (Q, k)
    weights = (top_sim / temperature).exp()
    votes = torch.zeros(queries.shape[0], num_classes, dtype=weights.dtype, device=weights.device)
    return votes.scatter_add_(1, bank_labels[top_idx], weights)


def _check_pair(features: Tensor, labels: Tensor, num_classes: int) -> None:
    if features.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {tuple(features.shape)}")
    if labels.shape != features.shape[:1]:
        raise ValueError(
            f"labels must be (N,) = ({features.shape[0]},), got shape {tuple(labels.shape)}"
        )
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got [{int(labels.min())}, {int(labels.max())}]"
        )


class KNNClassifier(Metric):
    """Weighted kNN top-1 accuracy of queries against a labelled feature bank.

    Fill the bank with :meth:`update_bank`, add queries with :meth:`update`, then
    :meth:`compute`. All four states are lists gathered with ``dist_reduce_fx="cat"``; pass
    ``sync_on_compute=False`` when every process already holds the full bank and queries.

    Args:
        num_classes: number of classes ``C``.
        k: neighbours per query (``min(k, bank size)`` when the bank is smaller).
        temperature: ``T`` of the weights ``exp(cos / T)``.
        chunk_size: queries scored at once in :meth:`compute` (bounds the ``(chunk, M)``
            similarity matrix).
        **kwargs: forwarded to :class:`torchmetrics.Metric`.

    Example::

        >>> knn = KNNClassifier(num_classes=2, k=3)
        >>> knn.update_bank(torch.tensor([[1.0, 0], [0.9, 0.1], [0, 1.0]]), torch.tensor([0, 0, 1]))
        >>> knn.update(torch.tensor([[1.0, 0.2]]), torch.tensor([0]))
        >>> knn.compute()
        tensor(1.)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    bank_features: list[Tensor]
    bank_labels: list[Tensor]
    query_features: list[Tensor]
    query_labels: list[Tensor]

    def __init__(
        self,
        num_classes: int,
        k: int = 20,
        temperature: float = 0.07,
        chunk_size: int = 1024,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_classes < 1 or k < 1 or chunk_size < 1:
            raise ValueError(
                f"num_classes, k and chunk_size must be >= 1, got {num_classes}, {k}, {chunk_size}"
            )
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.num_classes = num_classes
        self.k = k
        self.temperature = temperature
        self.chunk_size = chunk_size
        for name in ("bank_features", "bank_labels", "query_features", "query_labels"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update_bank(self, features: Tensor, labels: Tensor) -> None:
        """Add labelled bank items: ``features (M, D)``, ``labels (M,)``."""
        _check_pair(features, labels, self.num_classes)
        self._computed = None  # new bank items invalidate a cached result
        self.bank_features.append(F.normalize(features.detach().float(), dim=1))
        self.bank_labels.append(labels.detach().long())

    def update(self, features: Tensor, labels: Tensor) -> None:
        """Add labelled queries: ``features (Q, D)``, ``labels (Q,)``."""
        _check_pair(features, labels, self.num_classes)
        self.query_features.append(F.normalize(features.detach().float(), dim=1))
        self.query_labels.append(labels.detach().long())

    def compute(self) -> Tensor:
        """Top-1 accuracy of the queries, a float32 scalar in ``[0, 1]``.

        Raises:
            RuntimeError: if the bank or the queries are empty.
        """
        if not self.bank_features or not self.query_features:
            raise RuntimeError("KNNClassifier.compute() needs bank items and queries")
        bank, bank_labels = dim_zero_cat(self.bank_features), dim_zero_cat(self.bank_labels)
        queries, labels = dim_zero_cat(self.query_features), dim_zero_cat(self.query_labels)
        correct = torch.zeros((), dtype=torch.long, device=queries.device)
        for q, y in zip(queries.split(self.chunk_size), labels.split(self.chunk_size), strict=True):
            votes = knn_votes(
                q,
                bank,
                bank_labels,
                self.num_classes,
                k=self.k,
                temperature=self.temperature,
                normalize=False,
            )
            correct += (votes.argmax(dim=1) == y).sum()
        return correct.float() / queries.shape[0]


class LinearProbe(nn.Module):
    """Linear classifier on frozen features, with its own optimizer (MAE-style probe).

    ``BatchNorm1d(affine=False)`` then ``Linear(dim, num_classes)``. :meth:`fit_step` takes one
    optimizer step on detached features, so it never back-propagates into the encoder. The
    AdamW optimizer is created at the first step, after any ``.to(device)``.

    Args:
        dim: feature width ``D``.
        num_classes: number of classes ``C``.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.

    Example::

        >>> probe = LinearProbe(dim=64, num_classes=10)
        >>> for features, labels in batches:        # (B, D), (B,) with B >= 2
        ...     loss = probe.fit_step(features, labels)
        >>> top1 = probe.accuracy(val_features, val_labels)
    """

    def __init__(
        self, dim: int, num_classes: int, lr: float = 1e-3, weight_decay: float = 0.0
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.norm = nn.BatchNorm1d(dim, affine=False, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        self.lr = lr
        self.weight_decay = weight_decay
        self._optimizer: torch.optim.Optimizer | None = None

    def forward(self, features: Tensor) -> Tensor:
        """Logits ``(B, C)`` for features ``(B, D)``."""
        logits: Tensor = self.head(self.norm(features))
        return logits

    def fit_step(self, features: Tensor, labels: Tensor) -> Tensor:
        """One optimizer step on a labelled batch; returns the detached cross-entropy loss.

        Raises:
            ValueError: on malformed inputs or a batch of fewer than 2 samples (BatchNorm).
        """
        _check_pair(features, labels, self.num_classes)
        if features.shape[0] < 2:
            raise ValueError("fit_step needs at least 2 samples per batch (BatchNorm statistics)")
        if self._optimizer is None:
            self._optimizer = torch.optim.AdamW(
                self.parameters(), lr=self.lr, weight_decay=self.weight_decay
            )
        self.train()
        with torch.enable_grad():
            loss = F.cross_entropy(self(features.detach().float()), labels.long())
            self._optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self._optimizer.step()
        return loss.detach()

    @torch.no_grad()
    def accuracy(self, features: Tensor, labels: Tensor) -> Tensor:
        """Top-1 accuracy (float32 scalar) in eval mode (running BatchNorm statistics)."""
        _check_pair(features, labels, self.num_classes)
        was_training = self.training
        self.eval()
        try:
            pred = self(features.detach().float()).argmax(dim=1)
        finally:
            self.train(was_training)
        return (pred == labels).float().mean()
