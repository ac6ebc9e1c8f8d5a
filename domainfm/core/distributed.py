"""Thin helpers over ``torch.distributed`` that degrade to no-ops in a single process.

Objectives call these instead of ``torch.distributed`` directly so that the same code runs
unchanged on one CPU, one GPU, or under DDP with any backend (NCCL, Gloo).

* :func:`gather_with_grad` concatenates a tensor from all ranks along dim 0 and lets gradients
  flow back to every rank's slice. It is built on ``torch.distributed.nn.functional.all_gather``,
  whose backward *sums* the gradients that every rank's loss sends to a rank's slice
  (reduce-scatter on NCCL; on Gloo, which has no reduce-scatter, an all-to-all emulated with
  ``scatter`` calls followed by a sum). That sum is exactly what the data-parallel contract in
  :mod:`domainfm.core.objectives.base` needs: the local gradient is
  ``sum_r dL_r / dx_local = W * d(mean_r L_r) / dx_local``.
* :func:`gather_no_grad` does the same without autograd (e.g. MoCo keys for the queue).

Caveats:

* Every rank must pass a tensor of the same shape (``all_gather`` does not pad), so local
  batches must be equal in size (``DistributedSampler`` with ``drop_last=True``).
* The backward of :func:`gather_with_grad` is itself a collective: every rank must call
  ``backward`` on a loss that depends on the gathered tensor, or the job hangs.

Example::

    z_global = gather_with_grad(z_local)  # (B, D) -> (W * B, D)
    offset = rank() * z_local.shape[0]     # this rank's rows in z_global
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import torch
import torch.distributed as dist
from torch import Tensor

if TYPE_CHECKING:  # not importable on builds without distributed support
    from torch.distributed import ProcessGroup


def is_distributed() -> bool:
    """Whether ``torch.distributed`` is available and a default process group is initialized."""
    return dist.is_available() and dist.is_initialized()


def world_size(group: ProcessGroup | None = None) -> int:
    """Number of ranks in ``group`` (the default group if ``None``); 1 when not distributed."""
    if not is_distributed():
        return 1
    return int(dist.get_world_size(group=group))


def rank(group: ProcessGroup | None = None) -> int:
    """This process's rank in ``group`` (the default group if ``None``); 0 when not distributed."""
    if not is_distributed():
        return 0
    return int(dist.get_rank(group=group))


def gather_with_grad(x: Tensor, group: ProcessGroup | None = None) -> Tensor:
    """Concatenate ``x`` from all ranks along dim 0, differentiably.

    Args:
        x: local tensor of shape ``(B, ...)``, the same shape on every rank.
        group: process group; the default (world) group if ``None``.

    Returns:
        Tensor of shape ``(W * B, ...)`` whose rows ``[r * B, (r + 1) * B)`` come from rank
        ``r``. Its backward sums, over all ranks, the gradients flowing into this rank's
        slice. Returns ``x`` itself (identity, same autograd graph) when not distributed or
        when the group has one rank.

    Example::

        z = gather_with_grad(torch.randn(8, 128, requires_grad=True))  # (8 * W, 128)
    """
    if world_size(group) == 1:
        return x
    # ``torch.distributed.nn.functional.all_gather`` is an autograd Function and works with
    # Gloo (its backward falls back to scatter-based all-to-all); verified by the 2-process
    # Gloo tests in tests/core/test_distributed.py, so no hand-written Function is needed.
    from torch.distributed.nn.functional import all_gather as _all_gather

    all_gather = cast(Callable[..., tuple[Tensor, ...]], _all_gather)  # untyped upstream
    pg = group if group is not None else dist.group.WORLD
    parts = all_gather(x, group=pg)
    return torch.cat(list(parts), dim=0)


@torch.no_grad()
def gather_no_grad(x: Tensor, group: ProcessGroup | None = None) -> Tensor:
    """Concatenate ``x`` from all ranks along dim 0, without autograd.

    Args:
        x: local tensor of shape ``(B, ...)``, the same shape on every rank.
        group: process group; the default (world) group if ``None``.

    Returns:
        Detached tensor of shape ``(W * B, ...)`` in rank order; ``x.detach()`` when not
        distributed.

    Example::

        keys = gather_no_grad(k)  # MoCo: enqueue the keys of the global batch
    """
    if world_size(group) == 1:
        return x.detach()
    x = x.detach().contiguous()
    parts = [torch.empty_like(x) for _ in range(world_size(group))]
    dist.all_gather(parts, x, group=group)
    return torch.cat(parts, dim=0)
