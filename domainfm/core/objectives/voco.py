"""VoCo: predict where a random crop lies from its similarity to the base crops of a volume.

Wu, Zhuang & Chen 2024, "VoCo: A Simple-yet-Effective Volume Contrastive Learning Framework
for 3D Medical Image Analysis", CVPR 2024, arXiv:2402.17300. A region of each volume is tiled
by ``K`` non-overlapping *base crops*; ``R`` *random crops* are cut inside the region. The
label of a random crop is its overlap with every base crop (the fraction of its volume lying
in each, a row that sums to 1), and the model predicts it from the cosine similarities of
projected embeddings ("contextual position prediction"), while a regularizer keeps the base
crops' embeddings apart so that they act as distinct position classes. The crop scheme for CT
is :class:`~domainfm.domains.medical3d.voco_crops.VoCoCrops`.

**The loss, as in the official code** (github.com/Luffy03/VoCo, ``models/voco_head.py``:
``online_assign``, ``ce_loss``, ``regularization_loss``; ``voco_train.py``:
``loss = pos + neg + b_loss``). Per sample, with projected embeddings ``p_r`` (random crops),
``q_k`` (base crops) and overlaps ``y_rk``, ``eps = 1e-6``::

    l_rk = relu(cos(p_r, q_k))                                    logits in [0, 1]
    pos  = -sum_rk y_rk * log(1 - |y_rk - l_rk| + eps) / (sum_rk y_rk + eps)
    neg  =  sum_rk [y_rk == 0] * l_rk^2 / (sum_rk [y_rk == 0] + eps)
    reg  =  mean_{k < j} relu(cos(q_k, sg(q_j)))^2                ``sg``: stop-gradient
    loss =  mean_b (pos + neg) + reg_weight * mean_b reg

The code differs from the paper's equations as we read them (Sec. 3, a prediction loss
``-mean_k log(1 - |y_k - l_k|)`` and a regularizer averaging ``|cos|`` over base-crop pairs),
and this module follows the code: it weights the positive term by the overlap, adds the
squared-logit term on zero-overlap pairs, squares the clamped similarity of the regularizer
and stops its gradient through the second crop of each pair.

Deviations from the official code, each forced by the toolkit's one-backbone design or by
the data-parallel contract:

* *No EMA teacher.* The official head (student and EMA teacher, momentum 0.9) averages the
  logits ``relu(cos(p_student, q_teacher))`` and ``relu(cos(p_teacher, q_student))``. Here
  the teacher is the student itself, detached (``stop_grad_bases=False``, the default)::

      l_rk = (relu(cos(p_r, sg(q_k))) + relu(cos(sg(p_r), q_k))) / 2

  the same value as above, with half the gradient flowing into each side. With
  ``stop_grad_bases=True``, ``l_rk = relu(cos(p_r, sg(q_k)))``: base embeddings get no
  gradient from the prediction term and are shaped only by the regularizer.
* *Projection head*: the official 3-layer MLP (``Linear → BatchNorm(affine=False,
  track_running_stats=False) → ReLU``, twice, then ``Linear``), but the normalization
  statistics are taken per sample over its ``R + K`` crops instead of over the whole local
  batch, which keeps the loss strictly per-sample. Its input is the backbone's pooled
  embedding (the official Swin head concatenates pooled multi-scale features).

Data parallelism (:attr:`parallel_mode` ``LOCAL``): every term, the head's normalization
included, depends on one sample's crops only, and the loss is the mean over the local batch,
so with equal local batch sizes the mean of the rank losses is the single-process loss of the
global batch and DDP's gradient averaging gives its gradient. Nothing crosses ranks.

The loss math runs in at least float32 with autocast disabled. It is generic over spatial
dims: only the crop scheme knows about volumes.

Batch keys (produced by the crop scheme)::

    "voco_base"      (B, K, C, *crop)   base crops tiling the region
    "voco_crops"     (B, R, C, *crop)   random crops inside the region
    "voco_overlap"   (B, R, K)          fraction of random crop r's volume inside base crop k

Shapes of :meth:`forward` (pooled backbone embeddings): ``crops`` ``(B, R, D)``, ``base``
``(B, K, D)``, ``overlap`` ``(B, R, K)``; output ``loss`` scalar, terms ``"pred"``
(``pos + neg``), ``"pos"``, ``"neg"``, ``"reg"`` (unweighted batch means).

Example::

    >>> voco = VoCo(hidden_dim=256, out_dim=256)
    >>> module = PretrainModule(backbone=vit, objectives={"voco": voco})  # embed_dim: vit's
    >>> out = voco.forward_batch(BatchFeatures(vit, batch))   # batch from VoCoCrops
    >>> sorted(out.terms)
    ['neg', 'pos', 'pred', 'reg']
"""

from __future__ import annotations

from typing import ClassVar, Unpack

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from domainfm.core.batch_features import BatchFeatures
from domainfm.core.objectives.base import (
    ObjectiveOutput,
    ParallelMode,
    require_at_least,
)
from domainfm.core.objectives.projected import ProjectedObjective, ProjectionArgs
from domainfm.core.objectives.registry import OBJECTIVES

BASE_KEY = "voco_base"
CROPS_KEY = "voco_crops"
OVERLAP_KEY = "voco_overlap"
EPS = 1e-6  # the official code's epsilon in the logs and the normalizers


