"""MoCo's InfoNCE against a FIFO queue of negative keys, optionally with MoCHi's synthetic
hard negatives."""

from __future__ import annotations

from typing import ClassVar, Unpack

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from domainfm.core import distributed
from domainfm.core.objectives.base import (
    ObjectiveOutput,
    ParallelMode,
    require_at_least,
    require_positive,
)
from domainfm.core.objectives.hard_negative_mixing import (
    HardNegativeMixing,
    HardNegativeMixingArgs,
    MixingDraws,
)
from domainfm.core.objectives.registry import OBJECTIVES


@OBJECTIVES.register("moco")
class MoCo(nn.Module):
    """InfoNCE of queries against their keys and a queue of past keys (MoCo v1/v2).

    He et al. 2020, "Momentum Contrast for Unsupervised Visual Representation Learning",
    arXiv:1911.05722, eq. (1); Chen et al. 2020 (MoCo v2, arXiv:2003.04297). With
    L2-normalized query ``q``, its key ``k`` (from the momentum encoder, treated as a constant)
    and the ``K`` queued keys ``k_j``,

        l = -log( exp(q.k / t) / (exp(q.k / t) + sum_j exp(q.k_j / t)) ),

    averaged over the local batch. After the loss is computed (in training mode only) the keys
    of the *global* batch, gathered from all ranks without gradients, are enqueued, replacing
    the oldest ones; the write wraps around the end of the queue, so ``queue_size`` need not be
    a multiple of the batch size (a batch larger than the queue keeps its last ``queue_size``
    keys). Evaluation-mode calls leave the queue untouched.

    The momentum encoder itself lives outside the objective: see
    :class:`domainfm.core.ema.EMATeacher` and :func:`domainfm.core.ema.cosine_momentum`.

    **Hard negative mixing (MoCHi)**, off by default: with ``mixing_hard=N`` and
    ``mixing_pairs=s`` / ``mixing_query=s'``, each query's denominator also sums over ``s``
    mixes of two of its ``N`` hardest queued keys and ``s'`` mixes of itself (stopped) with one
    of them (Kalantidis et al. 2020, arXiv:2010.01028, Sec. 4; see
    :mod:`domainfm.core.objectives.hard_negative_mixing`)::

        l = -log( exp(q.k / t) / (exp(q.k / t) + sum_j exp(q.k_j / t)
                                  + sum_{m < s} exp(q.h_m / t) + sum_{m < s'} exp(q.h'_m / t)) )

    Mixing applies in training mode only (evaluation losses stay comparable), the synthetic
    keys are never enqueued, and ``top1_acc`` is measured against the real keys only. The
    paper writes a setting "MoCHi (N, s, s')", with ``N`` in the hundreds to a thousand for
    queues of 16k-65k keys.

    Data parallelism (:attr:`parallel_mode` ``LOCAL``): the loss is a per-sample mean over the
    local batch and the queue holds the same global keys on every rank, so the mean over ranks
    equals the single-process loss on the global batch (with equal local batch sizes) and the
    local gradient divided by ``W`` equals the single-process one. Mixing keeps this: the
    hardest keys come from the shared queue, and the draws are made for the global batch with
    each rank keeping its own rows, so ranks with the same RNG state (or the same injected
    draws) compute exactly the single-process loss.

    Buffers (saved in checkpoints): ``queue`` ``(queue_size, dim)`` of unit vectors, initially
    random, and ``queue_ptr`` (scalar long), the next row to overwrite.

    Args:
        dim: embedding dimension ``D``.
        queue_size: number of queued negative keys ``K`` (>= 1).
        temperature: ``t > 0``.
        **mixing: MoCHi's ``mixing_hard`` (``N <= queue_size``), ``mixing_pairs`` (``s``),
            ``mixing_query`` (``s'``): see
            :class:`~domainfm.core.objectives.hard_negative_mixing.HardNegativeMixingArgs`.

    Shapes:
        ``q``, ``k``: ``(B, D)``; row ``b`` of ``q`` and ``k`` are a positive pair. Output
        ``loss``: scalar. Injected mixing ``draws``: rows for the ``W * B`` queries of the
        global batch, in rank order.

    Example::

        loss_fn = MoCo(dim=128, queue_size=4096, temperature=0.2)
        out = loss_fn(student(x1), teacher(x2))   # enqueues the teacher keys
        out.loss.backward()
        mochi = MoCo(dim=128, queue_size=16384, mixing_hard=1024, mixing_pairs=1024,
                     mixing_query=128)
    """

    parallel_mode: ClassVar[ParallelMode] = ParallelMode.LOCAL

    queue: Tensor
    queue_ptr: Tensor

    def __init__(
        self,
        *,
        dim: int,
        queue_size: int = 65536,
        temperature: float = 0.2,
        **mixing: Unpack[HardNegativeMixingArgs],
    ) -> None:
        super().__init__()
        require_at_least(1, dim=dim, queue_size=queue_size)
        require_positive(temperature=temperature)
        self.dim = int(dim)
        self.queue_size = int(queue_size)
        self.temperature = float(temperature)
        self.mixing = HardNegativeMixing.from_keywords(mixing)
        if self.mixing is not None and self.mixing.hard > self.queue_size:
            raise ValueError(
                f"mixing_hard={self.mixing.hard} exceeds queue_size={self.queue_size}: the "
                "hardest negatives are chosen among the queued keys"
            )
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def forward(self, q: Tensor, k: Tensor, *, draws: MixingDraws | None = None) -> ObjectiveOutput:
        """Loss of queries ``q`` against keys ``k`` and the queue (and, in training with
        mixing on, synthetic hard negatives from ``draws`` or drawn here); then enqueue
        ``k``."""
        if q.ndim != 2 or q.shape != k.shape or q.shape[1] != self.dim:
            raise ValueError(
                f"q and k must both be (B, {self.dim}), got {tuple(q.shape)} and {tuple(k.shape)}"
            )
        with torch.autocast(device_type=q.device.type, enabled=False):
            dtype = torch.promote_types(q.dtype, torch.float32)
            qn = F.normalize(q.to(dtype), dim=1)
            kn = F.normalize(k.detach().to(dtype), dim=1)
            # a copy: the matmul saves it for backward, and the enqueue below writes in place
            queue = self.queue.detach().to(device=q.device, dtype=dtype, copy=True)
            pos = (qn * kn).sum(dim=1, keepdim=True)  # (B, 1)
            neg = qn @ queue.T  # (B, K)
            logits = torch.cat([pos, neg], dim=1) / self.temperature  # (B, 1 + K)
            labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
            with torch.no_grad():
                acc = (logits.argmax(dim=1) == 0).to(dtype).mean()
            if self.mixing is not None and self.training:
                b = q.shape[0]
                start = distributed.rank() * b  # this rank's queries in the global batch
                synthetic = self.mixing.synthetic_logits(
                    qn,
                    queue,
                    neg.detach(),
                    temperature=self.temperature,
                    rows=torch.arange(start, start + b, device=q.device),
                    total=distributed.world_size() * b,
                    draws=draws,
                )
                logits = torch.cat([logits, synthetic], dim=1)  # (B, 1 + K + s + s')
            loss = F.cross_entropy(logits, labels)
        if self.training:
            self.enqueue(distributed.gather_no_grad(kn))
        return ObjectiveOutput(loss=loss, terms={"moco": loss, "top1_acc": acc})

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Write ``keys`` ``(n, D)`` (already normalized) at ``queue_ptr``, wrapping around.

        If ``n > queue_size`` only the last ``queue_size`` keys are kept, at the rows they would
        occupy had all ``n`` been written in order. ``queue_ptr`` advances by ``n`` modulo
        ``queue_size``.
        """
        n = keys.shape[0]
        if n == 0:
            return
        size = self.queue_size
        ptr = int(self.queue_ptr.item())
        start = ptr
        if n > size:
            start = (ptr + n - size) % size
            keys = keys[n - size :]
        rows = (start + torch.arange(keys.shape[0], device=self.queue.device)) % size
        self.queue.index_copy_(0, rows, keys.to(device=self.queue.device, dtype=self.queue.dtype))
        self.queue_ptr.fill_((ptr + n) % size)
