"""VICReg: variance-invariance-covariance regularization on the global batch."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from domainfm.core.objectives.base import (
    GlobalStatsLoss,
    ObjectiveOutput,
    require_at_least,
    require_positive,
)
from domainfm.core.objectives.registry import OBJECTIVES


@OBJECTIVES.register("vicreg")
class VICReg(GlobalStatsLoss):
    """VICReg loss ``sim_weight * s + var_weight * v + cov_weight * c``.

    Bardes, Ponce & LeCun 2022, "VICReg: Variance-Invariance-Covariance Regularization for
    Self-Supervised Learning", arXiv:2105.04906, eq. (1)-(6), following the reference
    implementation. Over the global batch of ``N`` pairs with ``D`` dims:

    * invariance ``s = mean_{b,d} (z1_bd - z2_bd)^2``;
    * variance ``v = (mean_d relu(1 - std1_d) + mean_d relu(1 - std2_d)) / 2`` with
      ``std_d = sqrt(Var_d + eps)`` (unbiased variance over the batch);
    * covariance ``c = (sum_{i != j} Cov1_ij^2 + sum_{i != j} Cov2_ij^2) / D`` with
      ``Cov = zc^T zc / (N - 1)`` of the centered embeddings ``zc``.

    Data parallelism and precision: :class:`~domainfm.core.objectives.base.GlobalStatsLoss`
    (``GLOBAL_STATS``; with ``gather_distributed=True`` every rank computes the loss of the
    global batch; in at least float32 with autocast disabled).

    Args:
        sim_weight: weight of the invariance term (``>= 0``).
        var_weight: weight of the variance term (``>= 0``).
        cov_weight: weight of the covariance term (``>= 0``).
        eps: ``> 0``, added to the variance inside the square root.
        gather_distributed: compute all terms over the batch of all ranks.

    Shapes:
        ``z1``, ``z2``: ``(B, D)`` expander outputs of the two views, ``W * B >= 2``. Output
        ``loss``: scalar; ``terms``: unweighted ``"invariance"``, ``"variance"``,
        ``"covariance"``.

    Example::

        loss_fn = VICReg()
        out = loss_fn(torch.randn(32, 256), torch.randn(32, 256))
        out.loss.backward()
    """

    loss_name: ClassVar[str] = "VICReg"

    def __init__(
        self,
        *,
        sim_weight: float = 25.0,
        var_weight: float = 25.0,
        cov_weight: float = 1.0,
        eps: float = 1e-4,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__(gather_distributed=gather_distributed)
        require_at_least(0, sim_weight=sim_weight, var_weight=var_weight, cov_weight=cov_weight)
        require_positive(eps=eps)
        self.sim_weight = float(sim_weight)
        self.var_weight = float(var_weight)
        self.cov_weight = float(cov_weight)
        self.eps = float(eps)

    def global_loss(self, z1: Tensor, z2: Tensor) -> ObjectiveOutput:
        """VICReg loss of the paired rows of the global views ``(N, D)``."""
        n, d = z1.shape
        invariance = F.mse_loss(z1, z2)
        z1c = z1 - z1.mean(dim=0)
        z2c = z2 - z2.mean(dim=0)
        variance = (self._variance(z1c, n) + self._variance(z2c, n)) / 2.0
        covariance = (self._covariance(z1c, n) + self._covariance(z2c, n)) / d
        loss = (
            self.sim_weight * invariance + self.var_weight * variance + self.cov_weight * covariance
        )
        terms = {"invariance": invariance, "variance": variance, "covariance": covariance}
        return ObjectiveOutput(loss=loss, terms=terms)

    def _variance(self, zc: Tensor, n: int) -> Tensor:
        """Hinge ``mean_d relu(1 - sqrt(Var_d + eps))`` of centered ``zc`` ``(N, D)``."""
        std = torch.sqrt(zc.pow(2).sum(dim=0) / (n - 1) + self.eps)
        return F.relu(1.0 - std).mean()

    @staticmethod
    def _covariance(zc: Tensor, n: int) -> Tensor:
        """Sum of squared off-diagonal entries of ``zc^T zc / (N - 1)``."""
        cov = zc.T @ zc / (n - 1)
        eye = torch.eye(cov.shape[0], dtype=torch.bool, device=cov.device)
        return cov.pow(2).masked_fill(eye, 0.0).sum()
