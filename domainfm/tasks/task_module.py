"""What the fine-tuning Lightning modules share (classification / segmentation, detection,
sound event detection): the backbone they start from, their optimizer, and the checkpoint
entry that lets them be rebuilt.

* :func:`pretrained_backbone`: the backbone given, or rebuilt from / loaded with pretrained
  weights (strict, report printed);
* :class:`TaskModule`: AdamW + warmup-cosine over parameter groups, and the ``domainfm``
  checkpoint entry (:func:`checkpoint_metadata`: the backbone's architecture + kwargs, the
  data's input contract and the task's settings);
* :func:`read_task_checkpoint`: that entry read back safely, with the backbone rebuilt;
* :func:`module_from_recipe`: the task module built from that entry, a recipe it refuses
  reported naming the checkpoint.

Example::

    >>> class MyTask(TaskModule):
    ...     def checkpoint_recipe(self):
    ...         return {"mytask": {"lr": self.lr}}
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import lightning as L
from torch import nn

from domainfm.core.backbone import build_backbone
from domainfm.core.checkpoint_io import safe_torch_load
from domainfm.core.contract import recorded_contract
from domainfm.core.jsonable import to_jsonable
from domainfm.core.registry import init_config
from domainfm.pretrained.load import load_backbone, read_backbone_source
from domainfm.pretrained.registry import load_released
from domainfm.pretrained.report import load_state_dict_with_report
from domainfm.tasks.lr_schedule import adamw_warmup_cosine
from domainfm.tasks.param_groups import param_groups


class TaskModule(L.LightningModule):
    """Base of the fine-tuning modules: the optimizer and the checkpoint entry.

    A subclass sets ``backbone``, ``lr`` (peak learning rate), ``weight_decay`` (AdamW decay
    of weight matrices) and ``warmup_steps`` (linear warmup length), and implements
    :meth:`checkpoint_recipe`; it may override :meth:`optimizer_groups`.
    """

    backbone: nn.Module
    lr: float
    weight_decay: float
    warmup_steps: int

    def optimizer_groups(self) -> list[dict[str, Any]]:
        """AdamW parameter groups (:func:`~domainfm.tasks.param_groups.param_groups`; default:
        no layer-wise decay)."""
        return param_groups(self, weight_decay=self.weight_decay)

    def checkpoint_recipe(self) -> dict[str, Any]:
        """``{task: settings}``: what the task's loader needs to rebuild the module."""
        raise NotImplementedError

    def configure_optimizers(self) -> Any:
        """AdamW over :meth:`optimizer_groups` with a per-step warmup-cosine schedule over the
        trainer's estimated steps."""
        return adamw_warmup_cosine(
            self.optimizer_groups(),
            lr=self.lr,
            warmup_steps=self.warmup_steps,
            total_steps=int(self.trainer.estimated_stepping_batches),
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the backbone config, the data module's input contract and
        :meth:`checkpoint_recipe` as the checkpoint's ``domainfm`` entry."""
        checkpoint["domainfm"] = checkpoint_metadata(
            self.backbone, self._trainer, self.checkpoint_recipe()
        )


def checkpoint_metadata(
    backbone: nn.Module, trainer: L.Trainer | None, recipe: dict[str, Any]
) -> dict[str, Any]:
    """The ``domainfm`` entry of a fine-tuning checkpoint: the backbone's architecture +
    kwargs, the data module's input contract (``input_contract()``: spacing, bands,
    normalization, window, class names) and the head ``recipe``."""
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    meta: dict[str, Any] = to_jsonable(
        {
            "backbone": init_config(backbone),
            "input": recorded_contract(datamodule),
            "recipe": recipe,
        }
    )
    return meta


def read_task_checkpoint(
    path: str | Path, task: str, writer: str
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], nn.Module]:
    """Read a fine-tuning ``.ckpt`` safely: the checkpoint, its ``domainfm`` metadata, the
    ``recipe[task]`` head settings and the backbone rebuilt (unloaded) from its recorded
    architecture. Raises ``ValueError`` naming the file when ``writer`` did not write it."""

    ckpt = safe_torch_load(path)
    meta = ckpt.get("domainfm") if isinstance(ckpt, dict) else None
    recipe = (meta or {}).get("recipe", {}).get(task)
    if not isinstance(meta, dict) or not isinstance(recipe, dict) or "state_dict" not in ckpt:
        raise ValueError(
            f"{path} is not a checkpoint written by {writer} (no domainfm {task} metadata); "
            f"pass the .ckpt of a `domainfm fit` run with {writer}"
        )
    recorded = meta.get("backbone")
    if not isinstance(recorded, dict):
        raise ValueError(f"{path}: its domainfm metadata records no backbone")
    backbone = build_backbone(
        recorded.get("architecture"),  # type: ignore[arg-type]  # checked by build_backbone
        recorded.get("kwargs"),  # type: ignore[arg-type]
        source=str(path),
    )
    return ckpt, meta, recipe, backbone


M = TypeVar("M", bound=nn.Module)


def module_from_recipe(path: str | Path, writer: str, build: Callable[[], M]) -> M:
    """``build()`` (a task module from a checkpoint's recorded recipe); a recipe it refuses
    or lacks a setting of is a ``ValueError`` naming the checkpoint (an edited or foreign
    file, not a usage error of the caller)."""
    try:
        return build()
    except (ValueError, TypeError, KeyError) as err:
        cause = err.args[0] if isinstance(err, KeyError) and err.args else err
        if isinstance(err, KeyError):
            cause = f"no {cause!r} setting"
        raise ValueError(
            f"{path}: its recorded {writer} recipe cannot build the model: {cause}"
        ) from err


def pretrained_backbone(
    backbone: nn.Module | None, pretrained: str | None, released: str | None
) -> nn.Module:
    """The backbone to fine-tune, with ``pretrained`` weights loaded strictly (report printed)."""

    if pretrained is None:
        if released is not None:
            raise ValueError(f"released={released!r} needs pretrained= (the local file)")
        if backbone is None:
            raise ValueError("give a backbone, or pretrained= weights to rebuild one from")
        return backbone
    if released is not None:
        if backbone is not None:
            raise ValueError("released weights build their own backbone: omit backbone")
        model, report = load_released(released, pretrained)
    elif backbone is None:
        model, report = load_backbone(pretrained)
    else:
        _, state, source = read_backbone_source(pretrained)
        model = backbone
        report = load_state_dict_with_report(model, state, source=source).check()
    print(f"FinetuneModule: loaded {len(report.loaded)} tensors from {report.source}")
    return model
