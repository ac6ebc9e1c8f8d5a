"""The audio task specs ``domainfm benchmark --task`` reads: a CSV of clips, or a HEAR 2021
task folder.

**A CSV of clips** (``file,label[,group]``, a header row first): file paths relative to the
CSV, one clip per row. Columns are found by name (``file``/``filename``/``path``/``audio``,
``label``/``labels``/``class``/``category``, ``group``/``speaker``/``subject``/``session``)
or named with ``--task-option file=… label=… group=…`` (``group=`` with no value: no groups).
Classes are the label names, sorted. Several labels in a cell separated by ``;`` make the
task ``"multilabel"`` (the item's target: its sorted class indices), else it is
``"classification"``. A CSV is an audio task when its first clip has an audio suffix
(:data:`~domainfm.domains.audio.index.AUDIO_SUFFIXES`); any other CSV is left to the other
domains (``None``). The shipped spoken digits' ``metadata.csv`` (``file,digit,speaker,take``)
reads with ``--task-option label=digit`` (its ``speaker`` column is found as the group).

**A HEAR 2021 task folder** (hear-preprocess's output, read as hear-eval-kit reads it):
``task_metadata.json`` (``embedding_type`` ``scene``/``event``, ``prediction_type``
``multiclass``/``multilabel``, ``split_mode``, ``splits``, ``sample_duration``),
``labelvocabulary.csv`` (``idx,label``), one ``{split}.json`` per split mapping each file
name to its labels (scene tasks) or to its events ``{"label", "start", "end"}`` in
milliseconds (event tasks), and the audio under ``{sample_rate}/{split}/{file}``.

* Scene tasks are ``"classification"`` (``multiclass``: exactly one label per file) or
  ``"multilabel"``; event tasks are ``"timestamps"``, each item's target the tuple of its
  :class:`~domainfm.tasks.benchmark.task.Event` s in seconds.
* Folds: ``new_split_kfold`` / ``presplit_kfold`` tasks keep their folds (``fold00`` …), one
  :attr:`~domainfm.tasks.benchmark.task.BenchmarkTask.folds` entry each. A ``trainvaltest``
  task has one fold, its ``test`` split: ``train`` and ``valid`` together are the training
  side (the benchmark tunes no hyper-parameters on a validation split).
* The audio of one rate is used: ``--task-option sample_rate=HZ``, else 16000 Hz when the
  folder has it (the domain's default rate), else the highest rate it has; items are
  resampled to the model's rate when read.
* HEAR records no groups (its splits were made by hear-preprocess's split keys), so items
  have none; keys are ``{split}/{file}``.

Example::

    >>> task = read_audio_task(Path("fsdd/metadata.csv"), {"label": "digit"})
    >>> task.kind, task.classes[:3], task.items[0].group
    ('classification', ('0', '1', '2'), 'george')
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from domainfm.domains.audio.index import AUDIO_SUFFIXES
from domainfm.tasks.benchmark.task import BenchmarkTask, Event, LabeledItem, TaskKind

FILE_COLUMNS = ("file", "filename", "path", "audio", "audio_path", "fname")
LABEL_COLUMNS = ("label", "labels", "class", "category", "target")
GROUP_COLUMNS = ("group", "speaker", "speaker_id", "subject", "session")
LABEL_SEPARATOR = ";"
CSV_OPTIONS = ("file", "label", "group")
HEAR_OPTIONS = ("sample_rate",)
HEAR_METADATA = "task_metadata.json"
HEAR_VOCABULARY = "labelvocabulary.csv"
HEAR_SPLIT_MODES = ("trainvaltest", "new_split_kfold", "presplit_kfold")
DEFAULT_RATE = 16000
GENERIC_STEMS = ("metadata", "labels", "clips", "index", "data")
"""CSV names too generic to name a task: the folder's name is used instead."""


def read_audio_task(spec: Path, options: Mapping[str, str]) -> BenchmarkTask | None:
    """The task ``spec`` describes when it is a HEAR task folder (or its
    ``task_metadata.json``) or a CSV of audio clips, else ``None``.

    Raises:
        ValueError: naming the file, for a spec of one of these formats that is broken
            (missing files or columns, unknown labels, …), or an option the format does not
            take.
    """
    spec = Path(spec)
    if spec.is_dir() and (spec / HEAR_METADATA).is_file():
        return read_hear_task(spec, options)
    if spec.is_file() and spec.name == HEAR_METADATA:
        return read_hear_task(spec.parent, options)
    if spec.is_file() and spec.suffix.lower() == ".csv":
        return read_clip_csv(spec, options)
    return None


def _check_options(options: Mapping[str, str], known: Sequence[str], source: Path) -> None:
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(
            f"{source}: unknown --task-option {', '.join(unknown)} for this task format; "
            f"known: {', '.join(known)}"
        )


