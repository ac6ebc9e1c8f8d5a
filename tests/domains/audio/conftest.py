"""Benchmark task specs built from the shipped spoken digits (FSDD, 8 kHz): HEAR 2021 task
folders (audio resampled to the task's 16 kHz, in hear-preprocess's layout) and a CSV of
clips, written under a temporary folder."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from domainfm.domains.audio import load_audio

DIGITS = "audio/fsdd_spoken_digits"
TASK_RATE = 16000
EVENT_SECONDS = 3.0


def digit_clips(root: Path, speakers: Sequence[str], takes: Sequence[int]) -> list[dict[str, Any]]:
    """The shipped FSDD rows of ``speakers`` x digits 0-9 x ``takes``."""
    with open(root / DIGITS / "metadata.csv", newline="") as handle:
        rows = [
            r
            for r in csv.DictReader(handle)
            if r["speaker"] in speakers and int(r["take"]) in takes
        ]
    return [{**r, "path": root / DIGITS / r["file"]} for r in rows]


def _write(path: Path, wave: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave, TASK_RATE, subtype="PCM_16")


def write_hear_task(
    folder: Path,
    meta: Mapping[str, Any],
    splits: Mapping[str, Mapping[str, Any]],
    waves: Mapping[str, np.ndarray],
    vocabulary: Sequence[str],
) -> Path:
    """A HEAR task folder: ``task_metadata.json``, ``labelvocabulary.csv``, ``{split}.json``
    and the audio at ``16000/{split}/{file}``."""
    folder.mkdir(parents=True)
    (folder / "task_metadata.json").write_text(
        json.dumps({**meta, "splits": list(splits)}, indent=1)
    )
    with open(folder / "labelvocabulary.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["idx", "label"])
        writer.writerows(enumerate(vocabulary))
    for split, entries in splits.items():
        (folder / f"{split}.json").write_text(json.dumps(entries, indent=1))
        for name in entries:
            _write(folder / str(TASK_RATE) / split / name, waves[name])
    return folder


def _resampled(path: Path) -> np.ndarray:
    return load_audio(path, TASK_RATE, mono=True)[0][0].numpy()


SCENE_META = {
    "task_name": "digits_scene",
    "version": "test",
    "embedding_type": "scene",
    "prediction_type": "multiclass",
    "sample_duration": 1.0,
    "evaluation": ["top1_acc"],
}


@pytest.fixture(scope="session")
def hear_scene_factory(
    data_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Path]:
    """``factory(split_mode)``: a scene task over george's and jackson's takes 0-1 (40
    clips): ``presplit_kfold`` with one fold per speaker, or ``trainvaltest`` (take 0 of
    george: train, take 1 of george: valid, jackson: test)."""
    clips = digit_clips(data_root, ("george", "jackson"), (0, 1))
    waves = {Path(c["file"]).name: _resampled(c["path"]) for c in clips}
    made: dict[str, Path] = {}

    def split_of(clip: Mapping[str, Any], mode: str) -> str:
        if mode != "trainvaltest":
            return "fold00" if clip["speaker"] == "george" else "fold01"
        if clip["speaker"] == "jackson":
            return "test"
        return "train" if clip["take"] == "0" else "valid"

    def factory(mode: str) -> Path:
        if mode not in made:
            splits: dict[str, dict[str, list[str]]] = {}
            for c in clips:
                splits.setdefault(split_of(c, mode), {})[Path(c["file"]).name] = [c["digit"]]
            meta = {**SCENE_META, "split_mode": mode, "nfolds": 2}
            folder = tmp_path_factory.mktemp("hear") / f"digits_{mode}"
            made[mode] = write_hear_task(folder, meta, splits, waves, [str(d) for d in range(10)])
        return made[mode]

    return factory


@pytest.fixture(scope="session")
def hear_event_task(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An event task: 4 recordings of 3 s (2 per split of a 2-fold task), each with two
    digits of lucas (take 0) at known places in silence; events in ms."""
    clips = {c["digit"]: _resampled(c["path"]) for c in digit_clips(data_root, ("lucas",), (0,))}
    plan = [("0", "5"), ("1", "6"), ("2", "7"), ("3", "8")]
    waves, entries = {}, {}
    for k, pair in enumerate(plan):
        wave = np.zeros(int(EVENT_SECONDS * TASK_RATE), dtype=np.float32)
        events = []
        for digit, start_s in zip(pair, (0.3, 1.6), strict=True):
            clip = clips[digit]
            first = int(start_s * TASK_RATE)
            wave[first : first + len(clip)] = clip
            end_s = start_s + len(clip) / TASK_RATE
            events.append({"label": digit, "start": 1000 * start_s, "end": 1000 * end_s})
        name = f"sequence_{k}.wav"
        waves[name], entries[name] = wave, events
    names = sorted(entries)
    splits = {
        "fold00": {n: entries[n] for n in names[:2]},
        "fold01": {n: entries[n] for n in names[2:]},
    }
    meta = {
        **SCENE_META,
        "task_name": "digit_events",
        "embedding_type": "event",
        "prediction_type": "multilabel",
        "split_mode": "presplit_kfold",
        "nfolds": 2,
        "sample_duration": EVENT_SECONDS,
    }
    vocabulary = sorted({d for pair in plan for d in pair})
    return write_hear_task(
        tmp_path_factory.mktemp("hear") / "events", meta, splits, waves, vocabulary
    )


@pytest.fixture(scope="session")
def digits_csv(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CSV of clips (``file,label,group``; paths relative to the CSV) of the shipped
    digits: 3 speakers x 10 digits x takes 0-1 (60 clips)."""
    clips = digit_clips(data_root, ("george", "jackson", "nicolas"), (0, 1))
    path = tmp_path_factory.mktemp("csv") / "digits.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "label", "group"])
        for c in clips:
            writer.writerow([os.path.relpath(c["path"], path.parent), c["digit"], c["speaker"]])
    return path
