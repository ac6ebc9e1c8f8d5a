"""SoftCon: contrastive learning towards soft targets from multi-label land cover.

Wang, Albrecht & Zhu 2024, "Multi-Label Guided Soft Contrastive Learning for Efficient Earth
Observation Pretraining", arXiv:2405.20462. InfoNCE treats the other view of the same scene
as the only positive and every other scene as a negative, although two scenes of the same
land cover are alike. SoftCon replaces the one-hot target of each anchor by a soft target
from the *label* similarity of the scenes' multi-label land-cover vectors, so scenes with
similar land cover are pulled together in proportion.

**The loss.** For a global batch of ``N`` scenes, two views each with projections
``z1_i``, ``z2_j`` and land-cover vectors ``y1_i``, ``y2_j`` (``K`` classes: multi-hot, or
the class fractions of :mod:`~domainfm.domains.geospatial.landcover_targets`)::

    l_ij = cos(z1_i, z2_j) / t                                  image similarity logits
    s_ij = sim(y1_i, y2_j)   for i != j,   s_ii = 1             label similarity in [0, 1]
    p_ij = s_ij / sum_k s_ik,        q_ij = s_ij / sum_k s_kj   row / column soft targets
    L    = 1/2 [ -1/N sum_i sum_j p_ij log softmax_j(l_i.)
               + -1/N sum_j sum_i q_ij log softmax_i(l_.j) ]

with ``sim`` the cosine of the label vectors (``label_similarity="cosine"``; ``0`` when a
vector is zero, i.e. the scene has no labeled pixel) or their weighted Jaccard overlap
``sum_k min(y_ik, y_jk) / sum_k max(y_ik, y_jk)`` (``"jaccard"``; the Jaccard index of
multi-hot vectors). With ``label_threshold`` the vectors are first made multi-hot
(``y > threshold``), the paper's multi-label form. The diagonal is 1 whatever the labels:
the two views of one scene stay positives (an unlabeled scene's row is InfoNCE's). With the
identity as target (``s = I``) the loss is the symmetric InfoNCE of CLIP / MoCo v3; the soft
targets are what makes it SoftCon.

The official repository (github.com/zhu-xlab/softcon, checked at b687e46) publishes the
pretrained encoders only, no pretraining code (its issue #2 asks for it); this is the loss as
the paper describes it (soft label-similarity targets for the cross-view similarity matrix),
written as the soft-target cross-entropy in both directions above.

**Projection head.** ``Linear -> ReLU -> Linear`` on the backbone's pooled embedding of each
view (:class:`~domainfm.core.objectives.projected.ProjectedObjective`; no BatchNorm, so every
sample's projection is its own and the data-parallel contract below holds exactly).

Data parallelism (:attr:`parallel_mode` ``GATHER``): with ``gather_distributed=True`` the
projections of both views are gathered from all ranks *with gradients* and their label
vectors without (negatives from every rank); each rank's anchors are its own rows of the
gathered tensors (rows of ``l`` for its ``z1``, columns for its ``z2``), so the mean over
ranks of the rank losses is the single-process loss of the global batch and the gather's
summed backward gives ``W`` times its gradient, as :mod:`domainfm.core.objectives.base`
requires (equal local batch sizes). With ``gather_distributed=False`` the negatives are the
local batch's only, a different loss.

The loss runs in at least float32 with autocast disabled (log-softmax via log-sum-exp).

Batch keys (e.g. from ``RasterPretrainDataModule(views=2, landcover=...)``)::

    "view1", "view2"              (B, C, *spatial)  the two views
    "landcover1", "landcover2"    (B, K)            their land-cover vectors

Shapes of :meth:`forward`: ``z1``, ``z2`` ``(B, P)`` projections; ``y1``, ``y2`` ``(B, K)``;
output ``loss`` scalar, terms ``"softcon"``, ``"kl"`` (the loss less the entropy of the soft
targets: what training can still remove, ``0`` when the similarities match the targets; with
near-uniform targets, e.g. a scene of one land cover, the loss itself stays near ``log N``)
and ``"top1_acc"`` (the other view of the scene is the most similar).

Example::

    >>> softcon = SoftCon(hidden_dim=256, out_dim=64, temperature=0.1)
    >>> module = PretrainModule(backbone=vit, objectives={"softcon": softcon})
    >>> out = softcon(torch.randn(8, 64), torch.randn(8, 64), y, y)   # y (8, K) fractions
    >>> out.loss.backward()
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal, Unpack

import torch
import torch.nn.functional as F
from torch import Tensor

from domainfm.core import distributed
from domainfm.core.batch_features import BatchFeatures
from domainfm.core.objectives.base import (
    ObjectiveOutput,
    ParallelMode,
    paired_views_fp32,
    require_positive,
    view_keys,
)
from domainfm.core.objectives.projected import ProjectedObjective, ProjectionArgs
from domainfm.core.objectives.registry import OBJECTIVES

LabelSimilarity = Literal["cosine", "jaccard"]


def label_similarity(
    y1: Tensor, y2: Tensor, kind: LabelSimilarity = "cosine", eps: float = 1e-12
) -> Tensor:
    """``(N, M)`` similarity in ``[0, 1]`` of non-negative label vectors ``(N, K)``,
    ``(M, K)``: cosine, or weighted Jaccard ``sum min / sum max``; ``0`` for a zero vector."""
    if kind == "cosine":
        return F.normalize(y1, dim=1, eps=eps) @ F.normalize(y2, dim=1, eps=eps).T
    low = torch.minimum(y1[:, None], y2[None]).sum(dim=-1)  # (N, M)
    high = torch.maximum(y1[:, None], y2[None]).sum(dim=-1)
    return low / high.clamp_min(eps)


def soft_targets(s: Tensor) -> Tensor:
    """Rows of the label similarity ``(R, N)`` normalized to sum 1."""
    return s / s.sum(dim=1, keepdim=True)


def entropy(p: Tensor) -> Tensor:
    """Mean entropy of the rows of ``p`` ``(R, N)`` (``0 log 0 = 0``)."""
    return -torch.special.xlogy(p, p).sum(dim=1).mean()


@OBJECTIVES.register("softcon")
class SoftCon(ProjectedObjective):
    """Soft contrastive loss with multi-label land-cover targets (see the module docstring).

    Args:
        temperature: ``t > 0``.
        label_similarity: ``"cosine"`` or ``"jaccard"`` (weighted) of the label vectors.
        label_threshold: make the vectors multi-hot (``y > threshold``) first; ``None``: use
            them as given (e.g. class fractions).
        gather_distributed: gather negatives (and their labels) from all ranks.
        views: the batch keys of the two views.
        labels: the batch keys of their land-cover vectors, one per view.
        **head: the projection head's widths (:class:`~domainfm.core.objectives.projected.
            ProjectionArgs`): ``embed_dim``, the backbone's pooled width ``D`` (default: the
            backbone's; the head is then built by :meth:`bind_backbone`); ``hidden_dim``
            (default: 2048); ``out_dim``, the projection width ``P`` (default: 256).
    """

    parallel_mode: ClassVar[ParallelMode] = ParallelMode.GATHER

    def __init__(
        self,
        *,
        temperature: float = 0.1,
        label_similarity: LabelSimilarity = "cosine",
        label_threshold: float | None = None,
        gather_distributed: bool = True,
        views: Sequence[str] = ("view1", "view2"),
        labels: Sequence[str] = ("landcover1", "landcover2"),
        **head: Unpack[ProjectionArgs],
    ) -> None:
        super().__init__(head, defaults={"hidden_dim": 2048, "out_dim": 256})
        require_positive(temperature=temperature)
        if label_similarity not in ("cosine", "jaccard"):
            raise ValueError(
                f"label_similarity must be 'cosine' or 'jaccard', got {label_similarity!r}"
            )
        self.views, self.labels = view_keys(views, labels, "labels")
        if len(self.views) != 2:
            raise ValueError(f"SoftCon compares two views, got views={list(self.views)}")
        self.temperature = float(temperature)
        self.label_similarity: LabelSimilarity = label_similarity
        self.label_threshold = label_threshold
        self.gather_distributed = bool(gather_distributed)
        self.build_heads_if_sized()

    def forward_batch(self, features: BatchFeatures) -> ObjectiveOutput:
        """The loss of a batch with two views and their land-cover vectors."""
        z1, z2 = (self.project(features, key) for key in self.views)  # (B, P) each
        y1, y2 = (torch.as_tensor(features.batch[key], device=z1.device) for key in self.labels)
        return self(z1, z2, y1, y2)

    def forward(self, z1: Tensor, z2: Tensor, y1: Tensor, y2: Tensor) -> ObjectiveOutput:
        """The loss of projections ``z1``, ``z2`` ``(B, P)`` with label vectors ``y1``, ``y2``
        ``(B, K)``; see the module docstring."""
        b = z1.shape[0]
        if y1.ndim != 2 or y1.shape != y2.shape or y1.shape[0] != b:
            raise ValueError(
                f"y1 and y2 must both be (B, K) label vectors with B={b}, got "
                f"{tuple(y1.shape)} and {tuple(y2.shape)}"
            )
        with torch.autocast(device_type=z1.device.type, enabled=False):
            g1, g2 = paired_views_fp32(z1, z2, gather=self.gather_distributed)
            g1, g2 = F.normalize(g1, dim=1), F.normalize(g2, dim=1)
            labels = torch.cat([y1, y2], dim=1).to(g1.dtype)  # one gather for both
            if self.gather_distributed:
                labels = distributed.gather_no_grad(labels)
            if labels.lt(0).any():
                raise ValueError("label vectors must be non-negative (fractions or multi-hot)")
            if self.label_threshold is not None:
                labels = (labels > self.label_threshold).to(g1.dtype)
            l1, l2 = labels.split(y1.shape[1], dim=1)  # (N, K) each
            n = g1.shape[0]
            offset = distributed.rank() * b if self.gather_distributed else 0
            local = torch.arange(offset, offset + b, device=z1.device)  # this rank's rows
            s = label_similarity(l1, l2, self.label_similarity)  # (N, N)
            s = s.masked_fill(torch.eye(n, dtype=torch.bool, device=s.device), 1.0)
            rows = g1[local] @ g2.T / self.temperature  # (B, N): z1 anchors vs every z2
            cols = g2[local] @ g1.T / self.temperature  # (B, N): z2 anchors vs every z1
            p, q = soft_targets(s[local]), soft_targets(s.T[local])  # (B, N) each
            row_loss = -(p * F.log_softmax(rows, dim=1)).sum(dim=1)
            col_loss = -(q * F.log_softmax(cols, dim=1)).sum(dim=1)
            loss = 0.5 * (row_loss.mean() + col_loss.mean())
            with torch.no_grad():
                acc = (rows.argmax(dim=1) == local).to(g1.dtype).mean()
                kl = loss - 0.5 * (entropy(p) + entropy(q))
        return ObjectiveOutput(loss=loss, terms={"softcon": loss, "kl": kl, "top1_acc": acc})
