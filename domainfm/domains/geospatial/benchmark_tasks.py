"""The geospatial task specs of ``domainfm benchmark``: which spec is one, and its items.

:func:`read_geospatial_task` recognizes three formats (anything else is ``None``, left to
other domains):

1. **Scene rasters and a label raster**: ``--task SCENE.tif --task-option labels=LABELS.tif``
   (``--task`` may be a folder or a glob of scenes: dates of one grid). The label raster
   must lie on the scenes' grid (CRS, transform, size), else it is refused naming both
   files. Items are windows (``window=32``) inside spatial blocks (``block=64``), one per
   window and date; an item's group is its block
   (:func:`~domainfm.domains.geospatial.benchmark_labels.label_windows`), so a split by
   group keeps every block on one side. ``target=pixels`` (default): segmentation of the
   window's pixels; ``target=scene``: classification by its dominant class.
2. **Chips and a CSV** ``file,label[,group]`` (paths relative to the CSV): a label that is a
   raster makes a segmentation chip (on its image's grid), else the label is a class name.
   A CSV whose files are not rasters (by suffix) is not geospatial: ``None``.
3. **A STAC catalog** (``catalog.json`` / ``collection.json``, or a folder holding one):
   :mod:`~domainfm.domains.geospatial.benchmark_stac`.

Unlabeled pixels (``ignore=`` values, a label raster's nodata) carry
:data:`~domainfm.domains.geospatial.benchmark_labels.UNLABELED`; windows or chips without a
labeled pixel are left out. Options: :mod:`~domainfm.domains.geospatial.benchmark_spec`.

Example::

    >>> task = read_geospatial_task(Path("s2_l1c_13band"), {"labels": "LULC.tif", "ignore": "0"})
    >>> task.kind, task.classes, len({i.group for i in task.items})
    ('segmentation', ('unlabeled', '1', '2', '3', '4', '8'), 4)
"""

from __future__ import annotations

import csv
import glob
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from domainfm.domains.geospatial.benchmark_labels import (
    ClassTable,
    label_windows,
    observed_values,
    value_key,
)
from domainfm.domains.geospatial.benchmark_spec import (
    COMMON_OPTIONS,
    STAC_NAMES,
    WINDOW_OPTIONS,
    TaskOptions,
    geospatial_task,
    is_raster,
    relative_key,
    window_items,
    window_task,
)
from domainfm.domains.geospatial.benchmark_stac import read_stac_task
from domainfm.domains.geospatial.raster_align import check_same_grid
from domainfm.domains.geospatial.raster_header import raster_info
from domainfm.domains.geospatial.raster_reader import RasterReader
from domainfm.tasks.benchmark.task import BenchmarkTask, LabeledItem, TaskKind

GLOB_CHARS = "*?["


def read_geospatial_task(spec: Path, options: Mapping[str, str]) -> BenchmarkTask | None:
    """The task ``spec`` describes when it is a geospatial format (module docstring), else
    ``None``.

    Raises:
        ValueError: naming the file, for a geospatial spec that is broken (missing or
            misaligned rasters, unknown label values, bad options).
    """
    text = str(spec)
    if any(c in text for c in GLOB_CHARS):
        scenes = [Path(p) for p in sorted(glob.glob(str(Path(text).expanduser())))]
        if not scenes or not all(is_raster(p) for p in scenes):
            return None
        return read_scene_task(spec, scenes, options, root=_glob_root(Path(text)))
    if spec.is_dir():
        for name in STAC_NAMES:
            if (spec / name).is_file():
                return read_stac_task(spec / name, options)
        scenes = sorted(p for p in spec.iterdir() if p.is_file() and is_raster(p))
        if not scenes or "labels" not in options:
            return None
        return read_scene_task(spec, scenes, options, root=spec)
    if not spec.is_file():
        return None
    suffix = spec.suffix.lower()
    if is_raster(spec):
        return read_scene_task(spec, [spec], options, root=spec.parent)
    if suffix == ".json" and _is_stac(spec):
        return read_stac_task(spec, options)
    if suffix == ".csv":
        return read_chip_task(spec, options)
    return None


def _glob_root(pattern: Path) -> Path:
    """The folders of a glob pattern before its first wildcard."""
    parts = []
    for part in pattern.expanduser().parts:
        if any(c in part for c in GLOB_CHARS):
            break
        parts.append(part)
    return Path(*parts) if parts else Path()


