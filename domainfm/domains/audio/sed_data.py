"""Sound event detection data: labeled clips composed into sequences with silences at known
offsets.

:class:`EventSequenceDataset` composes labeled clips into sequences with silence between them
at known offsets (a standard way to make strongly labeled SED data from weakly labeled clips,
e.g. DCASE's synthetic soundscapes): per sample (seeded) 1 to ``max_events`` clips, each
placed at a random offset without overlap, the rest silence. Each sample is ``{"input": (1, F,
T) spectrogram, "frame_labels": (K, T) 0/1 float}`` where a frame is active for a class when it
lies inside one of its events. :func:`write_event_sequences` writes such sequences as WAV files
with a ground-truth CSV (:func:`~domainfm.domains.audio.events.write_events_csv`).

With ``checks`` (a :class:`~domainfm.domains.audio.file_checks.FileChecks`, which
:class:`~domainfm.domains.audio.SoundEventDataModule` passes), a clip that fails to load
(truncated, damaged, NaN/Inf, silent) is skipped, warned about once and counted, and the
next clip of the sequence's random order takes its place. The order depends on the seed
only and the verdicts on the files only, so sequences stay the same in every run.

Example::

    >>> ds = EventSequenceDataset(files=files, labels=labels, num_classes=10,
    ...                           frontend=LogMelFrontend(), frames=400)
    >>> ds[0]["input"].shape, ds[0]["frame_labels"].shape
    (torch.Size([1, 64, 400]), torch.Size([10, 400]))
    >>> files, events = write_event_sequences(ds, "sequences/", count=8, class_names=names)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from domainfm.core.checkpoint_io import atomic_write
from domainfm.domains.audio.events import Event, write_events_csv
from domainfm.domains.audio.file_checks import FileChecks
from domainfm.domains.audio.frontends import Frontend
from domainfm.domains.audio.io import load_audio


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
        checks: the per-clip verdicts (in ``files`` order): bad clips skipped and replaced;
            ``None``: a bad clip raises.
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
        checks: FileChecks | None = None,
    ) -> None:
        if len(files) != len(labels) or not files:
            raise ValueError(f"{len(files)} files and {len(labels)} labels: need equal, > 0")
        if checks is not None and len(checks) != len(files):
            raise ValueError(f"{len(checks)} file checks for {len(files)} files")
        self.files, self.labels = list(files), [int(v) for v in labels]
        self.num_classes = num_classes
        self.frontend = frontend
        self.frames = frames
        self.max_events = max_events
        self.length = length
        self.pool = min(pool, len(files))
        self.num_samples = frontend.num_samples(frames)
        self.checks = checks
        self.skipped_reads = 0

    def __len__(self) -> int:
        return self.length

    def _clips(self, order: list[int]) -> tuple[list[Tensor], list[int]]:
        """The first ``pool`` clips of ``order`` that load (all of the first ``pool``
        without ``checks``) ``(n,)`` at the front end's rate, and their indices."""
        rate = self.frontend.sample_rate
        if self.checks is None:
            chosen = order[: self.pool]
            return [load_audio(self.files[i], rate, mono=True)[0][0] for i in chosen], chosen
        clips: list[Tensor] = []
        chosen = []
        for i in order:
            if len(clips) == self.pool:
                break
            if self.checks.known_bad(i):
                self.skipped_reads += 1
                continue
            try:
                wave, _ = load_audio(self.files[i], rate, mono=True)
            except ValueError as err:
                self.checks.mark_bad(i, str(err))
                self.skipped_reads += 1
                continue
            self.checks.mark_good(i)
            clips.append(wave[0])
            chosen.append(i)
        if not clips:
            raise ValueError(f"every one of the {len(self.files)} clips failed to load")
        return clips, chosen

    def sequence(self, seed: int) -> tuple[Tensor, list[tuple[int, int, int]]]:
        """The waveform ``(n,)`` and sample spans ``(start, stop, label)`` of sequence
        ``seed``."""
        generator = torch.Generator().manual_seed(seed)
        clips, chosen = self._clips(torch.randperm(len(self.files), generator=generator).tolist())
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
