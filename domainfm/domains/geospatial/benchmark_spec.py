"""What the geospatial task readers share: the ``--task-option`` values, a ``classes=`` file,
the items of a labeled raster's windows and the assembled :class:`BenchmarkTask`.

Options (``--task-option KEY=VALUE``; each format takes the keys it lists, another key is
refused by name):

* ``labels=LABELS.tif``: the label raster of scene rasters;
* ``window=32``: window side in pixels; ``block=64``: side of the spatial blocks that are the
  windows' groups (default twice the window; at least the window);
* ``ignore=0`` (or ``ignore=0,255``): label values that mark unlabeled pixels (a label
  raster's nodata always does);
* ``target=pixels`` (segmentation, default) or ``target=scene`` (classification by each
  window's dominant class);
* ``classes=FILE``: class names, a JSON object ``{"value": "name", …}`` (or a list of names,
  the value being the position) or a CSV of ``value,name`` rows, in class order;
* ``bands=B02,B03,B04``: the bands read when the backbone records no input contract;
* ``input_scale=10000``: factor on the raw values before a contract's ``"scale"`` /
  ``"mean_std"`` normalization (e.g. reflectance 0..1 into weights trained on digital
  numbers);
* STAC only: ``group=`` (``id``, ``block`` or an item property), ``image_asset=``,
  ``label_asset=``, ``label_property=``.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from domainfm.domains.geospatial.benchmark_labels import (
    UNLABELED,
    UNLABELED_NAME,
    ClassTable,
    LabeledWindow,
    dominant,
)
from domainfm.domains.geospatial.raster_header import RASTER_SUFFIXES
from domainfm.tasks.benchmark.task import BenchmarkTask, LabeledItem, TaskKind

DOMAIN = "geospatial"
COMMON_OPTIONS = frozenset({"ignore", "classes", "bands", "input_scale"})
"""Keys every geospatial task format takes."""
WINDOW_OPTIONS = COMMON_OPTIONS | {"window", "block", "target"}
"""Keys of the formats whose items are windows of label rasters."""
DEFAULT_WINDOW = 32
STAC_NAMES = ("catalog.json", "collection.json")
"""File names of a STAC catalog's root."""


@dataclass(frozen=True, kw_only=True)
class TaskOptions:
    """The parsed ``--task-option`` values (see the module docstring)."""

    values: Mapping[str, str]
    window: int = DEFAULT_WINDOW
    block: int = 2 * DEFAULT_WINDOW
    ignore: frozenset[str] = frozenset()
    target: Literal["pixels", "scene"] = "pixels"
    bands: tuple[str, ...] | None = None
    input_scale: float | None = None

    @classmethod
    def parse(
        cls, options: Mapping[str, str], *, allowed: Iterable[str], source: Path
    ) -> TaskOptions:
        """Check the keys against ``allowed`` and the values (``ValueError`` naming the
        option and ``source``)."""
        known = frozenset(allowed)
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(
                f"{source}: unknown --task-option {', '.join(unknown)} for this geospatial "
                f"task format; known: {', '.join(sorted(known))}"
            )
        window = _positive_int(options, "window", DEFAULT_WINDOW, source)
        block = _positive_int(options, "block", 2 * window, source)
        if block < window:
            raise ValueError(f"{source}: block={block} is smaller than window={window}")
        target = options.get("target", "pixels")
        if target not in ("pixels", "scene"):
            raise ValueError(f"{source}: target={target!r}: 'pixels' (segmentation) or 'scene'")
        scale = options.get("input_scale")
        try:
            input_scale = float(scale) if scale is not None else None
        except ValueError:
            input_scale = -1.0
        if input_scale is not None and not input_scale > 0:
            raise ValueError(f"{source}: input_scale={scale!r} must be a number > 0")
        return cls(
            values=dict(options),
            window=window,
            block=block,
            ignore=frozenset(_items(options.get("ignore"))),
            target="scene" if target == "scene" else "pixels",
            bands=tuple(_items(options["bands"])) if "bands" in options else None,
            input_scale=input_scale,
        )

    def path(self, key: str, source: Path) -> Path | None:
        """The file option ``key`` names (checked to exist), or ``None`` when not given."""
        if key not in self.values:
            return None
        found = Path(self.values[key]).expanduser()
        if not found.exists():
            raise ValueError(f"{source}: {key}={self.values[key]} does not exist")
        return found

    def declared_classes(self, source: Path) -> list[tuple[str, str]] | None:
        """The ``classes=`` file's ``(value, name)`` pairs, in order; ``None`` without one."""
        path = self.path("classes", source)
        return read_classes_file(path) if path is not None else None

    def metadata(self, table: ClassTable, *, fmt: str, window: int | None) -> dict[str, Any]:
        """The task's ``metadata``: format, window, bands, input scale and class values."""
        return {
            "format": fmt,
            "window": window,
            "bands": list(self.bands) if self.bands is not None else None,
            "input_scale": self.input_scale,
            **table.metadata(),
        }


