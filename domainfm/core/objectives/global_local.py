"""Global + local contrast of Chaitanya et al.: partition positives across volumes and a
dense contrastive loss on decoder feature maps.

Chaitanya, Erdil, Karani & Konukoglu 2020, "Contrastive learning of global and local features
for medical image segmentation with limited annotations", NeurIPS 2020, arXiv:2006.10511.

**Global loss, strategy G_D ("partition")** (:class:`GlobalPartitionContrast`, Sec. 3.1).
Each volume is split into ``S`` partitions along one axis and every sample carries the index
of the partition it was cut from (``batch["partition"]``, from
:class:`~domainfm.domains.medical3d.partition_views.PartitionViews`). Two augmented views of
each sample give ``M = 2N`` L2-normalized projections ``z_i`` with labels ``y_i`` (the
sample's partition) over the global batch of ``N`` samples. Positives of ``i`` are
``P(i) = {j != i : y_j = y_i}`` — the other view of the same crop *and* both views of every
sample from the same partition of the other volumes — and its negatives are
``Λ⁻(i) = {k : y_k != y_i}``. With cosine similarity ``s`` and temperature ``t``, Eq. 1::

    l(i, j) = -log( exp(s_ij / t) / ( exp(s_ij / t) + sum_{k in Λ⁻(i)} exp(s_ik / t) ) )

(the other positives of ``i`` are in neither the numerator nor the denominator, as in the
paper and its official code, github.com/krishnabits001/domain_specific_cl ``models.py``). The
loss is the mean over the ordered positive pairs ``Λ⁺ = {(i, j) : j in P(i)}``::

    L_g = (1 / |Λ⁺|) sum_{(i, j) in Λ⁺} l(i, j)

which is Eq. 2 (``(1 / |A|) sum_{unordered pairs} [l(i, j) + l(j, i)]``) divided by 2, so
that it has InfoNCE's scale. The paper's batches hold one sample per partition per volume;
here the partitions are drawn per sample, so two samples of the same partition of the *same*
volume (two different crops) are positives too: the rule is only ``y_i = y_j``.

Projection head ``g_1``: the official ``Linear(D, 1024, bias=False) → ReLU →
Linear(1024, 128, bias=False)`` (widths ``hidden_dim``, ``out_dim``) on the backbone's pooled
embedding; :meth:`GlobalPartitionContrast.forward` takes the projections.

**Local loss** (:class:`LocalContrast`, Sec. 3.2, Eq. 3). For the two views of one crop
(same geometry, intensity-only augmentations, so positions correspond) with decoder feature
maps ``f1``, ``f2`` ``(C, *m)``, the *local regions* are the non-overlapping ``K^n`` cells of
the map (``K = region_size``), each represented by its mean feature ``f(u)`` (``K = 1``: every
position; trailing positions beyond a multiple of ``K`` are left out). For region ``u`` of
``f1`` the positive is ``f2(u)`` and the negatives ``Ω⁻(u)`` are the other regions
``u' != u`` of *both* maps (as the official code)::

    l(f1(u), f2(u)) = -log( e^{s(f1(u), f2(u)) / t} / ( e^{s(f1(u), f2(u)) / t}
                       + sum_{u' != u} [ e^{s(f1(u), f1(u')) / t} + e^{s(f1(u), f2(u')) / t} ] ) )
    L_l = mean over samples, regions u and both directions of l

i.e. NT-Xent over the ``2R`` region vectors of one sample's pair, anchors in both maps; this is
Eq. 3 divided by 2 (the paper sums the two directions). Negatives never cross samples.

**What "decoder feature maps" are here.** The paper pretrains the first ``l`` blocks of a
U-Net decoder (with encoder skips) with ``L_l`` in a second stage, the encoder frozen after
global pretraining, then adds a ``g_2`` head of two 1×1 convolutions. Here the objective owns
a small decoder (:class:`~domainfm.core.objectives.local_decoder.LocalDecoder`) over the
backbone's *last* feature map — the patch tokens ``features.tokens(view)`` ``(B, N, D)``
reshaped to ``(B, D, *grid)`` (a ViT's token grid or a CNN's deepest map, e.g. the SegResNet
encoder's) — made of a 1×1 convolution to
``decoder_dim``, ``upsample`` blocks (×2 linear upsampling, 3^n convolution, GroupNorm, ReLU)
and the ``g_2`` head (1×1 conv, GroupNorm, ReLU, 1×1 conv to ``out_dim``); ``L_l`` is
computed on its output ``(B, out_dim, *grid * 2**upsample)``. There are no encoder skips (a
ViT has one scale), GroupNorm replaces BatchNorm (statistics per sample keep the loss
per-sample under data parallelism), and both losses train together (weights in
:class:`~domainfm.tasks.pretrain_module.PretrainModule`); ``stop_grad_encoder=True`` trains
only the decoder, as the paper's second stage after a global-only run.

Data parallelism. :class:`GlobalPartitionContrast` is ``GATHER``: with
``gather_distributed=True`` projections *and* partition labels are gathered from every rank;
each rank's anchors are its own ``2B`` rows and its loss is
``W * (sum of its anchors' l(i, j)) / |Λ⁺_global|``, so the mean over ranks is ``L_g`` of the
global batch and the gather's summed backward gives ``W`` times its gradient
(:mod:`domainfm.core.objectives.base`; equal local batch sizes). :class:`LocalContrast` is
``LOCAL`` (per-sample loss, mean over the local batch). Both compute their loss in at least
float32 with autocast disabled.

Batch keys: ``"view1"``, ``"view2"`` ``(B, C, *spatial)`` and ``"partition"`` ``(B,)`` int64.

Shapes: :meth:`GlobalPartitionContrast.forward` ``z1``, ``z2`` ``(B, P)``, ``partition``
``(B,)``; :meth:`LocalContrast.forward` backbone maps ``(B, D, *grid)`` ×2;
:meth:`LocalContrast.region_loss` decoder maps ``(B, C, *m)`` ×2. Outputs: scalar losses.

Example::

    >>> vit = VisionTransformerND(in_chans=1, spatial_dims=3, patch_size=8, embed_dim=64,
    ...                           depth=2, num_heads=4)
    >>> module = PretrainModule(backbone=vit, objectives={
    ...     "global": GlobalPartitionContrast(temperature=0.1),
    ...     "local": LocalContrast(decoder_dim=32, out_dim=32, region_size=2)})
    >>> batch = PartitionViews(crop_size=(32, 32, 16), num_partitions=4) samples, collated
    >>> loss, logs = module.compute_losses(batch)   # logs: "global", "local", ...
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import ClassVar, Unpack

import torch
import torch.nn.functional as F
from torch import Tensor

from domainfm.core import distributed
from domainfm.core.batch_features import BatchFeatures
from domainfm.core.objectives.base import (
    ObjectiveOutput,
    ParallelMode,
    SizedFromBackbone,
    batch_keys,
    paired_views_fp32,
    require_at_least,
    require_positive,
)
from domainfm.core.objectives.local_decoder import LocalDecoder, spatial_op
from domainfm.core.objectives.projected import ProjectedObjective, ProjectionArgs
from domainfm.core.objectives.registry import OBJECTIVES

PARTITION_KEY = "partition"
"""The batch key of each sample's partition index ``(B,)`` (int64)."""
AVG_POOLS: tuple[Callable[..., Tensor], ...] = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)


