"""SimCLR's NT-Xent / InfoNCE loss with negatives from the global batch, optionally with
MoCHi's synthetic hard negatives."""

from __future__ import annotations

from typing import ClassVar, Unpack

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
from domainfm.core.objectives.hard_negative_mixing import (
    HardNegativeMixing,
    HardNegativeMixingArgs,
    MixingDraws,
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

    **Hard negative mixing (MoCHi)**, off by default: with ``mixing_hard=M`` and
    ``mixing_pairs=s`` / ``mixing_query=s'``, anchor ``i``'s denominator also sums over ``s``
    mixes of two of its ``M`` hardest negatives (among the ``2N - 2`` embeddings other than
    itself and its partner; ``M`` is clamped to that number) and ``s'`` mixes of itself
    (stopped) with one of them (Kalantidis et al. 2020, arXiv:2010.01028, Sec. 4; see
    :mod:`domainfm.core.objectives.hard_negative_mixing`)::

        l_i = -log( exp(s_{i,j(i)} / t) / (sum_{k != i} exp(s_{i,k} / t)
                                           + sum_m exp(z_i.h_{i,m} / t)
                                           + sum_m exp(z_i.h'_{i,m} / t)) )

    The synthetic negatives are constants: the gradient reaches the anchor ``z_i`` through
    ``z_i.h / t`` only, as with MoCo's queued negatives. Mixing applies in training mode only
    and ``top1_acc`` is measured against the real embeddings only.

    Data parallelism (:attr:`parallel_mode` ``GATHER``): with ``gather_distributed=True`` the
    embeddings of all ranks are gathered *with gradients* and used as negatives; each rank's
    anchors are its own ``2B`` rows, so the mean over ranks of the rank losses is the
    single-process loss on the global batch and the gather's summed backward gives
    ``W`` times the single-process gradient, as :mod:`domainfm.core.objectives.base` requires
    (local batch sizes must be equal on all ranks). With ``gather_distributed=False`` only the
    local ``2B - 1`` embeddings are negatives, which is a *different* loss. Mixing keeps the
    contract: each anchor's hardest negatives are chosen among the *gathered* embeddings, and
    the draws are made for all ``2N`` anchors of the global batch (rows numbered as the
    embeddings ``[z1; z2]``) with each rank keeping its anchors' rows, so ranks with the same
    RNG state (or the same injected draws) compute exactly the single-process loss.

    Logits are computed in at least float32 with autocast disabled, and the loss uses
    ``cross_entropy`` (log-sum-exp), so small temperatures such as 0.01 stay finite.

    Args:
        temperature: ``t > 0``.
        gather_distributed: gather negatives from all ranks under ``torch.distributed``.
        **mixing: MoCHi's ``mixing_hard``, ``mixing_pairs`` (``s``), ``mixing_query``
            (``s'``): see
            :class:`~domainfm.core.objectives.hard_negative_mixing.HardNegativeMixingArgs`.

    Shapes:
        ``z1``, ``z2``: ``(B, D)`` projections of the two views; row ``b`` of ``z1`` and row
        ``b`` of ``z2`` are a positive pair. Output ``loss``: scalar. Injected mixing
        ``draws``: ``2N`` rows (``N`` the global batch), the ``z1`` anchors then the ``z2``
        ones, each in rank order.

    Example::

        loss_fn = InfoNCE(temperature=0.1)
        out = loss_fn(torch.randn(8, 128), torch.randn(8, 128))
        out.loss.backward()
        mochi = InfoNCE(temperature=0.1, mixing_hard=64, mixing_pairs=64, mixing_query=16)
    """

    parallel_mode: ClassVar[ParallelMode] = ParallelMode.GATHER

    def __init__(
        self,
        *,
        temperature: float = 0.1,
        gather_distributed: bool = True,
        **mixing: Unpack[HardNegativeMixingArgs],
    ) -> None:
        super().__init__()
        require_positive(temperature=temperature)
        self.temperature = float(temperature)
        self.gather_distributed = bool(gather_distributed)
        self.mixing = HardNegativeMixing.from_keywords(mixing)

    def forward(
        self, z1: Tensor, z2: Tensor, *, draws: MixingDraws | None = None
    ) -> ObjectiveOutput:
        """NT-Xent of the positive pairs ``(z1[b], z2[b])`` (with, in training and mixing
        on, synthetic hard negatives from ``draws`` or drawn here); see the class docstring."""
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
            with torch.no_grad():
                acc = (logits.argmax(dim=1) == positive_idx).to(g1.dtype).mean()
            if self.mixing is not None and self.training:
                positive_mask = F.one_hot(positive_idx, num_classes=2 * n).bool()
                synthetic = self.mixing.synthetic_logits(
                    keys[anchor_idx],
                    keys,
                    logits.detach().masked_fill(positive_mask, float("-inf")),
                    temperature=self.temperature,
                    rows=anchor_idx,
                    total=2 * n,
                    draws=draws,
                )
                logits = torch.cat([logits, synthetic], dim=1)  # (2B, 2N + s + s')
            loss = F.cross_entropy(logits, positive_idx)
        return ObjectiveOutput(loss=loss, terms={"infonce": loss, "top1_acc": acc})
