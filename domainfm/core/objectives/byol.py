"""BYOL's normalized-MSE regression of online predictions onto target projections."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from domainfm.core.objectives.base import ObjectiveOutput, ParallelMode
from domainfm.core.objectives.registry import OBJECTIVES


@OBJECTIVES.register("byol")
class BYOL(nn.Module):
    """Symmetric BYOL loss ``2 - 2 cos(p, sg(z))``.

    Grill et al. 2020, "Bootstrap Your Own Latent", arXiv:2006.07733, eq. (2) and the
    symmetrized loss ``L + L~``: the online prediction of view 1 regresses the target
    projection of view 2 and vice versa,

        loss = mean_b [ (2 - 2 cos(p1_b, sg(z2_b))) + (2 - 2 cos(p2_b, sg(z1_b))) ],

    where ``sg`` stops gradients (targets are detached here, so passing non-detached targets is
    harmless). The target network is an EMA of the online one; build it with
    :class:`domainfm.core.ema.EMATeacher` and schedule its momentum with
    :func:`domainfm.core.ema.cosine_momentum`.

    Data parallelism (:attr:`parallel_mode` ``LOCAL``): a per-sample mean over the local batch,
    so with equal local batch sizes the mean over ranks equals the global-batch loss and the
    local gradient divided by ``W`` equals the single-process one; nothing is communicated.

    Computed in at least float32 with autocast disabled.

    Shapes:
        ``p1``, ``p2``: ``(B, D)`` online predictions of views 1 and 2; ``z1_target``,
        ``z2_target``: ``(B, D)`` target projections of views 1 and 2. Output ``loss``: scalar
        in ``[0, 8]``.

    Example::

        loss_fn = BYOL()
        with torch.no_grad():
            z1t, z2t = teacher(x1), teacher(x2)
        out = loss_fn(predictor(student(x1)), predictor(student(x2)), z1t, z2t)
        out.loss.backward()
    """

    parallel_mode: ClassVar[ParallelMode] = ParallelMode.LOCAL

    def forward(
        self, p1: Tensor, p2: Tensor, z1_target: Tensor, z2_target: Tensor
    ) -> ObjectiveOutput:
        """BYOL loss; ``p1`` predicts ``z2_target`` and ``p2`` predicts ``z1_target``."""
        shapes = {tuple(t.shape) for t in (p1, p2, z1_target, z2_target)}
        if p1.ndim != 2 or len(shapes) != 1:
            raise ValueError(
                "p1, p2, z1_target, z2_target must all be (B, D) with the same shape, got "
                f"{[tuple(t.shape) for t in (p1, p2, z1_target, z2_target)]}"
            )
        with torch.autocast(device_type=p1.device.type, enabled=False):
            dtype = torch.promote_types(p1.dtype, torch.float32)
            loss_12 = self._regression(p1.to(dtype), z2_target.detach().to(dtype))
            loss_21 = self._regression(p2.to(dtype), z1_target.detach().to(dtype))
            loss = loss_12 + loss_21
        return ObjectiveOutput(loss=loss, terms={"loss_12": loss_12, "loss_21": loss_21})

    @staticmethod
    def _regression(p: Tensor, z: Tensor) -> Tensor:
        """``mean_b (2 - 2 cos(p_b, z_b))`` == mean squared distance of the unit vectors."""
        cos = (F.normalize(p, dim=1) * F.normalize(z, dim=1)).sum(dim=1)
        return (2.0 - 2.0 * cos).mean()
