"""Lightning module for object detection fine-tuning: torchvision Faster R-CNN over a backbone.

Faster R-CNN (Ren et al. 2015, arXiv:1506.01497) with a feature pyramid (FPN, Lin et al.
2017, arXiv:1612.03144), as torchvision implements it, over any 2D domainfm backbone:

1. **Pyramid**: a multi-scale backbone (``feature_channels``: timm CNNs) gives its maps; a
   plain ViT gives ``num_maps`` evenly spaced blocks rescaled by ViTDet's
   :class:`~domainfm.tasks.heads.upernet.SimpleFeaturePyramid` (Li et al. 2022,
   arXiv:2203.16527) to strides ``p/4 … 2p``.
2. **FPN**: torchvision ``FeaturePyramidNetwork`` to ``fpn_dim`` channels plus a max-pooled
   extra level.
3. **RPN + RoI heads**: torchvision's, with one anchor size per level (default: 4 × the
   level's stride; ``anchor_sizes`` to set them) and aspect ratios 0.5, 1, 2.

The images are not rescaled or re-normalized by torchvision (``min_size = max_size =
image_size``, mean 0 / std 1 per band): the data module normalizes bands as for every other
task, and boxes stay in the input's pixel coordinates. Any band count works.

Batches (:func:`collate_detection`) are dicts::

    "input"   (B, C, H, W) float
    "boxes"   B × (N_i, 4) float, pixel xyxy (pixel edges: a box over columns 3..5 is 3, 6)
    "labels"  B × (N_i,) int64 class ids in 1..num_classes-1 (0 is the background)

Training logs torchvision's four losses and their sum; validation/test log COCO mAP
(torchmetrics ``MeanAveragePrecision``, pycocotools): ``map``, ``map_50``, ``map_75``,
``mar_100``. ``forward`` in eval mode returns torchvision detections: per image
``{"boxes": (K, 4), "labels": (K,), "scores": (K,)}``.

Example::

    >>> module = DetectionModule(backbone=vit, num_classes=3, image_size=64)
    >>> module.eval()(torch.randn(2, 13, 64, 64))[0]["boxes"].shape
    torch.Size([0, 4])
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from domainfm.tasks.detection_task import (
    BackboneFeatures,
    DetectionTask,
    load_detection_task,
)
from domainfm.tasks.heads.upernet import backbone_pyramid


class BackboneFPN(BackboneFeatures):
    """A domainfm backbone as torchvision detection features: an ``OrderedDict`` of FPN maps
    ``"0" … "n-1"`` (fine → coarse) and ``"pool"``, each ``(B, out_channels, h_i, w_i)``.

    Args:
        backbone: a 2D domainfm backbone, referenced (the owner, :class:`DetectionModule`,
            registers it; see :class:`~domainfm.tasks.detection_task.BackboneFeatures`).
        num_maps: ViT blocks read (at most 4; a multi-scale backbone gives all its maps).
        out_channels: FPN width.
    """

    def __init__(self, backbone: nn.Module, *, num_maps: int = 4, out_channels: int = 64) -> None:
        from torchvision.ops import FeaturePyramidNetwork
        from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

        if len(getattr(backbone, "patch_size", ())) != 2:
            raise ValueError("detection needs a 2D backbone (patch_size with 2 axes)")
        super().__init__(backbone)
        indices, self.pyramid, channels, strides = backbone_pyramid(backbone, num_maps)
        self.map_indices: int | list[int] = indices if self.pyramid is not None else len(indices)
        self.strides = (*strides, strides[-1] * 2)  # the pooled level halves the coarsest
        self.fpn = FeaturePyramidNetwork(
            in_channels_list=list(channels),
            out_channels=out_channels,
            extra_blocks=LastLevelMaxPool(),
        )
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        return self.fpn_maps(x, self.map_indices)


class DetectionModule(DetectionTask):
    """Faster R-CNN + FPN over a domainfm backbone (see the module docstring).

    Args:
        backbone: a 2D domainfm backbone; may be omitted when ``pretrained`` names an export
            or checkpoint to rebuild from.
        pretrained: weights to start from (a ``domainfm export`` folder or ``.ckpt``, or a
            local copy of a registered release, identified by its layout); strict, report
            printed; their input contract is recorded when the data module records none.
        released: name of the registered release ``pretrained`` is a copy of (when its
            layout alone cannot tell).
        num_classes: classes including the background (class 0).
        image_size: side of the training windows in pixels (images are not rescaled).
        num_maps: ViT blocks read for the pyramid (at most 4).
        fpn_dim: FPN width.
        anchor_sizes: one anchor side (pixels) per pyramid level incl. the pooled one;
            default 4 × each level's stride.
        score_threshold: detections below this score are dropped (eval).
        detections_per_image: most detections kept per image (eval).
        lr: peak learning rate.
        weight_decay: AdamW weight decay for weight matrices.
        warmup_steps: linear warmup length.
    """

    recipe_key = "detect"
    min_classes = 2
    classes_meaning = "background + objects"

    def __init__(
        self,
        *,
        backbone: nn.Module | None = None,
        pretrained: str | None = None,
        released: str | None = None,
        num_classes: int,
        image_size: int,
        num_maps: int = 4,
        fpn_dim: int = 64,
        anchor_sizes: Sequence[float] | None = None,
        score_threshold: float = 0.05,
        detections_per_image: int = 100,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup_steps: int = 0,
    ) -> None:
        from torchvision.models.detection import FasterRCNN
        from torchvision.models.detection.anchor_utils import AnchorGenerator
        from torchvision.ops import MultiScaleRoIAlign

        if image_size < 1:
            raise ValueError(f"image_size={image_size}: must be >= 1")
        super().__init__(
            backbone, pretrained, released, num_classes, lr, weight_decay, warmup_steps
        )
        self.image_size = image_size
        features = BackboneFPN(self.backbone, num_maps=num_maps, out_channels=fpn_dim)
        levels = len(features.strides)
        sizes = (
            tuple(4.0 * s for s in features.strides)
            if anchor_sizes is None
            else tuple(float(s) for s in anchor_sizes)
        )
        if len(sizes) != levels:
            raise ValueError(
                f"anchor_sizes has {len(sizes)} values for {levels} pyramid levels "
                f"(strides {features.strides})"
            )
        in_chans = int(getattr(self.backbone, "in_chans", 3))
        patch = max(int(p) for p in getattr(self.backbone, "patch_size"))  # noqa: B009
        self.model = FasterRCNN(
            features,
            num_classes=num_classes,
            min_size=image_size,
            max_size=image_size,
            image_mean=[0.0] * in_chans,
            image_std=[1.0] * in_chans,
            rpn_anchor_generator=AnchorGenerator(
                sizes=tuple((round(s),) for s in sizes),
                aspect_ratios=((0.5, 1.0, 2.0),) * levels,
            ),
            box_roi_pool=MultiScaleRoIAlign(
                featmap_names=[str(i) for i in range(levels - 1)], output_size=7, sampling_ratio=2
            ),
            box_score_thresh=score_threshold,
            box_detections_per_img=detections_per_image,
            size_divisible=patch,
        )
        self.in_chans = in_chans
        self.head_kwargs: dict[str, Any] = {
            "image_size": image_size,
            "num_maps": num_maps,
            "fpn_dim": fpn_dim,
            "anchor_sizes": list(sizes),
            "score_threshold": score_threshold,
            "detections_per_image": detections_per_image,
        }
        self.val_map = self._metric()
        self.test_map = self._metric()

    @staticmethod
    def _metric() -> Any:
        from torchmetrics.detection import MeanAveragePrecision

        return MeanAveragePrecision(iou_type="bbox", backend="pycocotools")

    def forward(
        self, x: Tensor, targets: list[dict[str, Tensor]] | None = None
    ) -> list[dict[str, Tensor]] | dict[str, Tensor]:
        """Eval: detections per image; train (with ``targets``): torchvision's losses."""
        return self.model(list(x), targets)

    def losses(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """torchvision's four losses of a training batch."""
        losses = self(batch["input"], self._targets(batch))
        assert isinstance(losses, dict)
        return losses

    def stage_metric(self, stage: str) -> Any:
        """COCO mAP of the validation (``val_map``) or test (``test_map``) detections."""
        return self.val_map if stage == "val" else self.test_map

    def logged_scores(self, values: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``map``, ``map_50``, ``map_75`` and ``mar_100``."""
        return {name: values[name].float() for name in ("map", "map_50", "map_75", "mar_100")}


def load_detector(path: str | Path) -> tuple[DetectionModule, dict[str, Any]]:
    """Rebuild a :class:`DetectionModule` from its ``.ckpt`` (no code unpickled; every key
    loaded strictly). Returns the module in eval mode and the checkpoint's ``domainfm``
    metadata (``input`` holds the bands, normalization and window size)."""
    return load_detection_task(path, DetectionModule)
