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

from dataclasses import dataclass, field
from enum import StrEnum

from torch import Tensor


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
