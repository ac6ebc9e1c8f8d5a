"""Sound events and their post-processing: the :class:`Event` record, frame activity →
events, event-based F1 and the ``file,onset,offset,label`` CSV.

* :func:`activity_to_events` thresholds per-column probabilities, closes gaps shorter than
  ``min_gap`` and drops events shorter than ``min_duration``;
* :func:`event_f1` scores events against a reference (onset within a collar, same class);
* :func:`write_events_csv` / :func:`read_events_csv` write and read ``file,onset,offset,label``
  rows (seconds).

The events of recordings come from a trained model through
:func:`~domainfm.domains.audio.sed_module.detect_events`.

Example::

    >>> events = activity_to_events(probs, hop_s=0.16, file="a.wav", class_names=names)
    >>> write_events_csv("events.csv", events)
    >>> event_f1(events, read_events_csv("reference.csv"), collar=0.2)
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import Tensor

from domainfm.core.checkpoint_io import atomic_write


@dataclass(frozen=True)
class Event:
    """One sound event: ``label`` from ``onset`` to ``offset`` seconds in ``file``."""

    file: str
    onset: float
    offset: float
    label: str


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
    """Events from a ``file,onset,offset,label`` CSV.

    Raises:
        FileNotFoundError: no such file.
        ValueError: naming the file: not a UTF-8 CSV, a missing column, or a row whose
            onset/offset is not a number.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such events CSV")
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"{path}: not a file,onset,offset,label CSV ({err})") from err
    missing = {"file", "onset", "offset", "label"} - set(rows[0] if rows else {})
    if rows and missing:
        raise ValueError(f"{path}: no column(s) {sorted(missing)}")
    events = []
    for line, r in enumerate(rows, start=2):
        try:
            events.append(Event(r["file"], float(r["onset"]), float(r["offset"]), r["label"]))
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: line {line}: onset/offset are not numbers ({err})") from err
    return events