def two_views(views: Sequence[str]) -> tuple[str, str]:
    """The batch keys of the two views (``ValueError`` unless exactly two)."""
    keys = batch_keys(views, "views")
    if len(keys) != 2:
        raise ValueError(f"views must name exactly two batch keys, got views={keys}")
    return keys[0], keys[1]


def ordered_positive_pairs(labels: Tensor) -> int:
    """``|Λ⁺| = sum_c m_c (m_c - 1)``: ordered pairs of distinct rows of ``labels`` ``(M,)``
    with equal labels (``m_c`` rows carry label ``c``)."""
    counts = torch.unique(labels, return_counts=True)[1]
    return int((counts * (counts - 1)).sum())


def partition_contrast_sum(
    anchors: Tensor,
    anchor_labels: Tensor,
    anchor_rows: Tensor,
    keys: Tensor,
    key_labels: Tensor,
    temperature: float,
) -> Tensor:
    """``sum_{i in anchors} sum_{j in P(i)} l(i, j)`` of Eq. 1 (see the module docstring).

    Args:
        anchors: unit-norm anchor embeddings ``(A, P)``.
        anchor_labels: their labels ``(A,)``.
        anchor_rows: their rows in ``keys`` ``(A,)`` (an anchor is never its own positive).
        keys: every unit-norm embedding ``(M, P)``.
        key_labels: their labels ``(M,)``.
        temperature: ``t``.
    """
    logits = anchors @ keys.T / temperature  # (A, M)
    same = anchor_labels[:, None] == key_labels[None, :]  # (A, M)
    is_self = F.one_hot(anchor_rows, num_classes=keys.shape[0]).bool()
    positive = same & ~is_self
    # log sum_{k in Λ⁻(i)} exp(s_ik / t); an anchor without negatives gets the lowest float
    # (a finite stand-in for log 0, so that no NaN gradient flows through an empty sum)
    lowest = torch.finfo(logits.dtype).min
    negatives = torch.logsumexp(logits.masked_fill(same, lowest), dim=1, keepdim=True)  # (A, 1)
    pair_loss = torch.logaddexp(logits, negatives) - logits  # l(i, k) for every key k
    return torch.where(positive, pair_loss, torch.zeros_like(pair_loss)).sum()


