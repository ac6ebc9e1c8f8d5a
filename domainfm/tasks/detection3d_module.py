"""Lightning module for 3D object detection fine-tuning: MONAI's RetinaNet over a backbone.

RetinaNet (Lin et al. 2017, "Focal Loss for Dense Object Detection", arXiv:1708.02002) as
MONAI's detection app builds it for CT nodules (``monai.apps.detection``; Baumgartner et al.
2021, nnDetection, arXiv:2106.00817), over any 3D domainfm backbone:

1. **Pyramid** (:class:`VolumeFeaturePyramid`): a multi-scale backbone (Swin, SegResNet
   encoder, ResNet: ``feature_channels``) gives its stage maps; a plain 3D ViT gives evenly
   spaced blocks rescaled by ViTDet's simple pyramid (Li et al. 2022, arXiv:2203.16527;
   transposed convs / max-pool of the last tokens to strides ``p/4 … 2p``). Levels finer
   than ``min_stride`` are skipped. MONAI's 3D FPN brings them to ``fpn_dim`` channels.
2. **Heads**: MONAI ``RetinaNet``'s classification and box-regression towers (4 conv +
   GroupNorm + ReLU each) on every level.
3. **Training** (MONAI ``RetinaNetDetector``): anchors ``AnchorGeneratorWithAnchorShape``
   (``anchor_shapes`` at the finest level, scaled by each level's stride); anchors matched to
   boxes by IoU (torchvision's ``Matcher``: foreground ≥ 0.5, background < 0.4, and every
   box keeps its best anchors even below 0.5) or ATSS (Zhang et al. 2020, arXiv:1912.02424;
   its mean + std threshold can leave a box without anchor when the candidates' IoUs tie);
   ``HardNegativeSampler`` keeps 64 anchors per volume, 30 % positive, negatives drawn among
   the highest-scoring; losses: binary cross-entropy of the sampled anchors' class logits
   and smooth-L1 of the ``BoxCoder``-encoded offsets of the positive anchors::

       L = BCE(logits[sampled], onehot[sampled]) + SmoothL1_β=1/9(reg[pos], enc(gt, a)[pos])

4. **Inference**: a volume larger than ``roi_size`` is searched with MONAI's sliding window
   over the head outputs (Gaussian blending of overlapping windows' maps), boxes decoded over
   the whole volume's anchors, then per class: score ≥ ``score_threshold``, top 1000 per
   level, NMS at ``nms_iou`` (merging the boxes of overlapping windows), at most
   ``detections_per_volume``.

Batches (:func:`~domainfm.domains.medical3d.boxed_volumes.collate_boxes`) are dicts::

    "input"   (B, C, D, H, W) float
    "boxes"   B × (N_i, 6) float, voxel-edge xyzxyz over the array's axes (a box around
              voxels 3..5 of an axis is 3, 6)
    "labels"  B × (N_i,) int64 object classes 0 … num_classes-1 (no background class)

Training logs ``train/loss_cls``, ``train/loss_box`` and their sum ``train/loss``;
validation (whole volumes) logs mAP at IoU 0.1/0.25/0.5 and FROC sensitivities
(:class:`~domainfm.tasks.detection3d_metrics.VolumeDetectionMetrics`). ``forward`` in eval
mode returns per volume ``{"boxes": (K, 6), "labels": (K,), "scores": (K,)}``, by
decreasing score.

Example::

    >>> module = Detection3DModule(backbone=vit3d, num_classes=1, roi_size=32)
    >>> module.eval()(torch.randn(1, 1, 48, 48, 32))[0]["boxes"].shape
    torch.Size([K, 6])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Unpack

from torch import Tensor, nn

from domainfm.core.grid import to_ntuple
from domainfm.tasks.detection3d_inference import Detection3DInference, Detection3DInferenceArgs
from domainfm.tasks.detection3d_metrics import VolumeDetectionMetrics
from domainfm.tasks.detection_task import (
    BackboneFeatures,
    DetectionTask,
    load_detection_task,
)
from domainfm.tasks.heads.upernet import SimpleFeaturePyramid, backbone_pyramid

RECIPE_KEY = "detect3d"
"""The task's entry in a checkpoint's ``domainfm`` recipe."""


class VolumeFeaturePyramid(BackboneFeatures):
    """A 3D domainfm backbone as RetinaNet features: FPN maps fine → coarse, each
    ``(B, out_channels, *spatial / stride_i)``.

    Args:
        backbone: a 3D backbone, referenced (the owner, :class:`Detection3DModule`,
            registers it; see :class:`~domainfm.tasks.detection_task.BackboneFeatures`).
        num_maps: ViT blocks read (at most 4; a multi-scale backbone offers all its maps).
        out_channels: FPN width (a multiple of 8: the heads' GroupNorm has 8 groups).
        min_stride: levels with a smaller stride (along the first axis) are not used.

    Attributes:
        strides: each used level's stride per axis, fine → coarse.
        size_divisible: what every input side must divide by, per axis.
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        num_maps: int = 4,
        out_channels: int = 32,
        min_stride: float = 2.0,
    ) -> None:
        from monai.networks.blocks.feature_pyramid_network import FeaturePyramidNetwork

        patch = tuple(int(p) for p in getattr(backbone, "patch_size", ()))
        if len(patch) != 3:
            raise ValueError("3D detection needs a 3D backbone (patch_size with 3 axes)")
        if out_channels < 8 or out_channels % 8:
            raise ValueError(f"fpn_dim={out_channels}: must be a positive multiple of 8")
        super().__init__(backbone)
        indices, pyramid, channels, strides = backbone_pyramid(backbone, num_maps)
        keep = [i for i, s in enumerate(strides) if s >= min_stride] or [len(strides) - 1]
        self.read = [indices[i] for i in keep]
        self.pyramid: SimpleFeaturePyramid | None = None
        self.strides: list[tuple[float, ...]]
        if pyramid is None:  # stage maps: isotropic strides
            self.strides = [(float(strides[i]),) * 3 for i in keep]
        else:
            scales = [pyramid.scales[i] for i in keep]
            embed_dim = int(channels[0])
            self.pyramid = SimpleFeaturePyramid(embed_dim=embed_dim, spatial_dims=3, scales=scales)
            self.strides = [tuple(p / s for p in patch) for s in scales]
        self.size_divisible = tuple(
            math.lcm(patch[a], *(math.ceil(s[a]) for s in self.strides)) for a in range(3)
        )
        self.fpn = FeaturePyramidNetwork(
            spatial_dims=3,
            in_channels_list=[int(channels[i]) for i in keep],
            out_channels=out_channels,
        )
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> list[Tensor]:
        return list(self.fpn_maps(x, self.read).values())


