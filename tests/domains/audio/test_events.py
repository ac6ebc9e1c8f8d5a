"""Sound events: activity → events (gap closing, shortest event) and event F1 by
hand-computed cases, the CSV round trip and its missing-column error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from domainfm.domains.audio import (
    Event,
    activity_to_events,
    event_f1,
    read_events_csv,
    write_events_csv,
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


def test_events_csv_round_trip_and_missing_column(tmp_path: Path) -> None:
    events = [Event("a.wav", 0.25, 0.8, "dog"), Event("b.wav", 1.0, 1.5, "cat")]
    path = write_events_csv(tmp_path / "events.csv", events)
    assert path.read_text().splitlines()[:2] == ["file,onset,offset,label", "a.wav,0.250,0.800,dog"]
    assert read_events_csv(path) == events
    (tmp_path / "bad.csv").write_text("file,onset,label\na.wav,0.1,dog\n")
    with pytest.raises(ValueError, match=r"bad\.csv: no column\(s\) \['offset'\]"):
        read_events_csv(tmp_path / "bad.csv")
    (tmp_path / "empty.csv").write_text("file,onset,offset,label\n")
    assert read_events_csv(tmp_path / "empty.csv") == []
