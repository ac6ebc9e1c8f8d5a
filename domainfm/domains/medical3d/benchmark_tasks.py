"""The segmentation tasks ``domainfm benchmark`` reads for CT/MRI volumes, from the specs users
already have (:func:`read_volume_task`):

* a Medical Segmentation Decathlon or nnU-Net v2 ``dataset.json``, or its dataset folder
  (parsed by :mod:`~domainfm.domains.medical3d.dataset_json`);
* a CSV ``image,label[,group]``: paths relative to the CSV, the channel files of one case
  separated by ``;`` in ``image``. A CSV whose images are not NIfTI files or DICOM series
  folders is another domain's (``None``). Class names come from ``classes=``, else from the
  label values found in the label maps (each read once).

Every task is ``"segmentation"``: classes are the label names ordered by value (background,
value 0, first); ``metadata["label_map"]`` maps raw label values to class indices (other
values are background, as in :func:`~domainfm.domains.medical3d.labeled_volumes.remap_labels`).
An item's key is its case id (the CSV: its ``image`` field), its group the case id (or the
``group=`` mapping's patient; the CSV: its ``group`` column). Every file is checked to exist
when the task is read; the volumes are read by the hooks.

Options (``--task-option KEY=VALUE``, :data:`TASK_OPTIONS`):

* ``modality=ct|mri``: default ``ct`` when every channel is named CT, else ``mri`` (the CSV:
  the first image's modality hint, :func:`~domainfm.domains.medical3d.io.load_volume`);
* ``channels=FLAIR,T1c``: the channels kept, by name or index (e.g. for a one-channel
  backbone);
* ``classes=background,tumour``: the CSV's class names of label values 0, 1, ...;
* ``group=cases.csv``: a ``case,group`` CSV mapping cases to patients (``dataset.json``);
* ``spacing=MM`` / ``roi=VOXELS`` (one value or three): the preprocessing of backbones without
  an input contract (defaults: the data modules');
* ``geometry=sform|qform``: for NIfTI files whose qform and sform disagree.

Example::

    >>> task = read_volume_task(Path("Task02_Heart/dataset.json"), {"spacing": "2"})
    >>> task.kind, task.classes, task.items[0].key
    ('segmentation', ('background', 'left atrium'), 'la_003')
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from domainfm.core.grid import to_ntuple
from domainfm.domains.medical3d.contract import check_spacing
from domainfm.domains.medical3d.dataset_json import (
    DATASET_JSON,
    channel_names,
    label_classes,
    msd_cases,
    nnunet_cases,
    read_dataset_json,
)
from domainfm.domains.medical3d.io import load_volume
from domainfm.domains.medical3d.nifti import is_nifti
from domainfm.domains.medical3d.volume_types import check_geometry_choice
from domainfm.tasks.benchmark.task import BenchmarkTask, LabeledItem

TASK_OPTIONS = ("modality", "channels", "classes", "group", "spacing", "roi", "geometry")
"""The ``--task-option`` keys of volume tasks (module docstring)."""


def read_volume_task(spec: Path, options: Mapping[str, str]) -> BenchmarkTask | None:
    """The task ``spec`` describes when it is one of the formats of the module docstring
    (a ``dataset.json``, its dataset folder, or a CSV of volumes), else ``None``.

    Raises:
        ValueError: naming the file, for a spec of these formats that is broken (missing
            files, unknown channels or labels, region labels, 4D images) or an unknown option.
    """
    spec = Path(spec)
    source = spec / DATASET_JSON if spec.is_dir() else spec
    if source.suffix.lower() == ".json" and source.is_file():
        data = read_dataset_json(source)
        if data is None:
            return None
        return _dataset_task(source, data, _checked_options(options, source))
    if source.suffix.lower() == ".csv" and source.is_file():
        rows = _csv_rows(source)
        if rows is None:
            return None
        return _csv_task(source, rows, _checked_options(options, source))
    return None


def _checked_options(options: Mapping[str, str], source: Path) -> dict[str, Any]:
    """The options, checked before any volume is read: known keys, ``modality``,
    ``spacing``, ``roi`` and ``geometry`` parsed (``None`` where not given)."""
    unknown = sorted(set(options) - set(TASK_OPTIONS))
    if unknown:
        raise ValueError(
            f"{source}: unknown --task-option {', '.join(unknown)} for a volume task "
            f"(known: {', '.join(TASK_OPTIONS)})"
        )
    parsed: dict[str, Any] = dict(options)
    if options.get("modality") not in (None, "ct", "mri"):
        raise ValueError(
            f"{source}: --task-option modality must be ct or mri, got {options['modality']!r}"
        )
    try:
        if "spacing" in options:
            parsed["spacing"] = check_spacing(_numbers(options["spacing"]), what="spacing")
        if "roi" in options:
            parsed["roi"] = to_ntuple(_ints(options["roi"]), 3, name="roi")
        parsed["geometry"] = check_geometry_choice(options.get("geometry") or "strict")
    except ValueError as err:
        raise ValueError(f"{source}: --task-option {err}") from None
    return parsed


def _dataset_task(source: Path, data: Mapping[str, Any], options: dict[str, Any]) -> BenchmarkTask:
    root = source.parent
    channels = channel_names(source, data.get("channel_names", data.get("modality")))
    classes, label_map, ignore_index = label_classes(source, data["labels"])
    if isinstance(data.get("training"), list):
        fmt, cases = "msd", msd_cases(source, data["training"], len(channels))
    else:
        fmt, cases = "nnunet", nnunet_cases(source, data, len(channels))
    keep = _kept_channels(source, channels, options.get("channels"))
    groups = _group_mapping(source, options.get("group"), cases)
    items = tuple(
        LabeledItem(
            key=case,
            inputs=tuple(_existing(source, root, images[i]) for i in keep),
            target=_existing(source, root, label),
            group=groups.get(case, case),
        )
        for case, (images, label) in cases.items()
    )
    default = "ct" if all(name.upper() == "CT" for name in channels) else "mri"
    return BenchmarkTask(
        name=str(data.get("name") or root.name),
        domain="medical3d",
        kind="segmentation",
        classes=classes,
        items=items,
        source=source,
        ignore_index=ignore_index,
        metadata=_metadata(options, fmt, [channels[i] for i in keep], default, label_map),
    )


def _existing(source: Path, root: Path, path: str) -> Path:
    found = Path(path) if Path(path).is_absolute() else root / path
    if not found.exists():
        raise ValueError(f"{source}: {path} does not exist ({found})")
    if not (is_nifti(found) or found.is_dir()):
        raise ValueError(
            f"{source}: {path} is not a NIfTI file (.nii.gz, .nii) or a DICOM series folder"
        )
    return found


def _kept_channels(source: Path, names: Sequence[str], option: str | None) -> list[int]:
    """Indices of the channels ``channels=`` names (names or indices), all by default."""
    if not option:
        return list(range(len(names)))
    keep = []
    for part in (p.strip() for p in option.split(",")):
        if part in names:
            keep.append(list(names).index(part))
        elif part.isdigit() and int(part) < len(names):
            keep.append(int(part))
        else:
            raise ValueError(
                f"{source}: --task-option channels: no channel {part!r} (channels: "
                f"{', '.join(names)})"
            )
    return keep


def _group_mapping(source: Path, option: str | None, cases: Mapping[str, Any]) -> dict[str, str]:
    """case → patient from the ``group=`` CSV (columns ``case,group``); ``{}`` without it."""
    if not option:
        return {}
    path = Path(option).expanduser()
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as err:
        raise ValueError(f"--task-option group={option}: cannot read it ({err})") from None
    if not rows or not {"case", "group"} <= set(rows[0]):
        raise ValueError(f"{path}: a group mapping needs the columns case,group")
    mapping = {r["case"]: r["group"] for r in rows if r.get("case") and r.get("group")}
    missing = sorted(set(cases) - set(mapping))
    if missing:
        raise ValueError(
            f"{path}: no group for {len(missing)} cases of {source} (e.g. {', '.join(missing[:3])})"
        )
    return mapping


def _csv_rows(source: Path) -> list[dict[str, str]] | None:
    """The rows of a CSV of volumes; ``None`` for another CSV (no ``image``/``label``
    columns, or a first image that is no NIfTI file or DICOM folder)."""
    try:
        with open(source, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    if not rows or not {"image", "label"} <= set(rows[0]):
        return None
    first = (rows[0]["image"] or "").split(";")[0].strip()
    path = source.parent / first
    return rows if first and (is_nifti(path) or path.is_dir()) else None


def _csv_task(source: Path, rows: list[dict[str, str]], options: dict[str, Any]) -> BenchmarkTask:
    if options.get("group"):
        raise ValueError(f"{source}: give groups in the CSV's group column, not group=")
    items = []
    for n, row in enumerate(rows, start=2):  # line numbers, after the header
        images = [p.strip() for p in (row["image"] or "").split(";") if p.strip()]
        if not images or not row["label"]:
            raise ValueError(f"{source}: line {n} needs an image and a label")
        items.append(
            LabeledItem(
                key=row["image"],
                inputs=tuple(_existing(source, source.parent, p) for p in images),
                target=_existing(source, source.parent, row["label"].strip()),
                group=(row.get("group") or "").strip() or None,
            )
        )
    counts = {len(item.inputs) for item in items}
    if len(counts) != 1:
        raise ValueError(f"{source}: the rows have different channel counts {sorted(counts)}")
    names = [f"channel{i}" for i in range(counts.pop())]
    keep = _kept_channels(source, names, options.get("channels"))
    items = [
        LabeledItem(
            key=i.key, inputs=tuple(i.inputs[k] for k in keep), target=i.target, group=i.group
        )
        for i in items
    ]
    classes, label_map = _csv_classes(source, items, options.get("classes"), options)
    modality = options.get("modality") or (  # the first image's hint
        load_volume(items[0].inputs[0], geometry=options["geometry"]).modality or "mri"
    )
    return BenchmarkTask(
        name=source.stem,
        domain="medical3d",
        kind="segmentation",
        classes=classes,
        items=tuple(items),
        source=source,
        metadata=_metadata(options, "csv", [names[k] for k in keep], modality, label_map),
    )


def _csv_classes(
    source: Path, items: Sequence[LabeledItem], option: str | None, options: Mapping[str, Any]
) -> tuple[tuple[str, ...], dict[int, int]]:
    """``classes=`` names of values 0, 1, ...; else the values in the label maps (each read
    once), named ``background`` (0) and by value."""
    if option:
        names = tuple(n.strip() for n in option.split(","))
        return names, {i: i for i in range(len(names))}
    values: set[int] = {0}
    for item in items:
        array = load_volume(
            Path(str(item.target)), allow_constant=True, geometry=options["geometry"]
        )
        found = np.unique(array.array)
        if not np.array_equal(found, np.rint(found)) or found.min() < 0:
            raise ValueError(
                f"{source}: label map {item.target} holds values that are no class ids"
            )
        values |= {int(v) for v in found}
    ordered = sorted(values)
    names = tuple("background" if v == 0 else str(v) for v in ordered)
    return names, {v: i for i, v in enumerate(ordered)}


def _metadata(
    options: Mapping[str, Any],
    fmt: str,
    channels: list[str],
    default_modality: str,
    label_map: Mapping[int, int],
) -> dict[str, Any]:
    """What the hooks read: the format, channels, modality, label map and the preprocessing
    options (``None``: the backbone's contract or the defaults decide)."""
    return {
        "headline": "dice",  # what the tables and plots lead with (Dice on whole volumes)
        "format": fmt,
        "channels": channels,
        "modality": options.get("modality") or default_modality,
        "label_map": dict(label_map),
        "spacing": options.get("spacing"),
        "roi": options.get("roi"),
        "geometry": options["geometry"],
    }


def _numbers(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"spacing: one or three mm values, got {text!r}") from None


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"roi: one or three voxel counts, got {text!r}") from None
    return values * 3 if len(values) == 1 else values