def is_raster(path: Path | str) -> bool:
    """Whether ``path`` names a raster by its suffix."""
    return Path(path).suffix.lower() in RASTER_SUFFIXES


def _items(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _positive_int(options: Mapping[str, str], key: str, default: int, source: Path) -> int:
    text = options.get(key)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{source}: {key}={text!r} must be a whole number of pixels >= 1")
    return value


def read_classes_file(path: Path) -> list[tuple[str, str]]:
    """``(value, name)`` pairs of a classes file (JSON object or list, or CSV ``value,name``).

    Raises:
        ValueError: naming ``path`` when it is neither, or lists a value twice.
    """
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".json":
            data = json.loads(text)
            if isinstance(data, list):
                pairs = [(str(i), str(name)) for i, name in enumerate(data)]
            elif isinstance(data, dict):
                pairs = [(str(k), str(v)) for k, v in data.items()]
            else:
                raise ValueError("expected an object {value: name} or a list of names")
        else:
            rows = [r for r in csv.reader(text.splitlines()) if r]
            if rows and [c.strip().lower() for c in rows[0][:2]] == ["value", "name"]:
                rows = rows[1:]
            if any(len(r) < 2 for r in rows):
                raise ValueError("expected rows of value,name")
            pairs = [(r[0].strip(), r[1].strip()) for r in rows]
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{path}: not a classes file ({err})") from None
    values = [v for v, _ in pairs]
    twice = sorted({v for v in values if values.count(v) > 1})
    if twice:
        raise ValueError(f"{path}: class values listed twice: {twice}")
    return pairs


def relative_key(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` (an item key; ``..`` parts when outside it)."""
    try:
        return os.path.relpath(path, root)
    except ValueError:  # another drive
        return str(path)


def window_items(
    *,
    scenes: Sequence[tuple[str, Path]],
    label: Path,
    windows: Sequence[LabeledWindow],
    table: ClassTable,
    opts: TaskOptions,
    group: Callable[[LabeledWindow], str],
) -> list[LabeledItem]:
    """One item per window and scene (each date of the label's grid, with its name),
    windows without a labeled pixel left out: segmentation items point at ``label``,
    classification items hold the window's dominant class. Keys: ``NAME@row,col``."""
    items = []
    for w in windows:
        cls = dominant(w.labeled(table))
        if cls is None:
            continue
        for name, scene in scenes:
            items.append(
                LabeledItem(
                    key=f"{name}@{w.row},{w.col}",
                    inputs=(scene,),
                    target=label if opts.target == "pixels" else cls,
                    group=group(w),
                    region=(w.row, w.col, opts.window, opts.window),
                )
            )
    return items


def window_task(
    *, spec: Path, opts: TaskOptions, table: ClassTable, items: Sequence[LabeledItem], fmt: str
) -> BenchmarkTask:
    """The task of windows of label rasters (a scene's, a STAC item's): segmentation of their
    pixels, or classification by their dominant class (``target=scene``)."""
    return geospatial_task(
        spec=spec,
        kind="segmentation" if opts.target == "pixels" else "classification",
        table=table,
        items=items,
        metadata=opts.metadata(table, fmt=fmt, window=opts.window) | {"block": opts.block},
    )


def geospatial_task(
    *,
    spec: Path,
    kind: TaskKind,
    table: ClassTable,
    items: Sequence[LabeledItem],
    metadata: Mapping[str, Any],
) -> BenchmarkTask:
    """The task; segmentation's classes start with the unlabeled pixels' class
    (``ignore_index`` :data:`UNLABELED`).

    Raises:
        ValueError: naming ``spec`` when no item has a label.
    """
    if not items:
        raise ValueError(f"{spec}: no labeled item (every window or chip is unlabeled)")
    name = spec.parent.name if spec.name in STAC_NAMES else spec.stem
    return BenchmarkTask(
        name=name or str(spec),
        domain=DOMAIN,
        kind=kind,
        classes=(UNLABELED_NAME, *table.names) if kind == "segmentation" else table.names,
        items=tuple(items),
        source=spec,
        ignore_index=UNLABELED if kind == "segmentation" else None,
        metadata=dict(metadata),
    )
