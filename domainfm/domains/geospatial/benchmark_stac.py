"""A STAC catalog as a ``domainfm benchmark`` task, read with pystac.

``--task catalog.json`` (or ``collection.json``, or a folder holding one): every item of the
catalog (recursively) that carries labels is read; items that only hold imagery (the sources
of label items) are not items themselves.

* **Label rasters**: an item's label asset (option ``label_asset=KEY``, else the asset with
  the role ``"labels"``, else the key ``"labels"`` / ``"label"``) is a raster on the grid of
  its imagery: the item's own image asset (option ``image_asset=KEY``, else ``"image"``,
  else a raster asset with the role ``"data"``), or, as the STAC label extension links
  them, the image asset of each item its ``"source"`` links point to (several dates of one
  place). The label raster becomes windows in blocks as a scene's label raster does
  (:func:`~domainfm.domains.geospatial.benchmark_labels.label_windows`, ``window=``,
  ``block=``): segmentation (``target=pixels``) or classification by dominant class
  (``target=scene``).
* **Per-item classes**: an item without a label asset whose property (``label_property=``,
  else the first of its ``label:properties``) holds a class: its image asset is one chip of
  a classification task.

Classes: the ``classes=`` file, else the label asset's ``classification:classes``
(``value`` and ``name`` or ``description``; entries with ``"nodata": true`` are ignored
values), else the item's ``label:classes`` (values, their names as text), else the values
found. Group: the item's id (default, ``group=id``), its spatial blocks (``group=block``,
label rasters only) or the value of an item property (``group=PROPERTY``). Assets must be
local files (relative hrefs resolve against the catalog).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pystac

from domainfm.domains.geospatial.benchmark_labels import (
    ClassTable,
    LabeledWindow,
    label_windows,
    observed_values,
)
from domainfm.domains.geospatial.benchmark_spec import (
    WINDOW_OPTIONS,
    TaskOptions,
    geospatial_task,
    is_raster,
    window_items,
    window_task,
)
from domainfm.domains.geospatial.raster_align import check_same_grid
from domainfm.domains.geospatial.raster_header import raster_info
from domainfm.tasks.benchmark.task import BenchmarkTask, LabeledItem

STAC_OPTIONS = WINDOW_OPTIONS | {"group", "image_asset", "label_asset", "label_property"}


@dataclass(frozen=True)
class _Labeled:
    """One labeled item: its imagery (named by key), and its label raster or class value."""

    item: pystac.Item
    scenes: tuple[tuple[str, Path], ...]
    label: Path | None
    value: str | None
    declared: list[tuple[str, str]] | None
    ignored: frozenset[str]


def read_stac_task(spec: Path, options: Mapping[str, str]) -> BenchmarkTask:
    """The task of the catalog ``spec`` (see the module docstring).

    Raises:
        ValueError: naming the catalog (and the item), for an unreadable catalog, remote or
            missing assets, labels off their imagery's grid, or no labeled item.
    """
    opts = TaskOptions.parse(options, allowed=STAC_OPTIONS, source=spec)
    try:
        root = pystac.read_file(str(spec))
        if not isinstance(root, pystac.Catalog):
            raise ValueError(f"a {type(root).__name__}, not a catalog or collection")
        items = list(root.get_items(recursive=True))
    except (pystac.STACError, OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{spec}: not a readable STAC catalog ({err})") from None
    labeled = [found for item in items if (found := _labeled(spec, item, opts)) is not None]
    if not labeled:
        raise ValueError(
            f"{spec}: no item carries a label asset (role 'labels') or a class property "
            "(label:properties, or --task-option label_property=)"
        )
    rasters = [x for x in labeled if x.label is not None]
    if rasters and len(rasters) != len(labeled):
        raise ValueError(
            f"{spec}: items mix label rasters and class properties; give one kind of labels"
        )
    declared = opts.declared_classes(spec)
    if declared is None:
        declared = next((x.declared for x in labeled if x.declared is not None), None)
    ignored = opts.ignore.union(*(x.ignored for x in labeled))
    if rasters:
        return _window_task(spec, opts, rasters, declared, ignored)
    table = ClassTable.build(
        [x.value for x in labeled if x.value is not None],
        source=spec,
        declared=declared,
        ignored=ignored,
    )
    if opts.values.get("group") == "block":
        raise ValueError(f"{spec}: group=block needs label rasters (items here are chips)")
    chips = []
    for x in labeled:
        cls = table.index(x.value or "")
        if cls is not None:
            group = _group(spec, x.item, opts)
            for key, scene in x.scenes:
                chips.append(LabeledItem(key=key, inputs=(scene,), target=cls, group=group))
    return geospatial_task(
        spec=spec,
        kind="classification",
        table=table,
        items=chips,
        metadata=opts.metadata(table, fmt="stac", window=None),
    )


def _window_task(
    spec: Path,
    opts: TaskOptions,
    rasters: Sequence[_Labeled],
    declared: list[tuple[str, str]] | None,
    ignored: frozenset[str],
) -> BenchmarkTask:
    """The windows of the items' label rasters over their imagery (segmentation or, with
    ``target=scene``, classification)."""
    windows: list[list[LabeledWindow]] = []
    for x in rasters:
        assert x.label is not None
        check_same_grid([*(raster_info(p) for _, p in x.scenes), raster_info(x.label)])
        windows.append(label_windows(x.label, window=opts.window, block=opts.block))
    found = set().union(*(observed_values(w) for w in windows))
    table = ClassTable.build(found, source=spec, declared=declared, ignored=ignored)
    items: list[LabeledItem] = []
    for x, item_windows in zip(rasters, windows, strict=True):
        assert x.label is not None
        items += window_items(
            scenes=x.scenes,
            label=x.label,
            windows=item_windows,
            table=table,
            opts=opts,
            group=_window_group(spec, x.item, opts),
        )
    return window_task(spec=spec, opts=opts, table=table, items=items, fmt="stac")


def _window_group(
    spec: Path, item: pystac.Item, opts: TaskOptions
) -> Callable[[LabeledWindow], str]:
    """The group of an item's windows: their block (``group=block``), else the item's."""
    if opts.values.get("group") == "block":
        return lambda w: f"{item.id}:block:{w.block[0]},{w.block[1]}"
    group = _group(spec, item, opts)
    return lambda w: group


def _group(spec: Path, item: pystac.Item, opts: TaskOptions) -> str:
    name = opts.values.get("group", "id")
    if name == "id":
        return item.id
    if name not in item.properties:
        raise ValueError(f"{spec}: item {item.id!r} has no property {name!r} (group={name})")
    return str(item.properties[name])


def _labeled(spec: Path, item: pystac.Item, opts: TaskOptions) -> _Labeled | None:
    """The item's labels and imagery; ``None`` for an item without labels."""
    label_key = _label_key(item, opts)
    value = None
    if label_key is None:
        prop = opts.values.get("label_property") or next(
            iter(item.properties.get("label:properties") or []), None
        )
        if prop is None or prop not in item.properties:
            return None
        value = str(item.properties[prop])
    if label_key is not None and not _is_raster(item.assets[label_key]):
        raise ValueError(
            f"{spec}: item {item.id!r}: label asset {label_key!r} is not a raster "
            f"({item.assets[label_key].href}); vector labels are not read"
        )
    scenes = _scenes(spec, item, opts, label_key)
    label = _local(spec, item, label_key) if label_key is not None else None
    declared, ignored = _declared(item, label_key)
    return _Labeled(item, tuple(scenes), label, value, declared, ignored)


