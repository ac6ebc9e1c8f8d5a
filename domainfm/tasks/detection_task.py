"""What the detection fine-tuning modules share (2D Faster R-CNN, 3D RetinaNet): the backbone
they start from, the training step over their detector's losses, validation and test scored by
a detection metric, and the checkpoint entry they are rebuilt from.

* :class:`DetectionTask`: a :class:`~domainfm.tasks.task_module.TaskModule` whose subclass
  gives :meth:`~DetectionTask.losses` (the detector's losses of a batch, summed and logged as
  ``train/<name>`` and ``train/loss``) and :meth:`~DetectionTask.stage_metric` (the metric of
  ``"val"`` / ``"test"``, fed the eval-mode detections of each batch, its values logged as
  ``<stage>/<name>`` at the epoch's end); the recipe ``{recipe_key: {num_classes, lr,
  **head_kwargs}}``;
* :func:`load_detection_task`: a module rebuilt from its ``.ckpt`` (strict, no code unpickled);
* :func:`check_num_classes`: the class count a detector needs (2D: with the background);
* :class:`BackboneFeatures`: the base of their feature extractors: the backbone's maps (a
  plain ViT's through ViTDet's simple pyramid) through an FPN.

Batches are dicts with ``"input"`` (a batch tensor) and per sample ``"boxes"`` and
``"labels"`` (lists, their counts differ).

Example::

    >>> class MyDetector(DetectionTask):
    ...     recipe_key = "mydetect"
    ...     def losses(self, batch): ...
    ...     def stage_metric(self, stage): ...
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor, nn

from domainfm.pretrained.report import load_state_dict_with_report
from domainfm.tasks.task_module import (
    TaskModule,
    module_from_recipe,
    pretrained_backbone,
    read_task_checkpoint,
)


class BackboneFeatures(nn.Module):
    """Base of the detectors' feature extractors: the backbone's intermediate maps, rescaled
    by a simple feature pyramid when it is a plain ViT, through an FPN.

    Args:
        backbone: the backbone. It is referenced, not registered as a submodule: the owning
            task module registers it, so its weights appear once in a checkpoint, as
            ``backbone.*``, like every other domainfm fine-tuning checkpoint (``domainfm
            export`` reads them there).

    A subclass sets ``pyramid`` (``None``: the maps are a multi-scale backbone's stages) and
    ``fpn`` (named maps in, named maps out) and reads :meth:`fpn_maps`.
    """

    pyramid: nn.Module | None
    fpn: nn.Module

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "encoder", backbone)  # a reference (see above)

    def fpn_maps(self, x: Tensor, indices: int | list[int]) -> OrderedDict[str, Tensor]:
        """The FPN's maps of the backbone's intermediate maps ``indices`` (through
        ``pyramid``), keyed ``"0" … "n-1"`` fine → coarse (and the FPN's extra levels)."""
        encoder: nn.Module = self.__dict__["encoder"]
        maps = encoder.forward_intermediates(x, indices=indices)  # type: ignore[operator]
        if self.pyramid is not None:
            maps = self.pyramid(maps)
        features: OrderedDict[str, Tensor] = self.fpn(
            OrderedDict((str(i), m) for i, m in enumerate(maps))
        )
        return features


def check_num_classes(num_classes: int, minimum: int, meaning: str) -> None:
    """Refuse fewer than ``minimum`` classes, saying what they count (``meaning``).

    Raises:
        ValueError: ``num_classes=0: must be >= 1 (object classes)``.
    """
    if num_classes < minimum:
        raise ValueError(f"num_classes={num_classes}: must be >= {minimum} ({meaning})")


class DetectionTask(TaskModule):
    """Base of the detection modules (see the module docstring).

    Args:
        backbone, pretrained, released: the backbone to fine-tune, or the weights to rebuild
            or load it from (:func:`~domainfm.tasks.task_module.pretrained_backbone`: strict,
            report printed); it is registered as ``backbone`` (its keys ``backbone.*``,
            exportable).
        num_classes: the detector's classes (recorded in the recipe).
        lr: peak learning rate.
        weight_decay: AdamW weight decay for weight matrices.
        warmup_steps: linear warmup length.

    The class count is checked against the subclass's ``min_classes`` first. A subclass
    checks its own arguments, passes these on in this order (its arguments of
    these names) and sets ``head_kwargs`` (the rest of its recipe).
    """

    recipe_key: ClassVar[str]
    """The task's entry in a checkpoint's ``domainfm`` recipe."""
    min_classes: ClassVar[int]
    """The fewest classes the detector takes, and what they count (for the message)."""
    classes_meaning: ClassVar[str]
    num_classes: int
    head_kwargs: dict[str, Any]

    def __init__(
        self,
        backbone: nn.Module | None,
        pretrained: str | None,
        released: str | None,
        num_classes: int,
        lr: float,
        weight_decay: float,
        warmup_steps: int,
    ) -> None:
        check_num_classes(num_classes, self.min_classes, self.classes_meaning)
        super().__init__()
        backbone, loaded = pretrained_backbone(backbone, pretrained, released)
        self.record_pretrained(pretrained, loaded)  # its input contract, its release
        self.backbone = backbone  # registered here: its keys are backbone.* (exportable)
        self.num_classes = num_classes
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_steps = warmup_steps

    @staticmethod
    def _targets(batch: Mapping[str, Any]) -> list[dict[str, Tensor]]:
        """The batch's boxes and labels as per-sample ``{"boxes", "labels"}`` targets."""
        return [
            {"boxes": b, "labels": lab}
            for b, lab in zip(batch["boxes"], batch["labels"], strict=True)
        ]

    def losses(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """The detector's losses of a training batch, by name."""
        raise NotImplementedError

    def stage_metric(self, stage: str) -> Any:
        """The detection metric of ``stage`` (``"val"`` or ``"test"``): ``update(detections,
        targets)``, ``compute()`` (values by name), ``reset()``."""
        raise NotImplementedError

    def logged_scores(self, values: Mapping[str, Tensor]) -> Mapping[str, Tensor]:
        """What of the metric's computed ``values`` is logged (default: all of them)."""
        return values

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        losses = self.losses(batch)
        loss = torch.stack(list(losses.values())).sum()
        size = int(batch["input"].shape[0])
        for name, value in losses.items():
            self.log(f"train/{name}", value, batch_size=size)
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        return loss

    def _score(self, batch: dict[str, Any], stage: str) -> None:
        """Detect in a batch and add the detections to ``stage``'s metric."""
        self.stage_metric(stage).update(self(batch["input"]), self._targets(batch))

    def _log_scores(self, stage: str) -> None:
        """Log ``stage``'s metric over every batch it scored, then reset it."""
        metric = self.stage_metric(stage)
        for name, value in self.logged_scores(metric.compute()).items():
            self.log(f"{stage}/{name}", value)  # not synced: the metric gathers all ranks
        metric.reset()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._score(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_scores("val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._score(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_scores("test")

    def checkpoint_recipe(self) -> dict[str, Any]:
        """The head settings the task's loader and ``domainfm detect`` need (besides the
        backbone config and the data's input contract)."""
        return {
            self.recipe_key: {"num_classes": self.num_classes, "lr": self.lr, **self.head_kwargs}
        }


D = TypeVar("D", bound=DetectionTask)


def load_detection_task(path: str | Path, task: type[D]) -> tuple[D, dict[str, Any]]:
    """Rebuild a ``task`` module from its ``.ckpt`` (no code unpickled; every key loaded
    strictly). Returns the module in eval mode and the checkpoint's ``domainfm`` metadata.

    Raises:
        ValueError: naming the file when ``task`` did not write it or its recipe cannot
            build the module.
    """
    writer = task.__name__
    ckpt, meta, recipe, backbone = read_task_checkpoint(path, task.recipe_key, writer)
    kwargs = {k: v for k, v in recipe.items() if k not in ("num_classes", "lr")}
    module = module_from_recipe(
        path,
        writer,
        lambda: task(backbone=backbone, num_classes=int(recipe["num_classes"]), **kwargs),
    )
    load_state_dict_with_report(module, ckpt["state_dict"], source=str(path)).check()
    return module.eval(), meta