def _is_stac(path: Path) -> bool:
    if path.name in STAC_NAMES:
        return True
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and "stac_version" in data and data.get("type") != "Feature"


def read_scene_task(
    spec: Path, scenes: Sequence[Path], options: Mapping[str, str], *, root: Path
) -> BenchmarkTask:
    """Format 1: windows of ``scenes`` (dates of one grid) labeled by ``labels=``."""
    opts = TaskOptions.parse(options, allowed=WINDOW_OPTIONS | {"labels"}, source=spec)
    label = opts.path("labels", spec)
    if label is None:
        raise ValueError(
            f"{spec}: scene rasters need --task-option labels=LABELS.tif (a label raster on "
            "their grid)"
        )
    check_same_grid([*(raster_info(p) for p in scenes), raster_info(label)])
    windows = label_windows(label, window=opts.window, block=opts.block)
    table = ClassTable.build(
        observed_values(windows),
        source=label,
        declared=opts.declared_classes(spec),
        ignored=opts.ignore,
    )
    items = window_items(
        scenes=[(relative_key(p, root), p) for p in scenes],
        label=label,
        windows=windows,
        table=table,
        opts=opts,
        group=lambda w: f"block:{w.block[0]},{w.block[1]}",
    )
    return window_task(spec=spec, opts=opts, table=table, items=items, fmt="scene")


def _csv_rows(spec: Path) -> list[dict[str, str]] | None:
    """The CSV's rows when it has ``file`` and ``label`` columns, else ``None``."""
    try:
        with open(spec, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            fields = [f.strip().lower() for f in reader.fieldnames or []]
            if "file" not in fields or "label" not in fields:
                return None
            return [
                {k.strip().lower(): (v or "").strip() for k, v in row.items() if k is not None}
                for row in reader
            ]
    except (OSError, UnicodeDecodeError, csv.Error):
        return None


def read_chip_task(spec: Path, options: Mapping[str, str]) -> BenchmarkTask | None:
    """Format 2: chips listed in a CSV ``file,label[,group]``; ``None`` when its files are
    not rasters."""
    rows = _csv_rows(spec)
    if rows is None or not rows or not all(is_raster(r["file"]) for r in rows):
        return None
    opts = TaskOptions.parse(options, allowed=COMMON_OPTIONS, source=spec)
    root = spec.parent
    files = [_under(root, r["file"]) for r in rows]
    groups = [r.get("group") or None for r in rows]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ValueError(f"{spec}: chips listed but missing: {', '.join(missing[:3])}")
    labels = [r["label"] for r in rows]
    declared = opts.declared_classes(spec)
    items: list[LabeledItem] = []
    kind: TaskKind
    if labels and all(is_raster(label) for label in labels):
        masks = [_under(root, label) for label in labels]
        counts = _chip_values(spec, files, masks)
        table = ClassTable.build(
            set().union(*counts), source=spec, declared=declared, ignored=opts.ignore
        )
        for file, mask, group, found in zip(files, masks, groups, counts, strict=True):
            if any(table.index(v) is not None for v in found):
                key = relative_key(file, root)
                items.append(LabeledItem(key=key, inputs=(file,), target=mask, group=group))
        kind = "segmentation"
    else:
        table = ClassTable.build(labels, source=spec, declared=declared, ignored=opts.ignore)
        for file, label, group in zip(files, labels, groups, strict=True):
            cls = table.index(label)
            if cls is not None:
                key = relative_key(file, root)
                items.append(LabeledItem(key=key, inputs=(file,), target=cls, group=group))
        kind = "classification"
    return geospatial_task(
        spec=spec,
        kind=kind,
        table=table,
        items=items,
        metadata=opts.metadata(table, fmt="chips", window=None),
    )


def _under(root: Path, name: str) -> Path:
    """A CSV's path ``name`` (relative to the CSV's folder), normalized."""
    return Path(os.path.normpath(root / name))


def _chip_values(spec: Path, files: Sequence[Path], masks: Sequence[Path]) -> list[set[str]]:
    """The label values of each label chip (checked to lie on its chip's grid)."""
    reader = RasterReader()
    out = []
    try:
        for file, mask in zip(files, masks, strict=True):
            if not mask.is_file():
                raise ValueError(f"{spec}: label chip {mask} does not exist")
            check_same_grid([raster_info(file), reader.info(mask)])
            raster = reader.read(mask, None, [1], require_valid=False)
            out.append({value_key(v) for v in np.unique(raster.array[0][raster.mask])})
    finally:
        reader.close()
    return out