def prediction_loss(logits: Tensor, overlap: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample positive and negative prediction terms ``(B,)`` of ``(B, R, K)`` logits
    (in ``[0, 1]``) against overlaps ``y`` (official ``ce_loss``, see the module docstring)."""
    pos = -(overlap * torch.log(1.0 - (overlap - logits).abs() + EPS)).sum(dim=(1, 2))
    pos = pos / (overlap.sum(dim=(1, 2)) + EPS)
    negative = (overlap == 0).to(logits.dtype)
    neg = (negative * logits.square()).sum(dim=(1, 2)) / (negative.sum(dim=(1, 2)) + EPS)
    return pos, neg


def regularization_loss(base: Tensor) -> Tensor:
    """Per-sample ``(B,)`` mean over pairs ``k < j`` of ``relu(cos(q_k, sg(q_j)))^2`` for
    unit-norm base embeddings ``(B, K, P)``, ``K >= 2`` (official ``regularization_loss``)."""
    k = base.shape[1]
    sim = F.relu(base @ base.detach().transpose(1, 2))  # (B, K, K); row k gets the gradient
    pairs = torch.triu(torch.ones(k, k, dtype=torch.bool, device=base.device), diagonal=1)
    return sim[:, pairs].square().mean(dim=1)  # (B, K (K - 1) / 2) -> (B,)


class CropNorm(nn.Module):
    """BatchNorm without affine or running statistics, over the crops of each sample:
    ``(B, N, H)`` normalized per sample and channel over its ``N`` rows."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm1d(num_features, affine=False, track_running_stats=False)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.norm(x.transpose(1, 2)).transpose(1, 2)  # stats over N
        return out


@OBJECTIVES.register("voco")
class VoCo(ProjectedObjective):
    """VoCo position contrast: prediction loss + ``reg_weight`` × base-crop regularizer.

    Args:
        reg_weight: weight of the regularizer (official: 1).
        stop_grad_bases: detach the base embeddings in the prediction term instead of the
            official code's symmetric student/teacher logits (see above).
        **head: the projection head's widths (:class:`~domainfm.core.objectives.projected.
            ProjectionArgs`): ``embed_dim``, the backbone's pooled width ``D`` (default: the
            backbone's; the head is then built by :meth:`bind_backbone`); ``hidden_dim``
            (default and official: 2048); ``out_dim`` (default and official: 2048).
    """

    parallel_mode: ClassVar[ParallelMode] = ParallelMode.LOCAL

    def __init__(
        self,
        *,
        reg_weight: float = 1.0,
        stop_grad_bases: bool = False,
        **head: Unpack[ProjectionArgs],
    ) -> None:
        super().__init__(head, defaults={"hidden_dim": 2048, "out_dim": 2048})
        require_at_least(0, reg_weight=reg_weight)
        self.reg_weight = float(reg_weight)
        self.stop_grad_bases = bool(stop_grad_bases)
        self.build_heads_if_sized()

    def build_heads(self) -> None:
        """The projection head ``D -> hidden -> hidden -> out`` with crop-wise norms (see the
        module docstring), in place of the base's two-layer head."""
        assert self.embed_dim is not None
        hidden_dim = self.hidden_dim
        self.head = nn.Sequential(
            nn.Linear(self.embed_dim, hidden_dim),
            CropNorm(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim),
            CropNorm(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, self.out_dim),
        )

    def forward_batch(self, features: BatchFeatures) -> ObjectiveOutput:
        """The loss of a batch with ``"voco_base"``, ``"voco_crops"`` and ``"voco_overlap"``."""
        crops = features.pooled(CROPS_KEY)  # (B, R, D)
        base = features.pooled(BASE_KEY)  # (B, K, D)
        overlap = torch.as_tensor(features.batch[OVERLAP_KEY], device=crops.device)
        return self(crops, base, overlap)

    def forward(self, crops: Tensor, base: Tensor, overlap: Tensor) -> ObjectiveOutput:
        """The loss of pooled embeddings ``crops`` ``(B, R, D)``, ``base`` ``(B, K, D)`` and
        overlaps ``(B, R, K)``; see the class docstring."""
        if crops.ndim != 3 or base.ndim != 3 or crops.shape[::2] != base.shape[::2]:
            raise ValueError(
                "crops and base must be (B, R, D) and (B, K, D) embeddings, got "
                f"{tuple(crops.shape)} and {tuple(base.shape)}"
            )
        self.ensure_sized()
        b, r, _ = crops.shape
        k = base.shape[1]
        if k < 2:
            raise ValueError(f"need at least 2 base crops per sample, got K={k}")
        if tuple(overlap.shape) != (b, r, k):
            raise ValueError(f"overlap must be (B, R, K) = {(b, r, k)}, got {tuple(overlap.shape)}")
        with torch.autocast(device_type=crops.device.type, enabled=False):
            dtype = torch.promote_types(crops.dtype, torch.float32)
            z = self.head(torch.cat([crops, base], dim=1).to(dtype))  # (B, R + K, P)
            z = F.normalize(z, dim=-1, eps=1e-8)
            p, q = z[:, :r], z[:, r:]  # (B, R, P), (B, K, P)
            logits = F.relu(p @ q.detach().transpose(1, 2))  # (B, R, K)
            if not self.stop_grad_bases:  # teacher = detached student, both ways
                logits = 0.5 * (logits + F.relu(p.detach() @ q.transpose(1, 2)))
            pos, neg = prediction_loss(logits, overlap.to(dtype))
            reg = regularization_loss(q).mean()
            pos, neg = pos.mean(), neg.mean()
            pred = pos + neg
            loss = pred + self.reg_weight * reg
        return ObjectiveOutput(loss=loss, terms={"pred": pred, "pos": pos, "neg": neg, "reg": reg})
