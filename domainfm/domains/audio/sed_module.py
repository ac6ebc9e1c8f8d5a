"""Sound event detection model: frame-level tagging over a backbone's token columns, and
event detection in recordings of any length with a trained checkpoint.

:class:`SoundEventModule`: the backbone's token columns (tokens averaged over the frequency
axis, :func:`~domainfm.domains.audio.hear.token_columns`) → a linear layer → per-column class
logits ``(B, K, g_t)``; trained with binary cross-entropy against the column targets (a column
is active when at least half its frames are). Validation logs column-level macro F1
(``val/frame_f1``); event-based F1 (onset within a collar, same class) is
:func:`~domainfm.domains.audio.events.event_f1` over :func:`detect_events` output (``domainfm
sed --reference``). :func:`detect_events` runs a trained module over files of any length
(consecutive segments of the training length) and turns its activity into events
(:func:`~domainfm.domains.audio.events.activity_to_events`).

Example::

    >>> module, meta = load_sound_event_model("runs/.../last.ckpt")
    >>> events = detect_events(module, meta, ["street.wav"])
    >>> write_events_csv("events.csv", events)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from domainfm.domains.audio.contract import audio_contract
from domainfm.domains.audio.events import Event, activity_to_events
from domainfm.domains.audio.hear import segment_chunks, token_columns
from domainfm.domains.audio.io import load_audio
from domainfm.pretrained.report import load_state_dict_with_report
from domainfm.tasks.lr_schedule import adamw_warmup_cosine
from domainfm.tasks.param_groups import param_groups
from domainfm.tasks.task_module import (
    checkpoint_metadata,
    pretrained_backbone,
    read_task_checkpoint,
)


class SoundEventModule(L.LightningModule):
    """Frame-level sound event detection over a backbone's token columns.

    Args:
        backbone: an audio backbone (or omit and give ``pretrained``).
        pretrained: export folder / ``.ckpt`` to start from (strict, reported).
        num_classes: event classes ``K``.
        lr, weight_decay, warmup_steps: AdamW + warmup-cosine.
        freeze_backbone: train only the head (a linear probe of frames).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        backbone: nn.Module | None = None,
        pretrained: str | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 0,
        freeze_backbone: bool = False,
    ) -> None:
        super().__init__()
        from torchmetrics.classification import MultilabelF1Score

        self.backbone, _ = pretrained_backbone(backbone, pretrained, None)
        width = int(getattr(self.backbone, "embed_dim"))  # noqa: B009 - part of the contract
        self.head = nn.Linear(width, num_classes)
        self.num_classes = num_classes
        self.lr, self.weight_decay, self.warmup_steps = lr, weight_decay, warmup_steps
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            self.backbone.requires_grad_(False)
        self.val_f1 = MultilabelF1Score(num_labels=num_classes, average="macro")

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 1, F, T)`` → column logits ``(B, K, g_t)``."""
        columns = token_columns(self.backbone, x)  # (B, g_t, D)
        return self.head(columns).transpose(1, 2)

    @staticmethod
    def column_targets(frame_labels: Tensor, columns: int) -> Tensor:
        """``(B, K, T)`` frame labels → ``(B, K, columns)``: active when at least half of a
        column's frames are."""
        per = frame_labels.shape[-1] // columns
        pooled = F.avg_pool1d(frame_labels[..., : per * columns], per)
        return (pooled >= 0.5).float()

    def _step(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        logits = self(batch["input"])
        target = self.column_targets(batch["frame_labels"], logits.shape[-1])
        return F.binary_cross_entropy_with_logits(logits, target), logits, target

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss, _, _ = self._step(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["input"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        loss, logits, target = self._step(batch)
        self.log("val/loss", loss, batch_size=batch["input"].shape[0])
        # (B, K, g) -> (B * g, K): every column is a multilabel sample
        probs = torch.sigmoid(logits).transpose(1, 2).reshape(-1, self.num_classes)
        self.val_f1.update(probs, target.transpose(1, 2).reshape(-1, self.num_classes).long())

    def on_validation_epoch_end(self) -> None:
        self.log("val/frame_f1", self.val_f1.compute())
        self.val_f1.reset()

    def configure_optimizers(self) -> Any:
        return adamw_warmup_cosine(
            param_groups(self, weight_decay=self.weight_decay),
            lr=self.lr,
            warmup_steps=self.warmup_steps,
            total_steps=int(self.trainer.estimated_stepping_batches),
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        recipe = {"sed": {"num_classes": self.num_classes, "lr": self.lr}}
        checkpoint["domainfm"] = checkpoint_metadata(self.backbone, self._trainer, recipe)


def load_sound_event_model(path: str | Path) -> tuple[SoundEventModule, dict[str, Any]]:
    """Rebuild a :class:`SoundEventModule` from its ``.ckpt`` (strict; no code unpickled)."""

    ckpt, meta, recipe, backbone = read_task_checkpoint(path, "sed", "SoundEventModule")
    module = SoundEventModule(backbone=backbone, num_classes=int(recipe["num_classes"]))
    load_state_dict_with_report(module, ckpt["state_dict"], source=str(path)).check()
    return module.eval(), meta


def detect_events(
    module: SoundEventModule,
    meta: Mapping[str, Any],
    files: Sequence[str | Path],
    *,
    threshold: float = 0.5,
    min_gap: float = 0.1,
    min_duration: float = 0.05,
) -> list[Event]:
    """Events in each file (any length: consecutive segments of the training length), with
    the checkpoint's front end and class names."""
    contract = audio_contract(meta.get("input"), source="the checkpoint")
    frontend, frames = contract.frontend_module, contract.frames
    names = list(contract.class_names or [str(k) for k in range(module.num_classes)])
    device = next(module.parameters()).device
    events: list[Event] = []
    for path in files:
        wave, _ = load_audio(path, frontend.sample_rate, mono=True, allow_silent=True)
        with torch.no_grad():
            chunks = segment_chunks(frontend(wave), frames)  # (c, 1, F, frames)
            logits = module(chunks.to(device))  # (c, K, g)
            probs = torch.sigmoid(logits).permute(1, 0, 2).reshape(module.num_classes, -1)
        column_s = frames // logits.shape[-1] * frontend.hop_length / frontend.sample_rate
        used = int(np.ceil(wave.shape[-1] / frontend.sample_rate / column_s))
        events += activity_to_events(
            probs[:, :used],
            hop_s=column_s,
            file=str(path),
            class_names=names,
            threshold=threshold,
            min_gap=min_gap,
            min_duration=min_duration,
        )
    return events