class Detection3DModule(DetectionTask):
    """RetinaNet over a 3D backbone (see the module docstring).

    Args:
        backbone: a 3D domainfm backbone; may be omitted when ``pretrained`` names an
            export or checkpoint to rebuild from.
        pretrained: weights to start from (a ``domainfm export`` folder or ``.ckpt``, or a
            local copy of a registered release, identified by its layout); strict, report
            printed.
        released: name of the registered release ``pretrained`` is a copy of.
        num_classes: object classes (labels ``0 … num_classes-1``; MONAI's convention: no
            background class).
        roi_size: the sliding window in voxels (the training crop size).
        num_maps: ViT blocks read for the pyramid (at most 4).
        fpn_dim: FPN and head width (a multiple of 8).
        min_stride: pyramid levels with a smaller stride are not used.
        anchor_shapes: anchor sizes ``(x, y, z)`` in voxels at the finest level (scaled by
            each level's stride); default one cube of 4 × the finest stride.
        matcher: ``"iou"`` or ``"atss"`` (see the module docstring).
        froc_iou: IoU at which a detection hits a box for the FROC.
        lr: peak learning rate.
        weight_decay: AdamW weight decay for weight matrices.
        warmup_steps: linear warmup length.
        **inference: ``score_threshold``, ``nms_iou``, ``detections_per_volume``,
            ``sw_overlap``, ``sw_batch_size``: how eval detects (see
            :class:`~domainfm.tasks.detection3d_inference.Detection3DInferenceArgs`).

    Attributes:
        inference: those settings, checked (:meth:`configure_inference` replaces some).
    """

    recipe_key = RECIPE_KEY
    min_classes = 1
    classes_meaning = "object classes"

    def __init__(
        self,
        *,
        backbone: nn.Module | None = None,
        pretrained: str | None = None,
        released: str | None = None,
        num_classes: int,
        roi_size: int | Sequence[int],
        num_maps: int = 4,
        fpn_dim: int = 32,
        min_stride: float = 2.0,
        anchor_shapes: Sequence[Sequence[float]] | None = None,
        matcher: Literal["atss", "iou"] = "iou",
        froc_iou: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup_steps: int = 0,
        **inference: Unpack[Detection3DInferenceArgs],
    ) -> None:
        from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
        from monai.apps.detection.networks.retinanet_network import RetinaNet
        from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape

        if matcher not in ("atss", "iou"):
            raise ValueError(f"matcher={matcher!r}: must be 'atss' or 'iou'")
        super().__init__(
            backbone, pretrained, released, num_classes, lr, weight_decay, warmup_steps
        )
        features = VolumeFeaturePyramid(
            self.backbone, num_maps=num_maps, out_channels=fpn_dim, min_stride=min_stride
        )
        self.roi_size = to_ntuple(roi_size, 3, name="roi_size")
        bad = [r for r, d in zip(self.roi_size, features.size_divisible, strict=True) if r % d]
        if bad:
            raise ValueError(
                f"roi_size={self.roi_size}: every side must divide by {features.size_divisible} "
                "(the backbone's patch and the pyramid's strides)"
            )
        finest = features.strides[0]
        shapes = (
            [[4.0 * s for s in finest]]
            if anchor_shapes is None
            else [[float(v) for v in shape] for shape in anchor_shapes]
        )
        if not shapes or any(len(s) != 3 or min(s) <= 0 for s in shapes):
            raise ValueError(f"anchor_shapes={anchor_shapes!r}: give sizes (x, y, z) > 0")
        network = RetinaNet(
            spatial_dims=3,
            num_classes=num_classes,
            num_anchors=len(shapes),
            feature_extractor=features,
            size_divisible=features.size_divisible,
        )
        anchors = AnchorGeneratorWithAnchorShape(
            feature_map_scales=[s[0] / finest[0] for s in features.strides],
            base_anchor_shapes=shapes,
        )
        self.detector = RetinaNetDetector(network=network, anchor_generator=anchors)
        if matcher == "atss":
            self.detector.set_atss_matcher(num_candidates=4, center_in_gt=False)
        else:
            self.detector.set_regular_matcher(fg_iou_thresh=0.5, bg_iou_thresh=0.4)
        self.detector.set_hard_negative_sampler(
            batch_size_per_image=64, positive_fraction=0.3, pool_size=20, min_neg=16
        )
        self.inference = Detection3DInference.from_keywords(inference)
        self.head_kwargs: dict[str, Any] = {
            "roi_size": list(self.roi_size),
            "num_maps": num_maps,
            "fpn_dim": fpn_dim,
            "min_stride": float(min_stride),
            "anchor_shapes": shapes,
            "matcher": matcher,
            **self.inference.recipe(),
            "froc_iou": float(froc_iou),
        }
        self.inference.apply(self.detector, self.roi_size)
        self.metrics = {
            stage: VolumeDetectionMetrics(num_classes=num_classes, froc_iou=froc_iou)
            for stage in ("val", "test")
        }

    def configure_inference(self, **settings: Unpack[Detection3DInferenceArgs]) -> None:
        """Replace any of the inference settings (``score_threshold``, ``nms_iou``,
        ``detections_per_volume``, ``sw_overlap``, ``sw_batch_size``; recorded in the
        checkpoint's recipe) and apply them to the detector's box selection and sliding
        window.

        Raises:
            ValueError: ``unknown inference settings: ...``, or a bad value (nothing changed).
        """
        self.inference = self.inference.updated(settings)
        self.head_kwargs.update(self.inference.recipe())
        self.inference.apply(self.detector, self.roi_size)

    def forward(self, x: Tensor) -> list[dict[str, Tensor]]:
        """``(B, C, D, H, W)`` → per volume ``{"boxes", "labels", "scores"}`` (eval mode;
        sliding windows when the volume is larger than ``roi_size``)."""
        larger = any(n > r for n, r in zip(x.shape[2:], self.roi_size, strict=True))
        found = self.detector(x, use_inferer=larger)
        assert isinstance(found, list)
        key = self.detector.pred_score_key
        return [{"boxes": d["boxes"], "labels": d["labels"], "scores": d[key]} for d in found]

    def losses(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """The classification and box-regression losses of a training batch."""
        out = self.detector(batch["input"], self._targets(batch))
        assert isinstance(out, dict)
        return {
            "loss_cls": out[self.detector.cls_key],
            "loss_box": out[self.detector.box_reg_key],
        }

    def stage_metric(self, stage: str) -> VolumeDetectionMetrics:
        """mAP and FROC of the whole volumes ``stage`` scored (gathered over all ranks)."""
        return self.metrics[stage]


def load_detector3d(path: str | Path) -> tuple[Detection3DModule, dict[str, Any]]:
    """Rebuild a :class:`Detection3DModule` from its ``.ckpt`` (no code unpickled; every key
    loaded strictly). Returns the module in eval mode and the checkpoint's ``domainfm``
    metadata (``input`` holds the spacing, intensity mapping and crop size)."""
    return load_detection_task(path, Detection3DModule)