def _label_key(item: pystac.Item, opts: TaskOptions) -> str | None:
    key = opts.values.get("label_asset")
    if key is not None:
        return key if key in item.assets else None
    for name, asset in item.assets.items():
        if "labels" in (asset.roles or []):
            return name
    return next((k for k in ("labels", "label") if k in item.assets), None)


def _image_key(item: pystac.Item, opts: TaskOptions, label_key: str | None) -> str | None:
    key = opts.values.get("image_asset")
    if key is not None:
        return key if key in item.assets else None
    if "image" in item.assets:
        return "image"
    return next(
        (
            name
            for name, asset in item.assets.items()
            if name != label_key and "data" in (asset.roles or []) and _is_raster(asset)
        ),
        None,
    )


def _scenes(
    spec: Path, item: pystac.Item, opts: TaskOptions, label_key: str | None
) -> list[tuple[str, Path]]:
    """The item's own image asset (named by the item's id), else those of the items its
    ``source`` links name (named ``ITEM:SOURCE``)."""
    own = _image_key(item, opts, label_key)
    if own is not None:
        return [(item.id, _local(spec, item, own))]
    scenes = []
    for link in item.get_links("source"):
        try:
            source = link.resolve_stac_object(root=item.get_root()).target
        except (pystac.STACError, OSError, ValueError) as err:
            raise ValueError(f"{spec}: item {item.id!r}: source {link.href} ({err})") from None
        if isinstance(source, pystac.Item):
            key = _image_key(source, opts, None)
            if key is not None:
                scenes.append((f"{item.id}:{source.id}", _local(spec, source, key)))
    if not scenes:
        raise ValueError(
            f"{spec}: item {item.id!r} has labels but no image asset ('image', role 'data', "
            "or image_asset=) and no source item with one"
        )
    return scenes


def _is_raster(asset: pystac.Asset) -> bool:
    return "tiff" in (asset.media_type or "").lower() or is_raster(asset.href)


def _local(spec: Path, item: pystac.Item, key: str) -> Path:
    href = item.assets[key].get_absolute_href() or item.assets[key].href
    if "://" in href and not href.startswith("file://"):
        raise ValueError(
            f"{spec}: item {item.id!r} asset {key!r} is remote ({href}); benchmark reads local "
            "files: download the assets first"
        )
    path = Path(href.removeprefix("file://"))
    if not path.is_file():
        raise ValueError(f"{spec}: item {item.id!r} asset {key!r}: {path} does not exist")
    return path


def _declared(
    item: pystac.Item, label_key: str | None
) -> tuple[list[tuple[str, str]] | None, frozenset[str]]:
    """The classes an item declares (``classification:classes`` of its label asset, else its
    ``label:classes``) and the values they mark as nodata."""
    fields = item.assets[label_key].extra_fields if label_key is not None else {}
    entries = fields.get("classification:classes") or item.properties.get("classification:classes")
    if isinstance(entries, list) and entries:
        nodata = frozenset(_text(e.get("value")) for e in entries if e.get("nodata"))
        pairs = [
            (_text(e.get("value")), str(e.get("name") or e.get("description") or e.get("value")))
            for e in entries
            if not e.get("nodata")
        ]
        return pairs, nodata
    label_classes = item.properties.get("label:classes")
    if isinstance(label_classes, list) and label_classes:
        values = [_text(v) for v in label_classes[0].get("classes", [])]
        return [(v, v) for v in values], frozenset()
    return None, frozenset()


def _text(value: Any) -> str:
    """A declared class value as text, as raster values are (``1.0`` as ``"1"``)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, str) else json.dumps(value)