@OBJECTIVES.register("global_partition")
class GlobalPartitionContrast(ProjectedObjective):
    """The global loss with partition positives (strategy G_D); see the module docstring.

    Args:
        temperature: ``t > 0`` (official: 0.1).
        views: the batch keys of the two views.
        partition_key: the batch key of the partition indices.
        gather_distributed: gather projections and partitions from all ranks.
        **head: the projection head ``g_1``'s widths (:class:`~domainfm.core.objectives.
            projected.ProjectionArgs`): ``embed_dim``, the backbone's pooled width ``D``
            (default: the backbone's); ``hidden_dim`` (default and official: 1024);
            ``out_dim`` (default and official: 128).
    """

    parallel_mode: ClassVar[ParallelMode] = ParallelMode.GATHER

    def __init__(
        self,
        *,
        temperature: float = 0.1,
        views: Sequence[str] = ("view1", "view2"),
        partition_key: str = PARTITION_KEY,
        gather_distributed: bool = True,
        **head: Unpack[ProjectionArgs],
    ) -> None:
        # g_1: Linear(D, hidden) -> ReLU -> Linear(hidden, out), without biases (official)
        super().__init__(head, defaults={"hidden_dim": 1024, "out_dim": 128}, bias=False)
        require_positive(temperature=temperature)
        self.views = two_views(views)
        self.partition_key = partition_key
        self.temperature = float(temperature)
        self.gather_distributed = bool(gather_distributed)
        self.build_heads_if_sized()

    def forward_batch(self, features: BatchFeatures) -> ObjectiveOutput:
        """The loss of the pooled, projected views and ``batch["partition"]``."""
        self.ensure_sized()
        z1, z2 = (self.project(features, key) for key in self.views)  # (B, P) each
        partition = torch.as_tensor(features.batch[self.partition_key], device=z1.device)
        return self(z1, z2, partition)

    def forward(self, z1: Tensor, z2: Tensor, partition: Tensor) -> ObjectiveOutput:
        """``L_g`` of the projections ``z1``, ``z2`` ``(B, P)`` of samples with partition
        indices ``partition`` ``(B,)``; see the module docstring."""
        b = z1.shape[0]
        if tuple(partition.shape) != (b,):
            raise ValueError(f"partition must be (B,) = ({b},), got {tuple(partition.shape)}")
        labels = partition.to(device=z1.device, dtype=torch.long)
        with torch.autocast(device_type=z1.device.type, enabled=False):
            g1, g2 = paired_views_fp32(z1, z2, gather=self.gather_distributed)
            g1, g2 = F.normalize(g1, dim=1), F.normalize(g2, dim=1)
            world, offset = 1, 0
            if self.gather_distributed:
                labels = distributed.gather_no_grad(labels)
                world, offset = distributed.world_size(), distributed.rank() * b
            n = g1.shape[0]
            keys = torch.cat([g1, g2], dim=0)  # (2N, P)
            key_labels = torch.cat([labels, labels])  # (2N,)
            # anchors: this rank's rows of the gathered tensors (every path from a local input
            # to any rank's loss goes through the gather)
            local = torch.arange(offset, offset + b, device=z1.device)
            rows = torch.cat([local, local + n])  # (2B,)
            total = partition_contrast_sum(
                keys[rows], key_labels[rows], rows, keys, key_labels, self.temperature
            )
            pairs = ordered_positive_pairs(key_labels)  # >= 2N: each crop's two views
            loss = total * (world / pairs)
            per_anchor = torch.tensor(pairs / (2 * n) - 1.0, device=z1.device)
        return ObjectiveOutput(loss=loss, terms={"cross_positives": per_anchor})


def region_vectors(maps: Tensor, region_size: int) -> Tensor:
    """Mean features of the non-overlapping ``region_size^n`` cells of ``maps``
    ``(B, C, *m)``: ``(B, R, C)``, regions in C order over the cell grid."""
    if region_size == 1:
        return maps.flatten(2).transpose(1, 2)
    pool = spatial_op(AVG_POOLS, maps.ndim - 2)
    pooled: Tensor = pool(maps, region_size, region_size)
    return pooled.flatten(2).transpose(1, 2)


def local_contrast_loss(r1: Tensor, r2: Tensor, temperature: float) -> Tensor:
    """``L_l`` of region vectors ``r1``, ``r2`` ``(B, R, C)`` of two views (Eq. 3 / 2): per
    sample NT-Xent over its ``2R`` unit-norm vectors, the positive of region ``u`` of one
    view being ``u`` of the other; mean over samples, regions and both directions."""
    b, r, _ = r1.shape
    v = F.normalize(torch.cat([r1, r2], dim=1), dim=-1)  # (B, 2R, C)
    logits = v @ v.transpose(1, 2) / temperature  # (B, 2R, 2R)
    eye = torch.eye(2 * r, dtype=torch.bool, device=v.device)
    logits = logits.masked_fill(eye, float("-inf"))  # an anchor is not its own negative
    partner = (torch.arange(2 * r, device=v.device) + r) % (2 * r)  # (2R,)
    return F.cross_entropy(logits.flatten(0, 1), partner.repeat(b))


