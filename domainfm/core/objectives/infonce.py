"""SimCLR's NT-Xent / InfoNCE loss with negatives from the global batch."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from domainfm.core import distributed
from domainfm.core.objectives.base import (
    ObjectiveOutput,
    ParallelMode,
    paired_views_fp32,
    require_positive,
)
from domainfm.core.objectives.registry import OBJECTIVES


@OBJECTIVES.register("infonce")
class InfoNCE(nn.Module):
    """Normalized temperature-scaled cross-entropy (NT-Xent), SimCLR.

    Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations",
    arXiv:2002.05709, eq. (1). For the global batch of ``N`` pairs the ``2N`` embeddings are
    L2-normalized; for each anchor ``i`` with positive partner ``j(i)`` (the other view of the
    same sample),

        l_i = -log( exp(s_{i,j(i)} / t) / sum_{k != i} exp(s_{i,k} / t) ),

    where ``s`` is cosine similarity and the sum runs over the other ``2N - 1`` embeddings. The
    loss is the mean of ``l_i`` over the anchors, i.e. symmetric over both views.

    Data parallelism (:attr:`parallel_mode` ``GATHER``): with ``gather_distributed=True`` the
    embeddings of all ranks are gathered *with gradients* and used as negatives; each rank's
    anchors are its own ``2B`` rows, so the mean over ranks of the rank losses is the
    single-process loss on the global batch and the gather's summed backward gives
    ``W`` times the single-process gradient, as :mod:`domainfm.core.objectives.base` requires
    (local batch sizes must be equal on all ranks). With ``gather_distributed=False`` only the
    local ``2B - 1`` embeddings are negatives, which is a *different* loss.

    Logits are computed in at least float32 with autocast disabled, and the loss uses
    ``cross_entropy`` (log-sum-exp), so small temperatures such as 0.01 stay finite.

    Args:
        temperature: ``t > 0``.
        gather_distributed: gather negatives from all ranks under ``torch.distributed``.

    Shapes:
        ``z1``, ``z2``: ``(B, D)`` projections of the two views; row ``b`` of ``z1`` and row
        ``b`` of ``z2`` are a positive pair. Output ``loss``: scalar.

    Example::

        loss_fn = InfoNCE(temperature=0.1)
        out = loss_fn(torch.randn(8, 128), torch.randn(8, 128))
        out.loss.backward()
    """

    parallel_mode: ClassVar[ParallelMode] = ParallelMode.GATHER

    def __init__(self, *, temperature: float = 0.1, gather_distributed: bool = True) -> None:
        super().__init__()
        require_positive(temperature=temperature)
        self.temperature = float(temperature)
        self.gather_distributed = bool(gather_distributed)

    def forward(self, z1: Tensor, z2: Tensor) -> ObjectiveOutput:
        """NT-Xent of the positive pairs ``(z1[b], z2[b])``; see the class docstring."""
        b = z1.shape[0]
        with torch.autocast(device_type=z1.device.type, enabled=False):
            g1, g2 = paired_views_fp32(z1, z2, gather=self.gather_distributed)
            g1, g2 = F.normalize(g1, dim=1), F.normalize(g2, dim=1)  # rows normalize alike
            offset = distributed.rank() * b if self.gather_distributed else 0
            n = g1.shape[0]
            keys = torch.cat([g1, g2], dim=0)  # (2N, D)
            # Anchors are this rank's rows of the gathered tensors, so that every path from a
            # local input to any rank's loss goes through the gather.
            local = torch.arange(offset, offset + b, device=z1.device)
            anchor_idx = torch.cat([local, local + n])  # (2B,) rows of keys
            positive_idx = torch.cat([local + n, local])  # (2B,) partner rows
            logits = keys[anchor_idx] @ keys.T / self.temperature  # (2B, 2N)
            self_mask = F.one_hot(anchor_idx, num_classes=2 * n).bool()
            logits = logits.masked_fill(self_mask, float("-inf"))
            loss = F.cross_entropy(logits, positive_idx)
            with torch.no_grad():
                acc = (logits.argmax(dim=1) == positive_idx).to(g1.dtype).mean()
        return ObjectiveOutput(loss=loss, terms={"infonce": loss, "top1_acc": acc})
