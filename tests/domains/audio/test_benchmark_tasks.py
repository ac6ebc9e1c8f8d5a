"""Audio benchmark task specs: the shipped FSDD metadata CSV, CSVs of clips (multi-label,
broken, not audio), and HEAR 2021 task folders built from the spoken digits (k-fold and
train/valid/test scene tasks, an event task)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from domainfm.domains.audio.benchmark_tasks import read_audio_task
from domainfm.domains.plugin import get_domain
from domainfm.tasks.benchmark.task import Event

FSDD = "audio/fsdd_spoken_digits/metadata.csv"


def test_fsdd_metadata_csv_with_label_option(data_root: Path) -> None:
    task = read_audio_task(data_root / FSDD, {"label": "digit"})
    assert task is not None
    assert (task.kind, task.domain, task.name) == ("classification", "audio", "fsdd_spoken_digits")
    assert task.classes == tuple(str(d) for d in range(10))
    assert len(task.items) == 800
    assert {item.group for item in task.items} == {"george", "jackson", "lucas", "nicolas"}
    for item in task.items:  # recordings/{digit}_{speaker}_{take}.wav
        digit, speaker, _ = item.inputs[0].stem.split("_")
        assert (item.target, item.group) == (int(digit), speaker)
        assert item.inputs[0].is_file() and item.key == f"recordings/{item.inputs[0].name}"
    assert task.metadata["group_column"] == "speaker"
    # through the plugin, and without groups on request
    plugin_task = get_domain("audio").benchmark.read_task(
        data_root / FSDD, {"label": "digit", "group": ""}
    )
    assert plugin_task is not None and {i.group for i in plugin_task.items} == {None}


def test_fsdd_metadata_without_a_label_column_is_refused(data_root: Path) -> None:
    with pytest.raises(ValueError, match=r"metadata\.csv: no label column.*label=COLUMN"):
        read_audio_task(data_root / FSDD, {})
    with pytest.raises(ValueError, match="unknown --task-option window"):
        read_audio_task(data_root / FSDD, {"label": "digit", "window": "3"})
    with pytest.raises(ValueError, match="no group column 'room'"):
        read_audio_task(data_root / FSDD, {"label": "digit", "group": "room"})


def test_csv_of_clips_single_and_multi_label(digits_csv: Path, tmp_path: Path) -> None:
    task = read_audio_task(digits_csv, {})
    assert task is not None and task.kind == "classification"
    assert len(task.items) == 60 and task.num_classes == 10
    assert sorted({i.group for i in task.items}) == ["george", "jackson", "nicolas"]
    counts = [sum(i.target == c for i in task.items) for c in range(10)]
    assert counts == [6] * 10

    rows = digits_csv.read_text().splitlines()
    relative = [r.split(",")[0] for r in rows[1:4]]
    tags = tmp_path / "tags.csv"  # the same clips, found relative to another folder
    lines = ["filename,labels"]
    for name, labels in zip(relative, ["speech;zero", "speech", "one;speech"], strict=True):
        lines.append(f"{Path(digits_csv.parent, name).resolve()},{labels}")
    tags.write_text("\n".join(lines) + "\n")
    multi = read_audio_task(tags, {})
    assert multi is not None and multi.kind == "multilabel"
    assert multi.classes == ("one", "speech", "zero")
    assert [i.target for i in multi.items] == [(1, 2), (1,), (0, 1)]
    assert all(i.group is None for i in multi.items)


def test_csv_that_is_not_audio_is_left_to_other_domains(tmp_path: Path) -> None:
    images = tmp_path / "chips.csv"
    images.write_text("file,label,group\nchips/a.tif,forest,t1\n")
    volumes = tmp_path / "cases.csv"
    volumes.write_text("image,label\ncase1.nii.gz,seg1.nii.gz\n")
    assert read_audio_task(images, {"window": "64"}) is None
    assert read_audio_task(volumes, {}) is None
    assert read_audio_task(tmp_path, {}) is None  # a folder without task_metadata.json


def test_broken_csv_of_clips_names_the_file_and_line(digits_csv: Path, tmp_path: Path) -> None:
    good = digits_csv.read_text().splitlines()
    broken = tmp_path / "broken.csv"
    broken.write_text("\n".join([*good[:3], "missing/9_nobody_0.wav,9,nobody"]) + "\n")
    with pytest.raises(ValueError, match=r"broken\.csv, line 4: .*9_nobody_0\.wav does not exist"):
        read_audio_task(broken, {})
    unlabeled = tmp_path / "unlabeled.csv"
    unlabeled.write_text("\n".join([*good[:2], good[2].rsplit(",", 2)[0] + ",,george"]) + "\n")
    with pytest.raises(ValueError, match=r"unlabeled\.csv, line 3: .*has no label"):
        read_audio_task(unlabeled, {})
    twice = tmp_path / "twice.csv"
    twice.write_text("\n".join([good[0], good[1], good[-1], good[1]]) + "\n")
    with pytest.raises(ValueError, match="listed twice"):
        read_audio_task(twice, {})


def test_hear_kfold_scene_task(hear_scene_factory: Callable[[str], Path]) -> None:
    folder = hear_scene_factory("presplit_kfold")
    task = read_audio_task(folder, {})
    assert task is not None
    assert (task.name, task.kind) == ("digits_scene", "classification")
    assert task.classes == tuple(str(d) for d in range(10))
    assert len(task.items) == 40 and task.metadata["sample_rate"] == 16000
    assert len(task.folds) == 2 and task.folds[0].isdisjoint(task.folds[1])
    assert task.folds[0] | task.folds[1] == {i.key for i in task.items}
    for item in task.items:  # fold00 holds george, fold01 jackson
        digit, speaker, _ = item.inputs[0].stem.split("_")
        assert item.target == int(digit)
        assert item.key.startswith("fold00/" if speaker == "george" else "fold01/")
        assert item.key in task.folds[0 if speaker == "george" else 1]
        assert item.inputs[0].parent == folder / "16000" / item.key.split("/")[0]
    # the metadata file itself names the task too; an unknown rate is refused
    same = read_audio_task(folder / "task_metadata.json", {"sample_rate": "16000"})
    assert same is not None and same.items == task.items
    with pytest.raises(ValueError, match="sample_rate=48000: the task has audio at"):
        read_audio_task(folder, {"sample_rate": "48000"})


def test_hear_trainvaltest_task_has_the_test_split_as_its_fold(
    hear_scene_factory: Callable[[str], Path],
) -> None:
    task = read_audio_task(hear_scene_factory("trainvaltest"), {})
    assert task is not None and len(task.items) == 40
    (test,) = task.folds
    assert test == {i.key for i in task.items if i.key.startswith("test/")}
    assert len(test) == 20 and all("jackson" in key for key in test)
    sides = {key.split("/")[0] for key in {i.key for i in task.items} - test}
    assert sides == {"train", "valid"}


def test_hear_event_task(hear_event_task: Path) -> None:
    task = read_audio_task(hear_event_task, {})
    assert task is not None and task.kind == "timestamps"
    assert task.classes == ("0", "1", "2", "3", "5", "6", "7", "8")
    assert len(task.items) == 4 and len(task.folds) == 2
    first = task.items[0]
    assert first.key == "fold00/sequence_0.wav"
    assert isinstance(first.target, tuple) and len(first.target) == 2
    zero, five = first.target
    assert isinstance(zero, Event) and isinstance(five, Event)
    assert (zero.label, five.label) == (0, 4)  # classes "0" and "5"
    assert zero.onset == pytest.approx(0.3) and five.onset == pytest.approx(1.6)
    assert 0.3 < zero.offset < 1.6 < five.offset < 3.0


def test_broken_hear_folders_name_the_file(
    hear_scene_factory: Callable[[str], Path], tmp_path: Path
) -> None:
    import shutil

    folder = shutil.copytree(hear_scene_factory("presplit_kfold"), tmp_path / "task")
    entries = json.loads((folder / "fold00.json").read_text())
    name = sorted(entries)[0]
    (folder / "16000" / "fold00" / name).unlink()
    with pytest.raises(ValueError, match=rf"fold00\.json: {name}: no audio file"):
        read_audio_task(folder, {})
    entries.pop(name)
    entries[sorted(entries)[0]] = ["eleven"]
    (folder / "fold00.json").write_text(json.dumps(entries))
    with pytest.raises(ValueError, match=r"label 'eleven' is not in labelvocabulary\.csv"):
        read_audio_task(folder, {})
    entries[sorted(entries)[0]] = ["1", "2"]
    (folder / "fold00.json").write_text(json.dumps(entries))
    with pytest.raises(ValueError, match="a multiclass task has one label per file"):
        read_audio_task(folder, {})
    meta = json.loads((folder / "task_metadata.json").read_text())
    (folder / "task_metadata.json").write_text(json.dumps({**meta, "split_mode": "random"}))
    with pytest.raises(ValueError, match=r"task_metadata\.json: split_mode 'random'"):
        read_audio_task(folder, {})
    with pytest.raises(ValueError, match="unknown --task-option label"):
        read_audio_task(folder, {"label": "digit"})
