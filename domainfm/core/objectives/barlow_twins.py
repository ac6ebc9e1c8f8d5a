"""Barlow Twins' redundancy-reduction loss on the cross-correlation of the global batch."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from domainfm.core.objectives.base import GlobalStatsLoss, ObjectiveOutput, require_at_least
from domainfm.core.objectives.registry import OBJECTIVES


@OBJECTIVES.register("barlow_twins")
class BarlowTwins(GlobalStatsLoss):
    """Barlow Twins: push the cross-correlation matrix of the two views towards identity.

    Zbontar et al. 2021, "Barlow Twins: Self-Supervised Learning via Redundancy Reduction",
    arXiv:2103.03230, eq. (1)-(2). Each embedding dimension is standardized over the global
    batch of ``N`` samples, ``zn = (z - mean) / sqrt(var + eps)`` (biased variance, as the
    reference implementation's ``BatchNorm1d(affine=False)``), then

        C = z1n^T z2n / N                        (D x D)
        loss = sum_i (1 - C_ii)^2 + lambda_offdiag * sum_{i != j} C_ij^2.

    Data parallelism and precision: :class:`~domainfm.core.objectives.base.GlobalStatsLoss`
    (``GLOBAL_STATS``; with ``gather_distributed=True`` every rank computes the loss of the
    global batch; in at least float32 with autocast disabled).

    Args:
        lambda_offdiag: weight ``lambda >= 0`` of the off-diagonal (redundancy) term.
        gather_distributed: standardize and correlate over the batch of all ranks.
        eps: ``>= 0``, added to the variance before the square root.

    Shapes:
        ``z1``, ``z2``: ``(B, D)`` projections of the two views, ``W * B >= 2``. Output
        ``loss``: scalar.

    Example::

        loss_fn = BarlowTwins(lambda_offdiag=5e-3)
        out = loss_fn(torch.randn(32, 256), torch.randn(32, 256))
        out.loss.backward()
    """

    loss_name: ClassVar[str] = "Barlow Twins"

    def __init__(
        self, *, lambda_offdiag: float = 5e-3, gather_distributed: bool = True, eps: float = 1e-5
    ) -> None:
        super().__init__(gather_distributed=gather_distributed)
        require_at_least(0, lambda_offdiag=lambda_offdiag, eps=eps)
        self.lambda_offdiag = float(lambda_offdiag)
        self.eps = float(eps)

    def global_loss(self, z1: Tensor, z2: Tensor) -> ObjectiveOutput:
        """Barlow Twins loss of the paired rows of the global views ``(N, D)``."""
        c = self._standardize(z1).T @ self._standardize(z2) / z1.shape[0]  # (D, D)
        diag = torch.diagonal(c)
        on_diag = (1.0 - diag).pow(2).sum()
        eye = torch.eye(c.shape[0], dtype=torch.bool, device=c.device)
        off_diag = c.pow(2).masked_fill(eye, 0.0).sum()
        loss = on_diag + self.lambda_offdiag * off_diag
        return ObjectiveOutput(loss=loss, terms={"on_diag": on_diag, "off_diag": off_diag})

    def _standardize(self, z: Tensor) -> Tensor:
        """Zero mean, unit (biased) variance per column: ``(N, D) -> (N, D)``."""
        z = z - z.mean(dim=0)
        return z / torch.sqrt(z.pow(2).mean(dim=0) + self.eps)
