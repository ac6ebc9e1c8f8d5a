"""Lightning module for fine-tuning a pretrained backbone: classification or segmentation.

* ``task="classification"``: pooled embedding → head; ``mode="linear_probe"`` freezes the
  backbone and uses MAE's probe head (BatchNorm without affine + Linear, He et al. 2022),
  ``mode="full"`` trains everything (optionally with layer-wise LR decay).
  Metrics: top-1 accuracy and macro accuracy (torchmetrics).
* ``task="segmentation"``: ``decoder="auto"``: :class:`~domainfm.tasks.heads.unet_decoder.
  UNetDecoder` over every map of a multi-scale backbone (one declaring ``feature_channels``:
  Swin, CNN), else :class:`~domainfm.tasks.heads.seg_decoder.SegmentationDecoder` over
  ``forward_intermediates``; ``decoder="upernet"``: :class:`~domainfm.tasks.heads.upernet.
  UPerNetDecoder` (PPM + FPN) over a multi-scale backbone's maps, or over ``num_maps``
  evenly spaced blocks of a plain ViT made a pyramid by
  :class:`~domainfm.tasks.heads.upernet.SimpleFeaturePyramid`. Loss Dice + cross-entropy (MONAI
  ``DiceCELoss``); metric per-class Dice (torchmetrics ``DiceScore``), logged per class and
  as the mean.

Batches are dicts with ``"input"`` ``(B, C, *spatial)`` and ``"label"``: ``(B,)`` class ids
or ``(B, *spatial)`` / ``(B, 1, *spatial)`` label maps.

Example::

    >>> module = FinetuneModule(backbone=vit, task="segmentation", num_classes=3)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.segmentation import DiceScore

from domainfm.core.grid import to_ntuple
from domainfm.pretrained.report import load_state_dict_with_report
from domainfm.tasks.heads.seg_decoder import SegmentationDecoder
from domainfm.tasks.heads.unet_decoder import UNetDecoder
from domainfm.tasks.heads.upernet import UPerNetDecoder, backbone_pyramid
from domainfm.tasks.param_groups import param_groups
from domainfm.tasks.task_module import (
    TaskModule,
    module_from_recipe,
    pretrained_backbone,
    read_task_checkpoint,
)


class FinetuneModule(TaskModule):
    """Backbone + task head with metrics.

    Args:
        backbone: a :class:`~domainfm.core.backbone.Backbone` (e.g. from ``load_backbone``);
            may be omitted when ``pretrained`` names an export or checkpoint to rebuild from.
        pretrained: weights to start from: a ``domainfm export`` folder or a domainfm
            ``.ckpt`` (rebuilt from its recorded config when ``backbone`` is omitted, else
            loaded into ``backbone``), or a local copy of a registered release (``backbone``
            omitted; the release is identified by the file's layout,
            :func:`domainfm.load_backbone`). Every key must load (strict, with a printed
            report). The input contract the weights expect (the release's or the export's)
            is recorded in the checkpoint when the data module records none, and a release
            is recorded as the checkpoint's provenance with its licence.
        released: name of the registered release (:func:`domainfm.pretrained.load_released`)
            ``pretrained`` is a copy of, when its layout alone cannot tell (several releases
            with different contracts fit it) or it is of another size.
        task: ``"classification"`` or ``"segmentation"``.
        num_classes: number of classes (background included for segmentation).
        mode: ``"full"`` fine-tuning or ``"linear_probe"`` (frozen backbone; classification).
        num_maps: intermediate maps the segmentation decoder fuses (last ``num_maps`` blocks;
            for UPerNet ``num_maps`` <= 4 evenly spaced blocks); a multi-scale backbone's
            decoder always reads all its maps.
        decoder_dim: width of the segmentation decoder (U-Net decoder: width at the shallowest
            level, doubled per level, capped at the backbone's channels there).
        lr: peak learning rate.
        weight_decay: AdamW weight decay for weight matrices.
        warmup_steps: linear warmup length.
        layer_decay: layer-wise LR decay for ``mode="full"``; ``None``: off.
        decoder: segmentation decoder: ``"auto"`` (U-Net for multi-scale backbones, the
            light fusing decoder for plain ViTs) or ``"upernet"``.
        sliding_window: segmentation validation/test on whole volumes of any size: MONAI
            ``sliding_window_inference`` with this window (voxels; usually the training crop),
            Gaussian blending, 50 % overlap, so the logged Dice is that of the whole scan.
            ``None``: the batch is one forward pass.
    """

    def __init__(
        self,
        *,
        backbone: nn.Module | None = None,
        task: Literal["classification", "segmentation"],
        num_classes: int,
        mode: Literal["full", "linear_probe"] = "full",
        num_maps: int = 4,
        decoder_dim: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup_steps: int = 0,
        layer_decay: float | None = None,
        sliding_window: int | Sequence[int] | None = None,
        pretrained: str | None = None,
        released: str | None = None,
        decoder: Literal["auto", "upernet"] = "auto",
    ) -> None:
        super().__init__()
        backbone, loaded = pretrained_backbone(backbone, pretrained, released)
        self.record_pretrained(pretrained, loaded)  # its input contract, its release
        if decoder not in ("auto", "upernet"):
            raise ValueError(f"decoder={decoder!r}: must be 'auto' or 'upernet'")
        self.head_kwargs = {
            "mode": mode,
            "num_maps": num_maps,
            "decoder_dim": decoder_dim,
            "decoder": decoder,
        }
        self.map_indices: int | list[int] = num_maps
        self.pyramid: nn.Module | None = None
        if task not in ("classification", "segmentation"):
            raise ValueError(f"task must be 'classification' or 'segmentation', got {task!r}")
        if mode not in ("full", "linear_probe"):
            raise ValueError(f"mode must be 'full' or 'linear_probe', got {mode!r}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got num_classes={num_classes}")
        self.backbone = backbone
        self.task = task
        self.mode = mode
        self.num_classes = num_classes
        embed_dim = int(getattr(backbone, "embed_dim"))  # noqa: B009 - part of the contract
        self.head: nn.Module
        if task == "classification":
            linear = nn.Linear(embed_dim, num_classes)
            nn.init.trunc_normal_(linear.weight, std=0.01)
            nn.init.zeros_(linear.bias)
            if mode == "linear_probe":
                self.head = nn.Sequential(nn.BatchNorm1d(embed_dim, affine=False), linear)
            else:
                self.head = linear
            metrics: dict[str, Any] = {
                "acc": MulticlassAccuracy(num_classes=num_classes, average="micro"),
                "macc": MulticlassAccuracy(num_classes=num_classes, average="macro"),
            }
        elif decoder == "upernet":
            self.head = self._upernet(backbone, num_maps, num_classes, decoder_dim)
        elif hasattr(backbone, "feature_channels"):  # multi-scale: U-Net over every map
            channels = tuple(int(c) for c in getattr(backbone, "feature_channels"))  # noqa: B009
            self.num_maps = self.map_indices = len(channels)
            self.head = UNetDecoder(
                spatial_dims=len(getattr(backbone, "patch_size")),  # noqa: B009
                feature_channels=channels,
                feature_strides=tuple(getattr(backbone, "feature_strides")),  # noqa: B009
                in_chans=int(getattr(backbone, "in_chans", 1)),
                num_classes=num_classes,
                # decoder_dim at the shallowest level, doubling per level, capped by the map
                hidden=tuple(min(c, decoder_dim * 2**i) for i, c in enumerate(channels)),
            )
        else:
            depth = len(getattr(backbone, "blocks", [])) or num_maps
            self.num_maps = self.map_indices = min(num_maps, depth)
            self.head = SegmentationDecoder(
                embed_dim=embed_dim,
                num_maps=self.num_maps,
                num_classes=num_classes,
                in_chans=int(getattr(backbone, "in_chans", 1)),
                hidden_dim=decoder_dim,
                patch_size=tuple(getattr(backbone, "patch_size")),  # noqa: B009
            )
        if task == "segmentation":
            metrics = {
                "dice": DiceScore(
                    num_classes=num_classes,
                    average="none",
                    input_format="index",
                    include_background=True,
                )
            }
            from monai.losses import DiceCELoss

            self.seg_loss = DiceCELoss(to_onehot_y=True, softmax=True)
        self.val_metrics = MetricCollection(metrics, prefix="val/")
        self.test_metrics = self.val_metrics.clone(prefix="test/")
        if mode == "linear_probe":
            self.backbone.requires_grad_(False)
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_steps = warmup_steps
        self.layer_decay = layer_decay
        self.sliding_window = sliding_window

    def _upernet(
        self, backbone: nn.Module, num_maps: int, num_classes: int, decoder_dim: int
    ) -> UPerNetDecoder:
        """UPerNet over a multi-scale backbone's maps, or over evenly spaced ViT blocks
        rescaled to a pyramid."""
        dims = len(getattr(backbone, "patch_size"))  # noqa: B009 - part of the contract
        indices, self.pyramid, channels, _ = backbone_pyramid(backbone, num_maps)
        self.num_maps = len(indices)
        # a multi-scale backbone's maps are all its levels (forward_intermediates(x, n))
        self.map_indices = indices if self.pyramid is not None else self.num_maps
        return UPerNetDecoder(
            in_channels=channels, num_classes=num_classes, spatial_dims=dims, channels=decoder_dim
        )

    def forward(self, x: Tensor) -> Tensor:
        """Logits: ``(B, num_classes)`` or ``(B, num_classes, *spatial)``."""
        if self.task == "classification":
            if self.mode == "linear_probe":
                with torch.no_grad():
                    features = self.backbone(x)
            else:
                features = self.backbone(x)
            out: Tensor = self.head(features)
            return out
        maps = self.backbone.forward_intermediates(x, indices=self.map_indices)  # type: ignore[operator]
        if self.pyramid is not None:
            maps = self.pyramid(maps)
        logits: Tensor = self.head(maps, x)
        return logits

    def _labels(self, batch: Mapping[str, Tensor]) -> Tensor:
        label = batch["label"]
        if self.task == "segmentation" and label.ndim == batch["input"].ndim:
            label = label[:, 0]  # (B, 1, *spatial) -> (B, *spatial)
        return label.long()

    def _loss(self, logits: Tensor, label: Tensor) -> Tensor:
        if self.task == "classification":
            return F.cross_entropy(logits.float(), label)
        loss: Tensor = self.seg_loss(logits.float(), label[:, None])
        return loss

    def on_train_epoch_start(self) -> None:
        if self.mode == "linear_probe":
            self.backbone.eval()  # frozen features: no dropout, fixed norms

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        logits = self(batch["input"])
        loss = self._loss(logits, self._labels(batch))
        self.log("train/loss", loss, prog_bar=True, batch_size=logits.shape[0])
        return loss

    def _evaluate(self, x: Tensor) -> Tensor:
        """Logits of a validation batch: sliding windows over whole volumes if configured."""
        if self.task != "segmentation" or self.sliding_window is None:
            return self(x)
        from monai.inferers import sliding_window_inference

        roi = to_ntuple(self.sliding_window, x.ndim - 2, name="sliding_window")
        logits: Tensor = sliding_window_inference(  # type: ignore[assignment]
            x, roi_size=roi, sw_batch_size=2, predictor=self, overlap=0.5, mode="gaussian"
        )
        return logits  # (B, num_classes, *spatial)

    def _eval_step(self, batch: dict[str, Tensor], stage: str, metrics: MetricCollection) -> None:
        logits = self._evaluate(batch["input"])
        label = self._labels(batch)
        self.log(f"{stage}/loss", self._loss(logits, label), batch_size=logits.shape[0])
        metrics.update(logits.argmax(dim=1), label)

    def _log_metrics(self, metrics: MetricCollection) -> None:
        for name, value in metrics.compute().items():
            if value.ndim == 0:
                self.log(name, value)
                continue
            for cls, v in enumerate(value):  # per-class Dice
                self.log(f"{name}/class_{cls}", v)
            self.log(f"{name}/mean", value.nanmean())
        metrics.reset()

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val", self.val_metrics)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics(self.val_metrics)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """As validation (whole volumes with ``sliding_window``), logged under ``test/``."""
        self._eval_step(batch, "test", self.test_metrics)

    def on_test_epoch_end(self) -> None:
        self._log_metrics(self.test_metrics)

    def optimizer_groups(self) -> list[dict[str, Any]]:
        """Parameter groups, with layer-wise LR decay over the backbone's blocks when
        ``layer_decay`` is set and ``mode="full"``."""
        depth = len(getattr(self.backbone, "blocks", [])) or None
        use_decay = self.layer_decay is not None and self.mode == "full"
        return param_groups(
            self,
            weight_decay=self.weight_decay,
            layer_decay=self.layer_decay if use_decay else None,
            depth=depth if use_decay else None,
        )

    def checkpoint_recipe(self) -> dict[str, Any]:
        """What :func:`load_finetuned` and ``domainfm segment`` need besides the backbone and
        the data module's input contract (spacing, modality, normalization, crop size, class
        names): the task and the head."""
        return {
            "finetune": {
                "task": self.task,
                "num_classes": self.num_classes,
                "lr": self.lr,
                **self.head_kwargs,
            }
        }


def load_finetuned(path: str | Path) -> tuple[FinetuneModule, dict[str, Any]]:
    """Rebuild a fine-tuned model from its Lightning ``.ckpt`` (no code is unpickled).

    Returns the module in eval mode with every weight loaded strictly (raises
    :class:`~domainfm.pretrained.report.CheckpointMismatchError` otherwise) and the
    checkpoint's ``domainfm`` metadata (``input`` holds the preprocessing contract).
    """

    ckpt, meta, recipe, backbone = read_task_checkpoint(path, "finetune", "FinetuneModule")
    module = module_from_recipe(
        path,
        "FinetuneModule",
        lambda: FinetuneModule(
            backbone=backbone,
            task=recipe["task"],
            num_classes=int(recipe["num_classes"]),
            mode=recipe.get("mode", "full"),
            num_maps=int(recipe.get("num_maps", 4)),
            decoder_dim=int(recipe.get("decoder_dim", 64)),
            decoder=recipe.get("decoder", "auto"),
        ),
    )
    load_state_dict_with_report(module, ckpt["state_dict"], source=str(path)).check()
    return module.eval(), meta
