"""Sound event detection data: composed sequences place real clips at known offsets, frame
labels follow them, and written sequences round-trip through the events CSV."""

from __future__ import annotations

from pathlib import Path

import torch

from domainfm.domains.audio import (
    EventSequenceDataset,
    LogMelFrontend,
    load_audio,
    read_events_csv,
    write_event_sequences,
)

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