@OBJECTIVES.register("local_contrast")
class LocalContrast(SizedFromBackbone):
    """The local loss on the maps of an owned decoder; see the module docstring.

    Args:
        embed_dim: the backbone's token width ``D``; default: the backbone's.
        patch_size: the backbone's patch size (its length is the number of spatial axes);
            default: the backbone's.
        decoder_dim: the decoder's width.
        out_dim: width of the ``g_2`` output the regions are compared in.
        upsample: ×2 upsampling blocks of the decoder (0: the token grid itself).
        region_size: side ``K`` of the local regions, in decoder-map positions.
        temperature: ``t > 0`` (official: 0.1).
        views: the batch keys of the two views (same geometry).
        stop_grad_encoder: train only the decoder (the paper's second stage).
    """

    parallel_mode: ClassVar[ParallelMode] = ParallelMode.LOCAL
    backbone_sizes: ClassVar[tuple[str, ...]] = ("embed_dim", "patch_size")

    decoder: LocalDecoder

    def __init__(
        self,
        *,
        embed_dim: int | None = None,
        patch_size: Sequence[int] | None = None,
        decoder_dim: int = 64,
        out_dim: int = 64,
        upsample: int = 1,
        region_size: int = 1,
        temperature: float = 0.1,
        views: Sequence[str] = ("view1", "view2"),
        stop_grad_encoder: bool = False,
    ) -> None:
        super().__init__()
        require_at_least(1, embed_dim=embed_dim, decoder_dim=decoder_dim, out_dim=out_dim)
        require_at_least(1, region_size=region_size)
        require_at_least(0, upsample=upsample)
        require_positive(temperature=temperature)
        self.views = two_views(views)
        self.embed_dim = embed_dim
        self.patch_size: tuple[int, ...] | None = (
            tuple(int(p) for p in patch_size) if patch_size is not None else None
        )
        self.decoder_dim = decoder_dim
        self.out_dim = out_dim
        self.upsample = int(upsample)
        self.region_size = int(region_size)
        self.temperature = float(temperature)
        self.stop_grad_encoder = bool(stop_grad_encoder)
        self.build_heads_if_sized()

    def build_heads(self) -> None:
        """The decoder and its ``g_2`` head (:class:`LocalDecoder`)."""
        assert self.embed_dim is not None and self.patch_size is not None
        self.decoder = LocalDecoder(
            in_dim=self.embed_dim,
            spatial_dims=len(self.patch_size),
            decoder_dim=self.decoder_dim,
            out_dim=self.out_dim,
            upsample=self.upsample,
        )

    def forward_batch(self, features: BatchFeatures) -> ObjectiveOutput:
        """The loss of the two views' token maps (``features.tokens``, see the module
        docstring)."""
        maps = []
        for key in self.views:
            tokens, grid = features.tokens(key)  # (B, N, D), N in C order over grid.shape
            batch, _, dim = tokens.shape
            maps.append(tokens.transpose(1, 2).reshape(batch, dim, *grid.shape))
        return self(maps[0], maps[1])

    def forward(self, map1: Tensor, map2: Tensor) -> ObjectiveOutput:
        """``L_l`` of the backbone maps ``(B, D, *grid)`` of two views through the decoder."""
        self.ensure_sized()
        if map1.shape != map2.shape:
            raise ValueError(
                f"the two views' maps differ: {tuple(map1.shape)} and {tuple(map2.shape)}"
            )
        if self.stop_grad_encoder:
            map1, map2 = map1.detach(), map2.detach()
        return ObjectiveOutput(loss=self.region_loss(self.decoder(map1), self.decoder(map2)))

    def region_loss(self, f1: Tensor, f2: Tensor) -> Tensor:
        """``L_l`` of decoder maps ``f1``, ``f2`` ``(B, C, *m)`` (Eq. 3 / 2)."""
        regions = [s // self.region_size for s in f1.shape[2:]]
        if math.prod(regions) < 2:
            raise ValueError(
                f"decoder maps {tuple(f1.shape[2:])} hold {math.prod(regions)} region(s) of "
                f"side {self.region_size}; the local loss needs at least 2"
            )
        with torch.autocast(device_type=f1.device.type, enabled=False):
            dtype = torch.promote_types(f1.dtype, torch.float32)
            r1 = region_vectors(f1.to(dtype), self.region_size)
            r2 = region_vectors(f2.to(dtype), self.region_size)
            return local_contrast_loss(r1, r2, self.temperature)
