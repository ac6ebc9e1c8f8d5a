"""Sound event detection (SED): frame-level tagging with onsets and offsets.

* **Data**: :class:`EventSequenceDataset` composes labeled clips into sequences with
  silence between them at known offsets (a standard way to make strongly labeled SED data
  from weakly labeled clips, e.g. DCASE's synthetic soundscapes): per sample (seeded) 1 to
  ``max_events`` clips, each placed at a random offset without overlap, the rest silence.
  Each sample is ``{"input": (1, F, T) spectrogram, "frame_labels": (K, T) 0/1 float}``
  where a frame is active for a class when it lies inside one of its events.
  :func:`write_event_sequences` writes such sequences as WAV files with a ground-truth CSV.
* **Model**: :class:`SoundEventModule` — the backbone's token columns (tokens averaged over
  the frequency axis, :func:`~domainfm.domains.audio.hear.token_columns`) → a linear
  layer → per-column class logits ``(B, K, g_t)``; trained with binary cross-entropy against
  the column targets (a column is active when at least half its frames are). Validation logs
  column-level macro F1 (``val/frame_f1``); event-based F1 (onset within a collar, same
  class) is :func:`event_f1` over :func:`detect_events` output (``domainfm sed
  --reference``).
* **Events**: :func:`activity_to_events` thresholds the probabilities, closes gaps shorter
  than ``min_gap`` and drops events shorter than ``min_duration``; :func:`event_f1` scores
  events against a reference; :func:`detect_events` runs a trained module over files of any
  length (consecutive segments of the training length) and :func:`write_events_csv` writes
  ``file,onset,offset,label`` rows (seconds).

Example::

    >>> module, meta = load_sound_event_model("runs/.../last.ckpt")
    >>> events = detect_events(module, meta, ["street.wav"])
    >>> write_events_csv("events.csv", events)
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from domainfm.core.checkpoint_io import atomic_write
from domainfm.domains.audio.frontends import Frontend, build_frontend
from domainfm.domains.audio.hear import segment_chunks, token_columns
from domainfm.domains.audio.io import load_audio
from domainfm.pretrained.report import load_state_dict_with_report
from domainfm.tasks.finetune_module import (
    checkpoint_metadata,
    pretrained_backbone,
    read_task_checkpoint,
)
from domainfm.tasks.lr_schedule import adamw_warmup_cosine
from domainfm.tasks.param_groups import param_groups


@dataclass(frozen=True)
class Event:
    """One sound event: ``label`` from ``onset`` to ``offset`` seconds in ``file``."""

    file: str
    onset: float
    offset: float
    label: str


def _compose(
    clips: Sequence[Tensor],
    labels: Sequence[int],
    *,
    length: int,
    max_events: int,
    generator: torch.Generator,
) -> tuple[Tensor, list[tuple[int, int, int]]]:
    """A ``(length,)`` waveform holding 1..``max_events`` of the clips in random order with
    random silences between them (the free samples split at random into gaps); returns it
    and the ``(start, stop, label)`` sample span of each clip."""
    count = 1 + int(torch.randint(min(max_events, len(clips)), (), generator=generator))
    picks = torch.randperm(len(clips), generator=generator)[:count].tolist()
    parts = [clips[k][: length // count] for k in picks]  # each fits in its share
    free = length - sum(len(p) for p in parts)
    weights = torch.rand(count + 1, generator=generator)
    gaps = (weights / weights.sum() * free).floor().long().tolist()
    wave = torch.zeros(length)
    spans: list[tuple[int, int, int]] = []
    cursor = 0
    for gap, part, k in zip(gaps[:count], parts, picks, strict=True):  # gaps[count]: the tail
        start = cursor + gap
        wave[start : start + len(part)] = part
        spans.append((start, start + len(part), labels[k]))
        cursor = start + len(part)
    return wave, spans


class EventSequenceDataset(Dataset[dict[str, Tensor]]):
    """Sequences of labeled clips and silence with frame labels (see the module docstring).

    Args:
        files: clip paths.
        labels: class id per clip.
        num_classes: ``K``.
        frontend: waveform → ``(F, T)`` (normalized).
        frames: sequence length in frames.
        max_events: most clips per sequence.
        length: samples per epoch.
        pool: clips decoded per sequence draw (a random subset of ``files``).
    """

    def __init__(
        self,
        *,
        files: Sequence[str],
        labels: Sequence[int],
        num_classes: int,
        frontend: Frontend,
        frames: int = 400,
        max_events: int = 3,
        length: int = 256,
        pool: int = 8,
    ) -> None:
        if len(files) != len(labels) or not files:
            raise ValueError(f"{len(files)} files and {len(labels)} labels: need equal, > 0")
        self.files, self.labels = list(files), [int(v) for v in labels]
        self.num_classes = num_classes
        self.frontend = frontend
        self.frames = frames
        self.max_events = max_events
        self.length = length
        self.pool = min(pool, len(files))
        self.num_samples = frontend.num_samples(frames)

    def __len__(self) -> int:
        return self.length

    def sequence(self, seed: int) -> tuple[Tensor, list[tuple[int, int, int]]]:
        """The waveform ``(n,)`` and sample spans ``(start, stop, label)`` of sequence
        ``seed``."""
        generator = torch.Generator().manual_seed(seed)
        chosen = torch.randperm(len(self.files), generator=generator)[: self.pool].tolist()
        rate = self.frontend.sample_rate
        clips = [load_audio(self.files[i], rate, mono=True)[0][0] for i in chosen]
        return _compose(
            clips,
            [self.labels[i] for i in chosen],
            length=self.num_samples,
            max_events=self.max_events,
            generator=generator,
        )

    def frame_labels(self, spans: Sequence[tuple[int, int, int]], frames: int) -> Tensor:
        """``(K, frames)`` 0/1: frame ``t`` (centred at sample ``t * hop``) inside a span."""
        centres = torch.arange(frames) * self.frontend.hop_length
        out = torch.zeros(self.num_classes, frames)
        for start, stop, label in spans:
            out[label, (centres >= start) & (centres < stop)] = 1.0
        return out

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Tensor]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        wave, spans = self.sequence(seed if seed is not None else index)
        with torch.no_grad():
            x = self.frontend(wave[None])  # (1, F, T)
        x = x[..., : self.frames]
        return {"input": x, "frame_labels": self.frame_labels(spans, x.shape[-1])}


def write_event_sequences(
    dataset: EventSequenceDataset,
    out_dir: str | Path,
    *,
    count: int,
    class_names: Sequence[str],
    first_seed: int = 0,
) -> tuple[list[Path], list[Event]]:
    """Write ``count`` sequences of ``dataset`` as 16-bit WAVs and their events as
    ``out_dir/events.csv``; returns the files and the reference events."""
    import soundfile as sf

    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    rate = dataset.frontend.sample_rate
    files, events = [], []
    for k in range(count):
        wave, spans = dataset.sequence(first_seed + k)
        path = folder / f"sequence_{k:04d}.wav"
        samples = wave.numpy()

        def write(tmp: Path, samples: np.ndarray = samples) -> None:
            sf.write(tmp, samples, rate, format="WAV", subtype="PCM_16")

        atomic_write(path, write)
        files.append(path)
        events += [Event(str(path), s / rate, e / rate, class_names[c]) for s, e, c in spans]
    write_events_csv(folder / "events.csv", events)
    return files, events


def activity_to_events(
    probs: Tensor,
    *,
    hop_s: float,
    file: str,
    class_names: Sequence[str],
    threshold: float = 0.5,
    min_gap: float = 0.1,
    min_duration: float = 0.05,
) -> list[Event]:
    """``(K, C)`` per-column probabilities (column ``c`` spans ``[c, c + 1) * hop_s``) →
    events: runs above ``threshold``, gaps shorter than ``min_gap`` closed, events shorter
    than ``min_duration`` dropped; sorted by onset."""
    events = []
    active = (probs >= threshold).cpu().numpy()
    gap = max(0, round(min_gap / hop_s))
    for k, row in enumerate(active):
        runs: list[list[int]] = []
        for c in np.flatnonzero(row):
            if runs and c - runs[-1][1] <= gap + 1:
                runs[-1][1] = int(c)
            else:
                runs.append([int(c), int(c)])
        for first, last in runs:
            onset, offset = first * hop_s, (last + 1) * hop_s
            if offset - onset >= min_duration:
                events.append(Event(file, round(onset, 4), round(offset, 4), class_names[k]))
    return sorted(events, key=lambda e: (e.onset, e.label))


def event_f1(
    predicted: Sequence[Event], reference: Sequence[Event], *, collar: float = 0.2
) -> float:
    """Event-based F1 (onset-only, as DCASE's ``sed_eval`` with ``evaluate_offset=False``):
    a predicted event is a hit when an unmatched reference event of the same file and
    label has its onset within ``collar`` seconds (greedy, closest first). 1.0 when both
    are empty."""
    if not predicted and not reference:
        return 1.0
    unmatched = list(reference)
    hits = 0
    for event in sorted(predicted, key=lambda e: e.onset):
        close = [
            r
            for r in unmatched
            if r.file == event.file
            and r.label == event.label
            and abs(r.onset - event.onset) <= collar
        ]
        if close:
            unmatched.remove(min(close, key=lambda r: abs(r.onset - event.onset)))
            hits += 1
    precision = hits / len(predicted) if predicted else 0.0
    recall = hits / len(reference) if reference else 0.0
    return 0.0 if hits == 0 else 2 * precision * recall / (precision + recall)


def write_events_csv(path: str | Path, events: Sequence[Event]) -> Path:
    """``file,onset,offset,label`` rows (seconds, 3 decimals), written atomically."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as handle:
            out = csv.writer(handle)
            out.writerow(["file", "onset", "offset", "label"])
            for e in events:
                out.writerow([e.file, f"{e.onset:.3f}", f"{e.offset:.3f}", e.label])

    return atomic_write(path, write)


def read_events_csv(path: str | Path) -> list[Event]:
    """Events from a ``file,onset,offset,label`` CSV."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    missing = {"file", "onset", "offset", "label"} - set(rows[0] if rows else {})
    if rows and missing:
        raise ValueError(f"{path}: no column(s) {sorted(missing)}")
    return [Event(r["file"], float(r["onset"]), float(r["offset"]), r["label"]) for r in rows]


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

        self.backbone = pretrained_backbone(backbone, pretrained, None)
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
    contract = meta.get("input") or {}
    if "frontend" not in contract:
        raise ValueError("the checkpoint records no audio front end")
    frontend = build_frontend(contract["frontend"])
    frames = int(contract["frames"])
    names = list(contract.get("class_names") or [str(k) for k in range(module.num_classes)])
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
