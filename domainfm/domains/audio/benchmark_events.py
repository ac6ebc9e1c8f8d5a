"""Few-label fine-tuning on timestamp tasks (HEAR event tasks): the sound event detection
model ``domainfm fit`` trains, scored frame by frame and event by event.

A fresh backbone in :class:`~domainfm.domains.audio.sed_module.SoundEventModule` (token
columns → linear layer → per-column class logits, binary cross-entropy against the columns'
targets) is trained on fixed-length crops of the training recordings
(:class:`EventCropDataset`: a seeded random start per sample, only that part read,
:func:`~domainfm.domains.audio.io.read_segment`), with frame labels from the events (frame
``t`` of a crop starting at ``s`` seconds lies at ``s + t * hop``).

Each test recording is then cut into consecutive segments of the training length (the last
zero-padded, as :func:`~domainfm.domains.audio.sed_module.detect_events` does), and its
column probabilities are scored:

* frame-level ``map`` and ``macro_f1`` (:func:`~domainfm.tasks.benchmark.metrics.
  task_metrics`, kind ``"timestamps"``) against each column's targets at its centre (the
  same labels the frozen probes get, :func:`~domainfm.domains.audio.benchmark_inputs.
  frame_targets`), columns whose centre lies past the end of the audio left out;
* ``event_f1``: events from the activity (:func:`~domainfm.domains.audio.events.
  activity_to_events`, threshold 0.5) against the reference events, onsets within a
  :data:`COLLAR_S` collar (:func:`~domainfm.domains.audio.events.event_f1`, DCASE's
  onset-only event F1).

Example::

    >>> request = FinetuneRequest(backbone=backbone, task=task, train=train, test=test,
    ...                           seed=0, steps=50, device="cpu")
    >>> finetune_event_items(request, contract=contract)
    {'map': 0.41, 'macro_f1': 0.22, 'event_f1': 0.18}
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from domainfm.domains.audio.benchmark_inputs import (
    frame_targets,
    item_events,
    item_path,
    item_wave,
)
from domainfm.domains.audio.contract import AudioContract
from domainfm.domains.audio.events import Event as AudioEvent
from domainfm.domains.audio.events import activity_to_events, event_f1
from domainfm.domains.audio.frontends import Frontend
from domainfm.domains.audio.hear import ENCODE_BATCH, segment_chunks
from domainfm.domains.audio.io import audio_info, read_segment
from domainfm.domains.audio.sed_module import SoundEventModule
from domainfm.domains.audio.segments import fit_frames
from domainfm.tasks.benchmark.fitting import fit_seeded
from domainfm.tasks.benchmark.hooks import FinetuneRequest
from domainfm.tasks.benchmark.metrics import task_metrics
from domainfm.tasks.benchmark.task import LabeledItem

COLLAR_S = 0.2
"""Onset collar (seconds) of the event F1."""


class EventCropDataset(Dataset[dict[str, Tensor]]):
    """Fixed-length crops of labeled recordings: ``{"input": (1, F, frames), "frame_labels":
    (K, frames)}`` (see the module docstring).

    Args:
        items: timestamp items (one recording each).
        num_classes: ``K``.
        frontend: waveform → ``(F, T)`` features (normalized).
        frames: crop length in frames.

    Raises:
        ValueError: naming the file, for a recording whose header cannot be read.
    """

    def __init__(
        self,
        *,
        items: Sequence[LabeledItem],
        num_classes: int,
        frontend: Frontend,
        frames: int,
    ) -> None:
        self.infos = [audio_info(item_path(item)) for item in items]
        self.events = [item_events(item) for item in items]
        self.num_classes = num_classes
        self.frontend = frontend
        self.frames = frames
        self.num_samples = frontend.num_samples(frames)
        self.hop_s = frontend.hop_length / frontend.sample_rate

    def __len__(self) -> int:
        return len(self.infos)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Tensor]:
        """A crop; ``key`` is an index or ``(index, seed)`` from the seeded sampler."""
        index, seed = key if isinstance(key, tuple) else (key, key)
        info = self.infos[index]
        free_s = max(0.0, info.duration - self.num_samples / self.frontend.sample_rate)
        start_s = free_s * float(torch.rand((), generator=torch.Generator().manual_seed(seed)))
        wave = read_segment(
            info,
            start=round(start_s * info.sample_rate),
            num_samples=self.num_samples,
            sample_rate=self.frontend.sample_rate,
        )
        with torch.no_grad():
            x = fit_frames(self.frontend(wave), self.frames, 0)  # (1, F, frames)
        times = start_s + torch.arange(self.frames) * self.hop_s
        labels = frame_targets(self.events[index], times, self.num_classes)  # (frames, K)
        return {"input": x, "frame_labels": labels.T.contiguous()}


def column_probabilities(
    module: SoundEventModule, wave: Tensor, contract: AudioContract
) -> tuple[Tensor, Tensor, float]:
    """Per-column class probabilities ``(G, K)`` of a recording ``(1, N)`` over consecutive
    segments, the columns' centres in seconds ``(G,)`` (those within the audio) and the
    columns' length in seconds."""
    frontend = contract.frontend_module
    device = next(module.parameters()).device
    with torch.no_grad():
        chunks = segment_chunks(frontend(wave), contract.frames)  # (c, 1, F, frames)
        logits = torch.cat([module(part.to(device)) for part in chunks.split(ENCODE_BATCH)])
    probs = torch.sigmoid(logits.float()).transpose(1, 2).reshape(-1, module.num_classes)
    column_s = contract.frames // logits.shape[-1] * frontend.hop_length / frontend.sample_rate
    centres = (torch.arange(len(probs)) + 0.5) * column_s
    keep = centres <= max(wave.shape[-1] / frontend.sample_rate, float(centres[0]))
    return probs[keep].cpu(), centres[keep], column_s


def finetune_event_items(
    request: FinetuneRequest,
    *,
    contract: AudioContract,
    batch_size: int = 16,
    lr: float = 1e-3,
) -> dict[str, float]:
    """Fine-tune a fresh copy of the request's backbone for sound event detection on its
    training items and score it on its test items (see the module docstring)."""
    task, seed, steps = request.task, request.seed, request.steps
    frontend, warmup = contract.frontend_module, min(10, steps // 10)
    crops = EventCropDataset(
        items=request.train, num_classes=task.num_classes, frontend=frontend, frames=contract.frames
    )

    def make() -> SoundEventModule:
        model = request.backbone.build(seed)
        return SoundEventModule(
            backbone=model, num_classes=task.num_classes, lr=lr, warmup_steps=warmup
        )

    module = fit_seeded(
        make, crops, seed=seed, steps=steps, device=request.device, batch_size=batch_size
    )
    scores, targets = [], []
    predicted: list[AudioEvent] = []
    reference: list[AudioEvent] = []
    for item in request.test:
        wave = item_wave(item, frontend.sample_rate)
        probs, centres, column_s = column_probabilities(module, wave, contract)
        events = item_events(item)
        scores.append(probs)
        targets.append(frame_targets(events, centres, task.num_classes))
        predicted += activity_to_events(
            probs.T, hop_s=column_s, file=item.key, class_names=task.classes
        )
        reference += [
            AudioEvent(item.key, e.onset, e.offset, task.classes[e.label]) for e in events
        ]
    metrics = task_metrics(
        "timestamps", torch.cat(scores), torch.cat(targets), num_classes=task.num_classes
    )
    metrics["event_f1"] = event_f1(predicted, reference, collar=COLLAR_S)
    return metrics
