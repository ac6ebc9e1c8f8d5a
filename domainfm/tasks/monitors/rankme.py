"""RankMe: the effective rank of an embedding matrix, a label-free pretraining monitor.

RankMe (Garrido et al. 2023, "RankMe: Assessing the downstream performance of pretrained
self-supervised representations by their rank", arXiv:2210.02885, Eq. 1) is the exponential
of the Shannon entropy of the normalized singular values of the embeddings ``Z (N, D)``::

    sigma = svdvals(Z)                       # min(N, D) values
    p_k   = sigma_k / ||sigma||_1 + eps      # eps = 1e-7 as in the paper
    RankMe(Z) = exp(-sum_k p_k log p_k)

It lies in ``[~1, min(N, D)]``: about 1 for a collapsed (rank-1) representation, ``r`` for
``r`` orthogonal directions of equal energy. Use ``N >= D`` samples (the paper uses 25600),
since with fewer rows the value is bounded by ``N``, not by the representation.

Shapes::

    z           (N, D)  embeddings, one row per sample (any float dtype; computed in float64)
    update(e)   (B, D)  a batch of embeddings for :class:`RankMe`

Example::

    >>> z = torch.randn(1000, 32)
    >>> float(rankme(z))                 # close to 32 for isotropic Gaussian embeddings
    31.8...
    >>> metric = RankMe(max_samples=512)
    >>> for chunk in z.split(100):
    ...     metric.update(chunk)
    >>> value = metric.compute()         # RankMe of the first 512 rows
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

__all__ = ["RankMe", "rankme"]


def rankme(z: Tensor, eps: float = 1e-7) -> Tensor:
    """RankMe of ``z`` (``(N, D)``), a float64 scalar tensor (Garrido et al. 2023, Eq. 1).

    The singular values are computed in float64 with :func:`torch.linalg.svdvals`. An all-zero
    matrix (``||sigma||_1 = 0``) gives ``p_k = eps`` for all ``k``, i.e. a value of about 1.

    Raises:
        ValueError: if ``z`` is not 2-D or has no rows or columns.
    """
    if z.ndim != 2:
        raise ValueError(f"z must be (N, D), got shape {tuple(z.shape)}")
    if z.shape[0] == 0 or z.shape[1] == 0:
        raise ValueError(f"z must have at least one row and column, got shape {tuple(z.shape)}")
    sigma = torch.linalg.svdvals(z.detach().to(torch.float64))  # (min(N, D),)
    total = sigma.sum().clamp_min(torch.finfo(torch.float64).tiny)
    p = sigma / total + eps
    return torch.exp(-(p * torch.log(p)).sum())


class RankMe(Metric):
    """Accumulates embeddings over batches and computes their RankMe (see :func:`rankme`).

    States are lists gathered with ``dist_reduce_fx="cat"``, so under DDP :meth:`compute` sees
    the embeddings of all processes.

    Args:
        max_samples: keep at most this many rows per process (the first ones seen); later
            rows are dropped. ``None`` keeps all. After a DDP gather the matrix has up to
            ``world_size * max_samples`` rows.
        eps: the paper's ``eps`` added to the normalized singular values.
        **kwargs: forwarded to :class:`torchmetrics.Metric` (e.g. ``sync_on_compute``).

    Example::

        >>> metric = RankMe(max_samples=2048)
        >>> metric.update(torch.randn(64, 16))
        >>> metric.compute()   # float64 scalar
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    embeddings: list[Tensor]

    def __init__(self, max_samples: int | None = None, eps: float = 1e-7, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if max_samples is not None and max_samples < 1:
            raise ValueError(f"max_samples must be >= 1 or None, got {max_samples}")
        self.max_samples = max_samples
        self.eps = eps
        self.add_state("embeddings", default=[], dist_reduce_fx="cat")

    @property
    def num_samples(self) -> int:
        """Rows accumulated by this process so far."""
        return sum(int(e.shape[0]) for e in self.embeddings)

    @property
    def is_full(self) -> bool:
        """Whether ``max_samples`` rows are held, so further updates are ignored."""
        return self.max_samples is not None and self.num_samples >= self.max_samples

    def update(self, embeddings: Tensor) -> None:
        """Add a batch of embeddings ``(B, D)`` (detached; rows beyond ``max_samples`` dropped).

        Raises:
            ValueError: if ``embeddings`` is not 2-D or its width differs from earlier batches.
        """
        if embeddings.ndim != 2:
            raise ValueError(f"embeddings must be (B, D), got shape {tuple(embeddings.shape)}")
        if self.embeddings and embeddings.shape[1] != self.embeddings[0].shape[1]:
            raise ValueError(
                f"embedding width {embeddings.shape[1]} differs from earlier batches' "
                f"{self.embeddings[0].shape[1]}"
            )
        rows = embeddings.detach()
        if self.max_samples is not None:
            rows = rows[: max(self.max_samples - self.num_samples, 0)]
        if rows.shape[0]:
            self.embeddings.append(rows)

    def compute(self) -> Tensor:
        """RankMe of all accumulated rows, a float64 scalar.

        Raises:
            RuntimeError: if no embeddings were accumulated.
        """
        if not self.embeddings:
            raise RuntimeError("RankMe.compute() needs at least one update with embeddings")
        return rankme(dim_zero_cat(self.embeddings), eps=self.eps)
