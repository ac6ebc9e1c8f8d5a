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

**Sizes from the backbone.** Objectives with heads over the backbone's tokens (MAE's decoder,
inpainting's pixel head, rotation and VoCo heads) take the backbone's ``embed_dim``,
``in_chans`` and ``patch_size`` as optional arguments: left out (``None``), they are read from
the backbone when the objective is bound to it (:class:`BackboneBound`; the pretraining
module binds every objective at construction, before any checkpoint is loaded); given, they
are checked against it (:func:`sizes_from_backbone`). :class:`SizedFromBackbone` is their
base: it builds the heads as soon as every size is known.

**Global-batch losses.** Barlow Twins and VICReg share :class:`GlobalStatsLoss`: two paired
views, gathered from every rank, a loss on statistics of the whole batch.

Hyperparameters are checked with :func:`require_at_least` / :func:`require_positive`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from domainfm.core.batch_features import BatchFeatures
from domainfm.core.distributed import gather_with_grad
from domainfm.core.registry import INIT_KWARGS_ATTR


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


def view_keys(
    views: str | Sequence[str], paired: str | Sequence[str], name: str
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The batch keys of the views an objective reads and of the ``name`` keys that go with
    them, one per view (e.g. each view's target or labels).

    Raises:
        ValueError: if either names no key, or they differ in length.
    """
    keys, others = batch_keys(views, "views"), batch_keys(paired, name)
    if len(keys) != len(others):
        raise ValueError(f"views {keys} and {name} {others} must have the same length")
    return keys, others


def require_at_least(bound: float, **values: float | None) -> None:
    """Check hyperparameters: every one of ``values`` given (not ``None``) is ``>= bound``.

    Raises:
        ValueError: naming the first value that is not (NaN included).
    """
    for name, value in values.items():
        if value is not None and not value >= bound:
            raise ValueError(f"{name} must be >= {bound}, got {name}={value}")


def require_positive(**values: float) -> None:
    """Check hyperparameters: every one of ``values`` is ``> 0``.

    Raises:
        ValueError: naming the first value that is not (NaN included).
    """
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {name}={value}")


class GlobalStatsLoss(nn.Module):
    """Base of losses on statistics of the global batch of two paired views (Barlow Twins,
    VICReg): a subclass implements :meth:`global_loss`.

    :meth:`forward` checks the views ``(B, D)``, casts them to at least float32 with autocast
    disabled (the whole loss is computed so) and, with ``gather_distributed``, gathers them
    from all ranks *with gradients* (:func:`paired_views_fp32`); the resulting global batch
    must have at least 2 rows.

    Data parallelism (:attr:`parallel_mode` ``GLOBAL_STATS``): with ``gather_distributed=True``
    every rank computes the *same* global loss ``L``. Hence the mean over ranks is ``L``, and
    since the gather's backward sums the gradients of the ``W`` identical losses, the local
    input gradient is ``W * dL/dx``: dividing by ``W`` (DDP's averaging) gives the
    single-process gradient, as the data-parallel contract (module docstring) requires. With
    ``gather_distributed=False`` the statistics are per rank, which is a different loss.

    Attributes:
        loss_name: the loss's name in error messages.
    """

    parallel_mode: ClassVar[ParallelMode] = ParallelMode.GLOBAL_STATS
    loss_name: ClassVar[str]

    def __init__(self, *, gather_distributed: bool) -> None:
        super().__init__()
        self.gather_distributed = bool(gather_distributed)

    def forward(self, z1: Tensor, z2: Tensor) -> ObjectiveOutput:
        """The loss of the paired rows of ``z1`` and ``z2``."""
        with torch.autocast(device_type=z1.device.type, enabled=False):
            z1, z2 = paired_views_fp32(z1, z2, gather=self.gather_distributed)
            n = z1.shape[0]
            if n < 2:
                raise ValueError(f"{self.loss_name} needs a global batch of >= 2 samples, got {n}")
            return self.global_loss(z1, z2)

    def global_loss(self, z1: Tensor, z2: Tensor) -> ObjectiveOutput:
        """The loss of the global views ``(N, D)``, ``N >= 2``, in at least float32."""
        raise NotImplementedError


@runtime_checkable
class BackboneBound(Protocol):
    """An objective that sizes its heads from the backbone it trains.

    :class:`~domainfm.tasks.pretrain_module.PretrainModule` calls ``bind_backbone`` once, in
    its constructor: the objective builds the heads it could not build without the sizes
    (or checks the sizes it was given). Binding reads attributes only; it never touches the
    training loop, the optimizer or the device.
    """

    def bind_backbone(self, backbone: nn.Module) -> None:
        """Take the sizes left out from ``backbone`` and check the ones given.

        Raises:
            ValueError: if a given size differs from the backbone's, or one left out is not
                an attribute of the backbone.
        """
        ...


def _as_size(name: str, value: Any, like: Any = None) -> Any:
    """``patch_size`` as a tuple of ints (an int repeated over ``like``'s axes), others as int."""
    if name != "patch_size":
        return int(value)
    if isinstance(value, int):
        return (value,) * (len(like) if like is not None else 1)
    return tuple(int(p) for p in value)


def sizes_from_backbone(objective: nn.Module, backbone: nn.Module, **given: Any) -> dict[str, Any]:
    """Resolve an objective's backbone sizes (``embed_dim``, ``in_chans``, ``patch_size``).

    Each keyword is a size the objective was given, ``None`` when left out: left out, it is
    the backbone's attribute of that name; given, it must equal that attribute (when the
    backbone has it). The objective's recorded constructor arguments (its recipe in
    checkpoints, see :func:`~domainfm.core.registry.init_config`) are updated to the result.

    Returns:
        name → resolved size (``patch_size`` a tuple of ints).

    Raises:
        ValueError: on a disagreement, or for a size left out that the backbone lacks.
    """
    kind = type(objective).__name__
    resolved: dict[str, Any] = {}
    for name, value in given.items():
        found = getattr(backbone, name, None)
        found = _as_size(name, found) if found is not None else None
        if value is None:
            if found is None:
                raise ValueError(
                    f"{kind} needs {name}: the backbone {type(backbone).__name__} has no "
                    f"{name} attribute, so give {name} explicitly"
                )
            resolved[name] = found
            continue
        value = _as_size(name, value, found)
        if found is not None and value != found:
            raise ValueError(
                f"{kind} {name} {value} differs from the backbone's {found}; leave {name} out "
                "to take the backbone's"
            )
        resolved[name] = value
    recorded = getattr(objective, INIT_KWARGS_ATTR, None)
    if isinstance(recorded, dict):
        recorded.update(resolved)
    return resolved


def require_sizes(objective: nn.Module, **sizes: Any) -> None:
    """Raise a clear error when a head is used before its sizes are known.

    Raises:
        RuntimeError: if any of ``sizes`` is ``None``.
    """
    missing = [name for name, value in sizes.items() if value is None]
    if missing:
        raise RuntimeError(
            f"{type(objective).__name__} has no {', '.join(missing)} yet: give them to its "
            "constructor or bind it to a backbone first (bind_backbone, as PretrainModule does)"
        )


class SizedFromBackbone(nn.Module):
    """Base of objectives whose heads are sized from the backbone (a :class:`BackboneBound`).

    A subclass keeps each size named in :attr:`backbone_sizes` as an attribute (``None`` while
    unknown), builds its heads in :meth:`build_heads` and calls :meth:`build_heads_if_sized` at
    the end of its constructor: the heads are built there when every size was given, else by
    :meth:`bind_backbone`, once.

    Attributes:
        backbone_sizes: the sizes read from the backbone; default ``("embed_dim",)``, the
            width every head reads (pixel heads add ``in_chans`` and ``patch_size``).
    """

    backbone_sizes: ClassVar[tuple[str, ...]] = ("embed_dim",)

    def __init__(self) -> None:
        super().__init__()
        self._built = False

    def build_heads(self) -> None:
        """Build the heads; called once, when every size is known."""
        raise NotImplementedError

    def _sizes(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.backbone_sizes}

    def build_heads_if_sized(self) -> None:
        """Build the heads if every size is known and they are not built yet."""
        if not self._built and all(value is not None for value in self._sizes().values()):
            self.build_heads()
            self._built = True

    def bind_backbone(self, backbone: nn.Module) -> None:
        """Take the sizes left out from ``backbone`` (checking those given) and build the
        heads if they are not built yet.

        Raises:
            ValueError: if a given size differs from the backbone's, or one left out is not
                an attribute of the backbone.
        """
        for name, value in sizes_from_backbone(self, backbone, **self._sizes()).items():
            setattr(self, name, value)
        self.build_heads_if_sized()

    def ensure_sized(self) -> None:
        """Raise a clear error when a head is used before its sizes are known.

        Raises:
            RuntimeError: if a size is still unknown.
        """
        if not self._built:  # the heads are built as soon as the sizes are known: one is missing
            require_sizes(self, **self._sizes())
