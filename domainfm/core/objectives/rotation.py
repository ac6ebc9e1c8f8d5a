"""Rotation prediction: classify which rotation was applied to a view.

Swin UNETR's self-supervised rotation task (Tang et al. 2022, "Self-Supervised Pre-Training
of Swin Transformers for 3D Medical Image Analysis", arXiv:2111.14791, eq. (1) term
``L_rot``), itself after Gidaris et al. 2018 (arXiv:1803.07728): each view is rotated by one
of ``R`` angles (Swin UNETR: 0°, 90°, 180°, 270° in one plane, ``R = 4``) and a linear head
on the encoder's embedding predicts the angle's class with cross-entropy. The view maker
(e.g. :class:`~domainfm.domains.medical3d.swin_ssl_views.SwinSSLViews`) supplies the
rotated views and their integer labels.

Deviation from the official code: Swin UNETR's ``SSLHead`` classifies the *first* token of
the bottleneck (``x4_reshape[:, 0]``); here the head reads the backbone's pooled embedding
(:meth:`BatchFeatures.pooled`), so it works for any backbone and shares the pass that other
objectives (InfoNCE) read.

Shapes::

    features.pooled(view)    (B, D)  (or (*lead, D); lead axes are flattened)
    features.batch[label]    (B,)    int64 in [0, num_classes)
    loss                     scalar: mean over views of the mean cross-entropy

Data parallelism: :attr:`ParallelMode.LOCAL` (per-sample loss, mean over the local batch).

Example::

    >>> rotation = RotationPrediction()
    >>> rotation.bind_backbone(vit)  # embed_dim: the backbone's
    >>> features = BatchFeatures(vit, {"view1": x1, "view2": x2, "rot1": r1, "rot2": r2})
    >>> out = rotation.forward_batch(features)
    >>> sorted(out.terms)
    ['acc', 'rotation']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from domainfm.core.batch_features import BatchFeatures
from domainfm.core.objectives.base import (
    ObjectiveOutput,
    ParallelMode,
    SizedFromBackbone,
    require_at_least,
    view_keys,
)
from domainfm.core.objectives.registry import OBJECTIVES


@OBJECTIVES.register("rotation")
class RotationPrediction(SizedFromBackbone):
    """A linear rotation classifier on pooled embeddings, cross-entropy over views.

    Args:
        embed_dim: the backbone's embedding width ``D``; default: the backbone's (the head
            is then built by :meth:`bind_backbone`).
        num_classes: number of rotation classes ``R`` (4 in Swin UNETR).
        views: batch keys of the rotated (and possibly corrupted) views.
        labels: batch keys of their rotation labels, one per view.
    """

    parallel_mode: ClassVar[ParallelMode] = ParallelMode.LOCAL

    head: nn.Linear

    def __init__(
        self,
        *,
        embed_dim: int | None = None,
        num_classes: int = 4,
        views: Sequence[str] = ("view1", "view2"),
        labels: Sequence[str] = ("rot1", "rot2"),
    ) -> None:
        super().__init__()
        require_at_least(1, embed_dim=embed_dim)
        require_at_least(2, num_classes=num_classes)
        self.views, self.labels = view_keys(views, labels, "labels")
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.build_heads_if_sized()

    def build_heads(self) -> None:
        """The linear classifier ``D -> R``."""
        assert self.embed_dim is not None
        self.head = nn.Linear(self.embed_dim, self.num_classes)

    def forward_batch(self, features: BatchFeatures) -> ObjectiveOutput:
        """Mean over views of the cross-entropy of the head's logits vs the labels."""
        self.ensure_sized()
        losses: list[Tensor] = []
        correct: list[Tensor] = []
        for view, label_key in zip(self.views, self.labels, strict=True):
            z = features.pooled(view)
            z = z.reshape(-1, z.shape[-1])  # (B, D)
            labels = torch.as_tensor(features.batch[label_key], device=z.device).reshape(-1)
            if labels.shape[0] != z.shape[0]:
                raise ValueError(
                    f"batch[{label_key!r}] has {labels.shape[0]} labels for "
                    f"{z.shape[0]} embeddings of batch[{view!r}]"
                )
            if labels.is_floating_point():
                raise ValueError(f"batch[{label_key!r}] must hold integer class labels")
            labels = labels.long()
            logits = self.head(z).float()  # (B, R); the loss in at least float32
            losses.append(F.cross_entropy(logits, labels))
            correct.append((logits.detach().argmax(dim=1) == labels).float())
        loss = torch.stack(losses).mean()
        acc = torch.cat(correct).mean()
        return ObjectiveOutput(loss=loss, terms={"rotation": loss, "acc": acc})
