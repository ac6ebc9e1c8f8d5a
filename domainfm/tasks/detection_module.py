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

import torch
from torch import Tensor, nn

from domainfm.pretrained.report import load_state_dict_with_report
from domainfm.tasks.heads.upernet import backbone_pyramid
from domainfm.tasks.task_module import (
    TaskModule,
    module_from_recipe,
    pretrained_backbone,
    read_task_checkpoint,
)


class BackboneFPN(nn.Module):
    """A domainfm backbone as torchvision detection features: an ``OrderedDict`` of FPN maps
    ``"0" … "n-1"`` (fine → coarse) and ``"pool"``, each ``(B, out_channels, h_i, w_i)``.

    Args:
        backbone: a 2D domainfm backbone. It is referenced, not registered as a submodule:
            the owner (:class:`DetectionModule`) registers it, so its weights appear once in
            a checkpoint, as ``backbone.*``, like every other domainfm fine-tuning checkpoint
            (``domainfm export`` reads them there).
        num_maps: ViT blocks read (at most 4; a multi-scale backbone gives all its maps).
        out_channels: FPN width.
    """

    def __init__(self, backbone: nn.Module, *, num_maps: int = 4, out_channels: int = 64) -> None:
        super().__init__()
        from torchvision.ops import FeaturePyramidNetwork
        from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

        if len(getattr(backbone, "patch_size", ())) != 2:
            raise ValueError("detection needs a 2D backbone (patch_size with 2 axes)")
        object.__setattr__(self, "encoder", backbone)  # a reference (see above)
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
        encoder: nn.Module = self.__dict__["encoder"]
        maps = encoder.forward_intermediates(x, indices=self.map_indices)  # type: ignore[operator]
        if self.pyramid is not None:
            maps = self.pyramid(maps)
        features: OrderedDict[str, Tensor] = self.fpn(
            OrderedDict((str(i), m) for i, m in enumerate(maps))
        )
        return features


class DetectionModule(TaskModule):
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
        super().__init__()
        from torchvision.models.detection import FasterRCNN
        from torchvision.models.detection.anchor_utils import AnchorGenerator
        from torchvision.ops import MultiScaleRoIAlign

        if num_classes < 2:
            raise ValueError(f"num_classes={num_classes}: must be >= 2 (background + objects)")
        if image_size < 1:
            raise ValueError(f"image_size={image_size}: must be >= 1")
        backbone, loaded = pretrained_backbone(backbone, pretrained, released)
        self.record_pretrained(pretrained, loaded)  # its input contract, its release
        self.image_size = image_size
        self.backbone = backbone  # registered here: its keys are backbone.* (exportable)
        features = BackboneFPN(backbone, num_maps=num_maps, out_channels=fpn_dim)
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
        in_chans = int(getattr(backbone, "in_chans", 3))
        patch = max(int(p) for p in getattr(backbone, "patch_size"))  # noqa: B009
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
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.head_kwargs: dict[str, Any] = {
            "image_size": image_size,
            "num_maps": num_maps,
            "fpn_dim": fpn_dim,
            "anchor_sizes": list(sizes),
            "score_threshold": score_threshold,
            "detections_per_image": detections_per_image,
        }
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_steps = warmup_steps
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

    @staticmethod
    def _targets(batch: Mapping[str, Any]) -> list[dict[str, Tensor]]:
        return [
            {"boxes": b, "labels": lab}
            for b, lab in zip(batch["boxes"], batch["labels"], strict=True)
        ]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        losses = self(batch["input"], self._targets(batch))
        assert isinstance(losses, dict)
        loss = torch.stack(list(losses.values())).sum()
        size = int(batch["input"].shape[0])
        for name, value in losses.items():
            self.log(f"train/{name}", value, batch_size=size)
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        return loss

    def _eval_step(self, batch: dict[str, Any], metric: Any) -> None:
        detections = self(batch["input"])
        metric.update(detections, self._targets(batch))

    def _log_metric(self, metric: Any, stage: str) -> None:
        values = metric.compute()
        for name in ("map", "map_50", "map_75", "mar_100"):
            self.log(f"{stage}/{name}", values[name].float())
        metric.reset()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, self.val_map)

    def on_validation_epoch_end(self) -> None:
        self._log_metric(self.val_map, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, self.test_map)

    def on_test_epoch_end(self) -> None:
        self._log_metric(self.test_map, "test")

    def checkpoint_recipe(self) -> dict[str, Any]:
        """The head settings :func:`load_detector` and ``domainfm detect`` need (besides the
        backbone config and the data's input contract)."""
        return {"detect": {"num_classes": self.num_classes, "lr": self.lr, **self.head_kwargs}}


def load_detector(path: str | Path) -> tuple[DetectionModule, dict[str, Any]]:
    """Rebuild a :class:`DetectionModule` from its ``.ckpt`` (no code unpickled; every key
    loaded strictly). Returns the module in eval mode and the checkpoint's ``domainfm``
    metadata (``input`` holds the bands, normalization and window size)."""

    ckpt, meta, recipe, backbone = read_task_checkpoint(path, "detect", "DetectionModule")
    kwargs = {k: v for k, v in recipe.items() if k not in ("num_classes", "lr")}
    module = module_from_recipe(
        path,
        "DetectionModule",
        lambda: DetectionModule(
            backbone=backbone, num_classes=int(recipe["num_classes"]), **kwargs
        ),
    )
    load_state_dict_with_report(module, ckpt["state_dict"], source=str(path)).check()
    return module.eval(), meta
