"""What every objective module shares: its output type and its data-parallel contract.

An objective is an ``nn.Module`` that turns backbone outputs (tokens or projected embeddings)
into a scalar loss. It never touches the training loop, the optimizer or the device.

**Data-parallel contract.** Under DDP every rank calls the objective on its local batch; DDP
then averages parameter gradients across the ``W`` ranks. Each objective is written so that

* the loss averaged over ranks equals the loss of one process on the concatenated global
  batch, and
* the gradient a rank gets for its local input, divided by ``W`` (what DDP's averaging
  applies), equals that process's gradient for the same rows of the global batch.

:class:`ParallelMode` says how an objective achieves this.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch
from torch import Tensor

from domainfm.core.distributed import gather_with_grad

if TYPE_CHECKING:
    from domainfm.core.batch_features import BatchFeatures


class ParallelMode(StrEnum):
    """How an objective behaves under data parallelism."""

    LOCAL = "local"
    """Per-sample loss averaged over the local batch; nothing crosses ranks."""
    GATHER = "gather"
    """Gathers embeddings from all ranks *with gradients* (e.g. negatives for InfoNCE)."""
    GLOBAL_STATS = "global_stats"
    """Uses statistics of the global batch (e.g. Barlow Twins / VICReg normalization)."""


@dataclass
class ObjectiveOutput:
    """The result of one objective call.

    Attributes:
        loss: scalar tensor to minimize.
        terms: named scalar sub-terms for logging (detached by the caller if it wants).
    """

    loss: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)


def paired_views_fp32(z1: Tensor, z2: Tensor, *, gather: bool) -> tuple[Tensor, Tensor]:
    """Check two ``(B, D)`` views, cast them to at least float32 and optionally gather them
    from all ranks *with gradients* (``(W * B, D)`` each, rank-ordered rows).

    Call inside ``torch.autocast(..., enabled=False)`` so the loss math stays in float32.

    Raises:
        ValueError: if the views are not both ``(B, D)`` with the same shape.
    """

    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(
            "z1 and z2 must both be (B, D) with the same shape, got "
            f"{tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    dtype = torch.promote_types(z1.dtype, torch.float32)
    z1, z2 = z1.to(dtype), z2.to(dtype)
    if gather:
        return gather_with_grad(z1), gather_with_grad(z2)
    return z1, z2


@runtime_checkable
class BatchObjective(Protocol):
    """An objective that reads the views it needs from the batch itself.

    :class:`~domainfm.tasks.pretrain_module.PretrainModule` calls ``forward_batch`` with a
    :class:`~domainfm.core.batch_features.BatchFeatures` over the batch: the objective asks for
    ``features.pooled(key)`` / ``features.tokens(key)`` of the tensors it reads and
    ``features.batch[key]`` for targets (labels, overlaps, clean images). Backbone passes
    are shared between objectives reading the same key. Heads the objective needs (e.g. a
    rotation classifier) are its own submodules.
    """

    def forward_batch(self, features: BatchFeatures) -> ObjectiveOutput:
        """The loss of one batch."""
        ...


def batch_keys(value: str | Sequence[str], name: str) -> tuple[str, ...]:
    """Batch keys an objective reads, from one key or a sequence (``ValueError`` if none)."""
    keys = (value,) if isinstance(value, str) else tuple(value)
    if not keys:
        raise ValueError(f"{name} must name at least one batch key, got {name}={value!r}")
    return keys