def _column(
    columns: Sequence[str], options: Mapping[str, str], key: str, aliases: Sequence[str]
) -> str | None:
    """The column ``options[key]`` names (``None`` when it names none, or ``""``), else the
    first of ``aliases`` present (any case), else ``None``."""
    if key in options:
        return options[key] if options[key] in columns else None
    lower = {c.lower(): c for c in columns}
    return next((lower[a] for a in aliases if a in lower), None)


def _is_audio(name: str) -> bool:
    return Path(name.strip()).suffix.lower() in AUDIO_SUFFIXES


def read_clip_csv(spec: Path, options: Mapping[str, str]) -> BenchmarkTask | None:
    """A CSV of clips (see the module docstring); ``None`` when its files are not audio."""
    try:
        with open(spec, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = list(reader.fieldnames or [])
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error):
        return None  # not a text table this domain can tell is its own
    file_column = _column(columns, options, "file", FILE_COLUMNS)
    if file_column is None or not rows or not _is_audio(rows[0].get(file_column) or ""):
        return None
    _check_options(options, CSV_OPTIONS, spec)
    label_column = _column(columns, options, "label", LABEL_COLUMNS)
    if label_column is None:
        looked = repr(options["label"]) if "label" in options else "/".join(LABEL_COLUMNS)
        raise ValueError(
            f"{spec}: no label column {looked} among {columns}; name it with "
            "--task-option label=COLUMN"
        )
    group_column = _column(columns, options, "group", GROUP_COLUMNS)
    if options.get("group") and group_column is None:
        raise ValueError(f"{spec}: no group column {options['group']!r} among {columns}")
    clips: list[tuple[str, Path, tuple[str, ...], str | None]] = []
    for line, row in enumerate(rows, start=2):
        name = (row.get(file_column) or "").strip()
        where = f"{spec}, line {line}"
        if not _is_audio(name):
            raise ValueError(
                f"{where}: {name!r} is not an audio file ({', '.join(AUDIO_SUFFIXES)})"
            )
        path = spec.parent / name
        if not path.is_file():
            raise ValueError(f"{where}: {path} does not exist")
        labels = tuple(
            sorted({v.strip() for v in (row.get(label_column) or "").split(LABEL_SEPARATOR)} - {""})
        )
        if not labels:
            raise ValueError(f"{where}: {name} has no label in column {label_column!r}")
        group = (row.get(group_column) or "").strip() if group_column else ""
        clips.append((Path(name).as_posix(), path, labels, group or None))
    classes = tuple(sorted({label for _, _, labels, _ in clips for label in labels}))
    index = {name: k for k, name in enumerate(classes)}
    multilabel = any(len(labels) > 1 for _, _, labels, _ in clips)
    items = tuple(
        LabeledItem(
            key=key,
            inputs=(path,),
            target=tuple(index[v] for v in labels) if multilabel else index[labels[0]],
            group=group,
        )
        for key, path, labels, group in clips
    )
    return BenchmarkTask(
        name=spec.parent.name if spec.stem.lower() in GENERIC_STEMS else spec.stem,
        domain="audio",
        kind="multilabel" if multilabel else "classification",
        classes=classes,
        items=items,
        source=spec,
        metadata={
            "format": "csv",
            "file_column": file_column,
            "label_column": label_column,
            "group_column": group_column,
        },
    )


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise ValueError(f"{path}: missing (a HEAR task folder has one)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{path}: unreadable JSON ({err})") from None


def _hear_metadata(folder: Path) -> dict[str, Any]:
    """``task_metadata.json``, checked; ``splits`` filled in as hear-preprocess derives them
    when absent."""
    path = folder / HEAR_METADATA
    meta = _read_json(path)
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object")
    expected = {
        "embedding_type": ("scene", "event"),
        "prediction_type": ("multiclass", "multilabel"),
        "split_mode": HEAR_SPLIT_MODES,
    }
    for key, allowed in expected.items():
        if meta.get(key) not in allowed:
            raise ValueError(f"{path}: {key} {meta.get(key)!r}; expected one of {allowed}")
    if "splits" not in meta:
        if meta["split_mode"] == "trainvaltest":
            meta["splits"] = ["train", "valid", "test"]
        elif isinstance(meta.get("nfolds"), int):
            meta["splits"] = [f"fold{k:02d}" for k in range(meta["nfolds"])]
    splits = meta.get("splits")
    if not isinstance(splits, list) or not splits or not all(isinstance(s, str) for s in splits):
        raise ValueError(f"{path}: splits {splits!r}; expected a list of split names")
    if meta["split_mode"] == "trainvaltest" and "test" not in splits:
        raise ValueError(f"{path}: a trainvaltest task needs a 'test' split, got {splits}")
    return meta


