"""What the fine-tuning Lightning modules share (classification / segmentation, detection,
sound event detection): the backbone they start from, their optimizer, and the checkpoint
entry that lets them be rebuilt.

* :func:`pretrained_backbone`: the backbone given, or rebuilt from / loaded with pretrained
  weights (strict, report printed): a domainfm export or checkpoint, or a released weights
  file, identified by its layout (:func:`~domainfm.pretrained.load.load_backbone`);
* :class:`TaskModule`: AdamW + warmup-cosine over parameter groups, and the ``domainfm``
  checkpoint entry (:func:`checkpoint_metadata`: the backbone's architecture + kwargs, the
  data's input contract — or, when the data module records none, the one the pretrained
  weights expect (:meth:`TaskModule.record_pretrained`: the release's or the export's) — and
  the task's settings; a release the weights came from is recorded as provenance with its
  licence);
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
from domainfm.pretrained.registry import RELEASED
from domainfm.pretrained.release_file import RELEASE_SUFFIXES
from domainfm.pretrained.report import LoadReport, load_state_dict_with_report
from domainfm.tasks.lr_schedule import adamw_warmup_cosine
from domainfm.tasks.param_groups import param_groups


class TaskModule(L.LightningModule):
    """Base of the fine-tuning modules: the optimizer and the checkpoint entry.

    A subclass sets ``backbone``, ``lr`` (peak learning rate), ``weight_decay`` (AdamW decay
    of weight matrices) and ``warmup_steps`` (linear warmup length), and implements
    :meth:`checkpoint_recipe`; it may override :meth:`optimizer_groups`. A subclass that
    loads pretrained weights passes their report to :meth:`record_pretrained`.

    Attributes:
        pretrained_input: the input contract the pretrained weights expect (JSON), recorded
            in the checkpoint when the data module records none; ``None``: unknown.
        initialized_from: the release the weights came from (``released``, ``candidates``,
            ``file``, ``license``, ``reference``), recorded as provenance; ``None`` otherwise.
    """

    backbone: nn.Module
    lr: float
    weight_decay: float
    warmup_steps: int
    pretrained_input: dict[str, Any] | None = None
    initialized_from: dict[str, Any] | None = None

    def record_pretrained(self, pretrained: str | None, report: LoadReport | None) -> None:
        """Keep what the load ``report`` of the ``pretrained`` weights says they expect (its
        input contract) and, for a release, where they came from."""
        if report is None:
            return
        self.pretrained_input = dict(report.input) if report.input else None
        if report.released is not None:
            entry = RELEASED.get(report.released)
            self.initialized_from = {
                "released": entry.name,
                "candidates": list(report.candidates),
                "file": str(Path(str(pretrained))),
                "license": entry.license,
                "reference": entry.reference,
            }

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
        """Record the backbone config, the input contract (the data module's, else the
        pretrained weights') and :meth:`checkpoint_recipe` as the checkpoint's ``domainfm``
        entry, with the release the weights came from."""
        checkpoint["domainfm"] = checkpoint_metadata(
            self.backbone,
            self._trainer,
            self.checkpoint_recipe(),
            default_input=self.pretrained_input,
            initialized_from=self.initialized_from,
        )


def checkpoint_metadata(
    backbone: nn.Module,
    trainer: L.Trainer | None,
    recipe: dict[str, Any],
    *,
    default_input: dict[str, Any] | None = None,
    initialized_from: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``domainfm`` entry of a fine-tuning checkpoint: the backbone's architecture +
    kwargs, the data module's input contract (``input_contract()``: spacing, bands,
    normalization, window, class names; ``default_input`` when it records none, e.g. the
    contract of the release the backbone was loaded from) and the head ``recipe``; with
    ``initialized_from`` (the release, its file and licence) as ``provenance`` and the
    release's ``license``."""
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    entry: dict[str, Any] = {
        "backbone": init_config(backbone),
        "input": recorded_contract(datamodule) or dict(default_input or {}),
        "recipe": recipe,
    }
    if initialized_from is not None:
        entry["provenance"] = {"initialized_from": initialized_from}
        entry["license"] = initialized_from.get("license")
    meta: dict[str, Any] = to_jsonable(entry)
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
) -> tuple[nn.Module, LoadReport | None]:
    """The backbone to fine-tune, with ``pretrained`` weights loaded strictly (report
    printed), and their load report (``None`` without ``pretrained``).

    ``pretrained`` alone is rebuilt by :func:`~domainfm.pretrained.load.load_backbone`: a
    domainfm export or checkpoint, or a released weights file (identified by its layout, or
    named by ``released``); the report says which release it is and the input contract it
    expects (:meth:`TaskModule.record_pretrained`). With ``backbone``, the weights of an
    export or checkpoint are loaded into it.
    """

    if pretrained is None:
        if released is not None:
            raise ValueError(f"released={released!r} needs pretrained= (the local file)")
        if backbone is None:
            raise ValueError("give a backbone, or pretrained= weights to rebuild one from")
        return backbone, None
    if backbone is None:
        model, report = load_backbone(pretrained, released=released)
    elif released is not None or Path(pretrained).suffix in RELEASE_SUFFIXES:
        raise ValueError(
            f"{pretrained}: released weights build their own backbone: omit backbone (the "
            "release is identified from the file, or named with released=)"
        )
    else:
        config, state, source = read_backbone_source(pretrained)
        model = backbone
        report = load_state_dict_with_report(model, state, source=source).check()
        recorded = config.get("input")
        report.input = dict(recorded) if isinstance(recorded, dict) and recorded else None
    print(f"FinetuneModule: loaded {len(report.loaded)} tensors from {report.source}")
    if len(report.candidates) > 1:
        print(
            f"FinetuneModule: the file fits {', '.join(report.candidates)} alike; loaded as "
            f"{report.released}"
        )
    return model, report
