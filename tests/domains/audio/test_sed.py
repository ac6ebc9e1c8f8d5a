"""Sound event detection: composed sequences place real clips at known offsets, frame labels
and column targets follow them, activity → events (gap closing, shortest event), event F1 by
hand-computed cases, the CSV round trip and the module's shapes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from domainfm.core.vit import VisionTransformerND
from domainfm.domains.audio import (
    Event,
    EventSequenceDataset,
    LogMelFrontend,
    SoundEventModule,
    activity_to_events,
    event_f1,
    load_audio,
    write_event_sequences,
)
from domainfm.domains.audio.sed import read_events_csv

DIGITS = "audio/fsdd_spoken_digits/recordings"


def _dataset(data_root: Path, frames: int = 400) -> EventSequenceDataset:
    files = sorted(str(p) for p in (data_root / DIGITS).glob("*_lucas_1*.wav"))
    labels = [int(Path(f).name.split("_")[0]) for f in files]
    return EventSequenceDataset(
        files=files,
        labels=labels,
        num_classes=10,
        frontend=LogMelFrontend(mean=-6, std=5),
        frames=frames,
        max_events=3,
        pool=6,
    )


def test_sequences_hold_the_clips_at_their_spans(data_root: Path) -> None:
    ds = _dataset(data_root)
    for seed in range(5):
        wave, spans = ds.sequence(seed)
        assert wave.shape == (ds.num_samples,) and 1 <= len(spans) <= 3
        covered = torch.zeros_like(wave, dtype=torch.bool)
        for start, stop, _ in spans:
            assert 0 <= start < stop <= len(wave) and not covered[start:stop].any()
            covered[start:stop] = True
        assert wave[~covered].abs().max() == 0  # silence between events
        labels = ds.frame_labels(spans, 400)
        for start, stop, label in spans:
            centres = torch.arange(400) * 160
            inside = (centres >= start) & (centres < stop)
            assert bool(labels[label, inside].all())
        assert int(labels.sum()) == sum(
            int(((torch.arange(400) * 160 >= a) & (torch.arange(400) * 160 < b)).sum())
            for a, b, _ in spans
        )
    sample = ds[(0, 3)]
    assert sample["input"].shape == (1, 64, 400) and sample["frame_labels"].shape == (10, 400)
    # the clip itself sits at its span
    wave, spans = ds.sequence(3)
    start, stop, label = spans[0]
    clips = [f for f in ds.files if Path(f).name.startswith(f"{label}_")]
    decoded = [load_audio(f, 16000)[0][0] for f in clips]
    assert any(
        len(c) >= stop - start and torch.allclose(wave[start:stop], c[: stop - start])
        for c in decoded
    )


def test_activity_to_events_and_event_f1() -> None:
    probs = torch.zeros(2, 20)
    probs[0, 2:5] = 0.9
    probs[0, 6:8] = 0.8  # one-column gap: closed with min_gap 0.1 s at 0.1 s hop
    probs[1, 12] = 0.7  # a single column: dropped with min_duration 0.15 s
    events = activity_to_events(
        probs, hop_s=0.1, file="a.wav", class_names=["dog", "cat"], min_gap=0.1, min_duration=0.15
    )
    assert events == [Event("a.wav", 0.2, 0.8, "dog")]
    ref = [Event("a.wav", 0.25, 0.8, "dog"), Event("a.wav", 1.0, 1.5, "cat")]
    assert event_f1(events, ref, collar=0.2) == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert event_f1(events, ref, collar=0.01) == 0.0  # onset 0.2 vs 0.25
    assert event_f1([Event("b.wav", 0.2, 0.8, "dog")], ref) == 0.0  # another file
    assert event_f1([], []) == 1.0


def test_written_sequences_and_csv_round_trip(data_root: Path, tmp_path: Path) -> None:
    ds = _dataset(data_root)
    files, events = write_event_sequences(
        ds, tmp_path / "seq", count=2, class_names=[str(k) for k in range(10)]
    )
    assert [f.name for f in files] == ["sequence_0000.wav", "sequence_0001.wav"]
    back = read_events_csv(tmp_path / "seq" / "events.csv")
    assert [(e.file, e.label) for e in back] == [(e.file, e.label) for e in events]
    for a, b in zip(back, events, strict=True):
        assert abs(a.onset - b.onset) < 1e-3 and abs(a.offset - b.offset) < 1e-3
    wave, _ = load_audio(files[0], allow_silent=True)
    assert wave.shape[1] == ds.num_samples


def test_module_columns_and_targets() -> None:
    vit = VisionTransformerND(
        in_chans=1, spatial_dims=2, patch_size=16, embed_dim=32, depth=2, num_heads=2
    )
    module = SoundEventModule(backbone=vit, num_classes=10)
    logits = module(torch.randn(2, 1, 64, 400))
    assert logits.shape == (2, 10, 25)
    frames = torch.zeros(1, 10, 400)
    frames[0, 3, 16:39] = 1  # column 1 (16..31) fully, column 2 (32..47) 7 of 16 frames
    target = SoundEventModule.column_targets(frames, 25)
    assert target[0, 3, :4].tolist() == [0.0, 1.0, 0.0, 0.0]
    frames[0, 3, 32:41] = 1
    assert SoundEventModule.column_targets(frames, 25)[0, 3, 2] == 1.0