def _hear_vocabulary(folder: Path) -> tuple[str, ...]:
    """Class names by index from ``labelvocabulary.csv`` (``idx,label``)."""
    path = folder / HEAR_VOCABULARY
    if not path.is_file():
        raise ValueError(f"{path}: missing (a HEAR task folder has one)")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not {"idx", "label"} <= set(reader.fieldnames or []):
            raise ValueError(f"{path}: expected columns idx,label; got {reader.fieldnames}")
        try:
            by_index = {int(row["idx"]): str(row["label"]) for row in reader}
        except ValueError as err:
            raise ValueError(f"{path}: an idx is not an integer ({err})") from None
    if sorted(by_index) != list(range(len(by_index))):
        raise ValueError(f"{path}: idx must be 0..{len(by_index) - 1}, got {sorted(by_index)}")
    return tuple(by_index[k] for k in range(len(by_index)))


def _hear_rate(folder: Path, options: Mapping[str, str]) -> int:
    """The sample-rate folder to read (see the module docstring)."""
    rates = sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())
    if "sample_rate" in options:
        wanted = options["sample_rate"]
        if not wanted.isdigit() or int(wanted) not in rates:
            raise ValueError(
                f"{folder}: --task-option sample_rate={wanted}: the task has audio at {rates}"
            )
        return int(wanted)
    if not rates:
        raise ValueError(f"{folder}: no audio folder named by its sample rate (e.g. 16000/)")
    return DEFAULT_RATE if DEFAULT_RATE in rates else rates[-1]


def _hear_target(
    labels: Any, meta: Mapping[str, Any], index: Mapping[str, int], where: str
) -> int | tuple[int, ...] | tuple[Event, ...]:
    """One file's target from its ``{split}.json`` entry."""

    def class_of(label: Any) -> int:
        if str(label) not in index:
            raise ValueError(f"{where}: label {label!r} is not in {HEAR_VOCABULARY}")
        return index[str(label)]

    if not isinstance(labels, list):
        raise ValueError(f"{where}: expected a list of labels or events, got {labels!r}")
    if meta["embedding_type"] == "event":
        events = []
        for event in labels:
            try:
                onset, offset = float(event["start"]) / 1000.0, float(event["end"]) / 1000.0
                label = event["label"]
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(f"{where}: bad event {event!r} ({err!r})") from None
            if not 0.0 <= onset <= offset:
                raise ValueError(f"{where}: event {event!r} does not start before it ends")
            events.append(Event(onset, offset, class_of(label)))
        return tuple(sorted(events, key=lambda e: (e.onset, e.offset, e.label)))
    classes = sorted({class_of(label) for label in labels})
    if meta["prediction_type"] == "multilabel":
        return tuple(classes)
    if len(classes) != 1:
        raise ValueError(f"{where}: a multiclass task has one label per file, got {labels!r}")
    return classes[0]


def read_hear_task(folder: Path, options: Mapping[str, str]) -> BenchmarkTask:
    """A HEAR 2021 task folder (see the module docstring)."""
    _check_options(options, HEAR_OPTIONS, folder)
    meta = _hear_metadata(folder)
    classes = _hear_vocabulary(folder)
    index = {name: k for k, name in enumerate(classes)}
    rate = _hear_rate(folder, options)
    items: list[LabeledItem] = []
    folds: list[frozenset[str]] = []
    for split in meta["splits"]:
        split_path = folder / f"{split}.json"
        entries = _read_json(split_path)
        if not isinstance(entries, dict):
            raise ValueError(f"{split_path}: expected an object mapping file names to labels")
        keys = []
        for name, labels in sorted(entries.items()):
            audio = folder / str(rate) / split / name
            if not audio.is_file():
                raise ValueError(f"{split_path}: {name}: no audio file {audio}")
            target = _hear_target(labels, meta, index, f"{split_path}: {name}")
            keys.append(f"{split}/{name}")
            items.append(LabeledItem(key=keys[-1], inputs=(audio,), target=target))
        if meta["split_mode"] != "trainvaltest" or split == "test":
            folds.append(frozenset(keys))
    kind: TaskKind
    if meta["embedding_type"] == "event":
        kind = "timestamps"
    else:
        kind = "multilabel" if meta["prediction_type"] == "multilabel" else "classification"
    return BenchmarkTask(
        name=str(meta.get("task_name") or folder.name),
        domain="audio",
        kind=kind,
        classes=classes,
        items=tuple(items),
        source=folder,
        folds=tuple(folds),
        metadata={
            "format": "hear",
            "sample_rate": rate,
            **{
                k: meta.get(k)
                for k in ("embedding_type", "prediction_type", "split_mode", "splits")
            },
            "sample_duration": meta.get("sample_duration"),
        },
    )
