"""Geospatial benchmark task specs over the shipped Sentinel-2 patch: scene rasters with the
LULC raster (windows in spatial blocks), CSVs of chips, STAC catalogs (label extension and
paired assets, per-item classes), and the specs refused or left to other domains."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from domainfm.domains.geospatial.benchmark_tasks import read_geospatial_task
from domainfm.domains.plugin import get_domain
from domainfm.tasks.benchmark.task import BenchmarkTask

LULC_VALUES = ("1", "2", "3", "4", "8")


def _lulc_array(lulc: Path) -> np.ndarray:
    with rasterio.open(lulc) as src:
        return src.read(1).astype(np.int64)


def _task(spec: Path, options: dict[str, str]) -> BenchmarkTask:
    task = read_geospatial_task(spec, options)
    assert task is not None
    return task


def _check_blocks(task: BenchmarkTask, shape: tuple[int, int]) -> None:
    """Every pixel of one date lies in windows of one group only, and all are covered."""
    owner = np.full(shape, -1)
    groups = sorted({i.group for i in task.items if i.group is not None})
    first = task.items[0].inputs[0]
    for item in task.items:
        if item.inputs[0] != first:
            continue
        assert item.region is not None
        row, col, h, w = item.region
        g = groups.index(item.group or "")
        seen = set(np.unique(owner[row : row + h, col : col + w]).tolist())
        assert seen <= {-1, g}, f"{item.key} shares pixels with another block"
        owner[row : row + h, col : col + w] = g
    assert (owner >= 0).all()


def test_scene_rasters_and_label_raster_become_windows_in_blocks(
    s2_dates: list[Path], lulc: Path
) -> None:
    folder = s2_dates[0].parent
    task = _task(folder, {"labels": str(lulc), "ignore": "0"})
    assert (task.kind, task.domain, task.ignore_index) == ("segmentation", "geospatial", 0)
    assert task.classes == ("unlabeled", *LULC_VALUES)
    assert task.metadata["label_values"] == list(LULC_VALUES)
    assert (task.metadata["window"], task.metadata["block"]) == (32, 64)
    # 101 x 100 px in blocks of 64 (rows 0-64, 64-101; cols 0-64, 64-100), each block 2 x 2
    # windows of 32 (the last shifted back onto the block's edge), for each of the 5 dates
    assert len(task.items) == 16 * 5
    assert Counter(i.group for i in task.items) == {
        f"block:{r},{c}": 20 for r in (0, 64) for c in (0, 64)
    }
    edges = {0: 64, 64: 101}, {0: 64, 64: 100}
    for item in task.items:
        assert item.region is not None and item.target == lulc and len(item.inputs) == 1
        row, col, h, w = item.region
        r0, c0 = (int(v) for v in (item.group or "").removeprefix("block:").split(","))
        assert (h, w) == (32, 32)
        assert r0 <= row and row + h <= edges[0][r0] and c0 <= col and col + w <= edges[1][c0]
        assert item.key == f"{item.inputs[0].name}@{row},{col}"
    by_window: dict[tuple[int, ...], set[str | None]] = {}
    for item in task.items:  # every date of a window in the window's group
        assert item.region is not None
        by_window.setdefault(item.region, set()).add(item.group)
    assert all(len(groups) == 1 for groups in by_window.values())
    _check_blocks(task, (101, 100))

    glob_task = _task(folder / "S2_L1C_*.tif", {"labels": str(lulc), "ignore": "0"})
    assert [i.key for i in glob_task.items] == [i.key for i in task.items]
    plugin_task = get_domain("geospatial").benchmark.read_task(
        s2_dates[0], {"labels": str(lulc), "ignore": "0", "block": "50", "window": "25"}
    )
    # one date; rows in blocks 0-50 and 50-101 (the 1-row rest joins), 2 + 3 windows of 25;
    # columns in blocks 0-50, 50-100, 2 + 2 windows
    assert plugin_task is not None and len(plugin_task.items) == 5 * 4
    _check_blocks(plugin_task, (101, 100))


def test_scene_classification_labels_each_window_by_its_dominant_class(
    s2_dates: list[Path], lulc: Path
) -> None:
    options = {"labels": str(lulc), "ignore": "0", "target": "scene", "window": "16"}
    task = _task(s2_dates[0], options)
    assert (task.kind, task.classes, task.ignore_index) == ("classification", LULC_VALUES, None)
    raw = _lulc_array(lulc)
    expected = {}
    for item in task.items:
        assert item.region is not None
        row, col, h, w = item.region
        values, counts = np.unique(raw[row : row + h, col : col + w], return_counts=True)
        counts = np.where(values == 0, 0, counts)  # no data does not vote
        expected[item.key] = LULC_VALUES.index(str(values[int(np.argmax(counts))]))
    assert {i.key: i.target for i in task.items} == expected
    assert len(task.items) == 7 * 7  # 2 x 2 blocks of 32 with 2 x 2 windows; the edge: 3
    assert set(expected.values()) == {1, 2}  # forest and grassland dominate the windows


def test_class_names_from_a_classes_file(s2_dates: list[Path], lulc: Path, tmp_path: Path) -> None:
    names = {"1": "cultivated", "2": "forest", "3": "grassland", "4": "shrubland", "8": "built"}
    as_json = tmp_path / "classes.json"
    as_json.write_text(json.dumps(names))
    task = _task(s2_dates[0], {"labels": str(lulc), "ignore": "0", "classes": str(as_json)})
    assert task.classes == ("unlabeled", *names.values())
    as_csv = tmp_path / "classes.csv"  # another order: class indices follow the file
    as_csv.write_text("value,name\n8,built\n2,forest\n1,cultivated\n3,grassland\n4,shrubland\n")
    task = _task(s2_dates[0], {"labels": str(lulc), "ignore": "0", "classes": str(as_csv)})
    assert task.classes == ("unlabeled", "built", "forest", "cultivated", "grassland", "shrubland")
    without_zero = _task(s2_dates[0], {"labels": str(lulc)})  # no data is then a class
    assert without_zero.classes == ("unlabeled", "0", *LULC_VALUES)
    nodata = _write_like(lulc, tmp_path / "nodata.tif", nodata=0)  # the raster's nodata
    assert _task(s2_dates[0], {"labels": str(nodata)}).classes == ("unlabeled", *LULC_VALUES)
    as_csv.write_text("1,cultivated\n2,forest\n")
    with pytest.raises(ValueError, match=r"LULC\.tif: label values \['3', '4', '8'\] are not"):
        read_geospatial_task(
            s2_dates[0], {"labels": str(lulc), "ignore": "0", "classes": str(as_csv)}
        )


def _write_like(src: Path, dst: Path, *, shift: float = 0.0, nodata: float | None = None) -> Path:
    with rasterio.open(src) as ds:
        profile = ds.profile | {"transform": ds.transform @ Affine.translation(shift, 0)}
        profile["nodata"] = nodata
        data = ds.read()
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data)
    return dst


def test_broken_scene_specs_are_refused_by_name(
    s2_dates: list[Path], lulc: Path, tmp_path: Path
) -> None:
    shifted = _write_like(lulc, tmp_path / "shifted.tif", shift=3)
    with pytest.raises(ValueError, match=r"shifted\.tif and .*S2_L1C_2015-07-11\.tif"):
        read_geospatial_task(s2_dates[0], {"labels": str(shifted)})
    with pytest.raises(ValueError, match=r"S2_L1C_2015-07-11\.tif: scene rasters need .*labels="):
        read_geospatial_task(s2_dates[0], {})
    with pytest.raises(ValueError, match="unknown --task-option colour"):
        read_geospatial_task(s2_dates[0], {"labels": str(lulc), "colour": "red"})
    with pytest.raises(ValueError, match="block=16 is smaller than window=32"):
        read_geospatial_task(s2_dates[0], {"labels": str(lulc), "block": "16"})
    with pytest.raises(ValueError, match="window='x'"):
        read_geospatial_task(s2_dates[0], {"labels": str(lulc), "window": "x"})
    with pytest.raises(ValueError, match=r"labels=.*nothing\.tif does not exist"):
        read_geospatial_task(s2_dates[0], {"labels": str(tmp_path / "nothing.tif")})
    with pytest.raises(ValueError, match="smaller than the window 128"):
        read_geospatial_task(s2_dates[0], {"labels": str(lulc), "window": "128"})


def test_specs_of_other_domains_are_left_alone(s2_dates: list[Path], tmp_path: Path) -> None:
    clips = tmp_path / "clips.csv"
    clips.write_text("file,label,group\na.wav,yes,s1\n")
    cases = tmp_path / "dataset.json"
    cases.write_text(json.dumps({"name": "BRATS", "labels": {"0": "background"}}))
    other = tmp_path / "other.csv"
    other.write_text("image,mask\na.nii.gz,b.nii.gz\n")
    for spec in (clips, cases, other, tmp_path, tmp_path / "missing.tif", tmp_path / "*.wav"):
        assert read_geospatial_task(spec, {}) is None
    assert read_geospatial_task(s2_dates[0].parent, {}) is None  # rasters, but no labels=


def _relative(path: Path, root: Path) -> str:
    return os.path.relpath(path, root)


def test_csv_of_chips_classification_and_segmentation(
    s2_dates: list[Path], lulc: Path, tmp_path: Path
) -> None:
    seasons = ["summer", "summer", "summer", "summer", "autumn"]  # 2015-07-11 … 2015-09-09
    rows = [
        f"{_relative(p, tmp_path)},{s},{p.stem[-5:-3]}"
        for p, s in zip(s2_dates, seasons, strict=True)
    ]
    chips = tmp_path / "chips.csv"
    chips.write_text("file,label,group\n" + "\n".join(rows) + "\n")
    task = _task(chips, {})
    assert (task.kind, task.classes, task.name) == ("classification", ("autumn", "summer"), "chips")
    assert [i.target for i in task.items] == [1, 1, 1, 1, 0]
    assert [i.group for i in task.items] == ["07", "07", "08", "08", "09"]
    assert all(i.region is None and i.inputs[0].is_file() for i in task.items)

    masks = tmp_path / "masks.csv"
    label = _relative(lulc, tmp_path)
    masks.write_text(
        "file,label\n" + "".join(f"{_relative(p, tmp_path)},{label}\n" for p in s2_dates)
    )
    seg = _task(masks, {"ignore": "0"})
    assert (seg.kind, seg.classes, seg.ignore_index) == (
        "segmentation",
        ("unlabeled", *LULC_VALUES),
        0,
    )
    assert [i.target for i in seg.items] == [lulc] * 5 and seg.metadata["window"] is None

    _write_like(lulc, tmp_path / "off.tif", shift=1)
    masks.write_text(f"file,label\n{_relative(s2_dates[0], tmp_path)},off.tif\n")
    with pytest.raises(ValueError, match=r"off\.tif and .*S2_L1C_2015-07-11\.tif"):
        read_geospatial_task(masks, {})
    chips.write_text("file,label\nmissing.tif,forest\nalso.tif,field\n")
    with pytest.raises(ValueError, match=r"chips\.csv: chips listed but missing: .*missing\.tif"):
        read_geospatial_task(chips, {})
    with pytest.raises(ValueError, match="unknown --task-option window"):
        read_geospatial_task(chips, {"window": "32"})


def test_stac_catalog_with_label_extension_over_the_dates(
    label_catalog: Callable[..., Path], s2_dates: list[Path], lulc: Path
) -> None:
    spec = label_catalog(**{"label:classes": [{"name": None, "classes": [1, 2, 3, 4, 8]}]})
    task = _task(spec, {"ignore": "0", "group": "block"})
    assert (task.kind, task.name, task.classes) == (
        "segmentation",
        "stac",
        ("unlabeled", *LULC_VALUES),
    )
    assert len(task.items) == 80
    assert {i.group for i in task.items} == {
        f"lulc:block:{r},{c}" for r in (0, 64) for c in (0, 64)
    }
    assert {i.inputs[0] for i in task.items} == set(s2_dates)
    first = task.items[0]
    assert first.key == "lulc:s2-2015-07-11@0,0" and first.target == lulc
    scenes = _task(s2_dates[0].parent, {"labels": str(lulc), "ignore": "0"})
    assert {(i.inputs, i.region, i.target) for i in task.items} == {
        (i.inputs, i.region, i.target) for i in scenes.items
    }  # the same windows as the scene spec
    _check_blocks(task, (101, 100))
    assert {i.group for i in _task(spec, {"ignore": "0"}).items} == {"lulc"}  # the item's id
    with pytest.raises(ValueError, match=r"catalog\.json: label values \['0'\] .*ignore=0"):
        read_geospatial_task(spec, {})
    assert _task(spec.parent, {"ignore": "0"}).name == "stac"  # the folder holding it

    names = ["no data", "cultivated", "forest", "grassland", "shrubland", "built"]
    entries = [{"value": v, "name": n} for v, n in zip([0, 1, 2, 3, 4, 8], names, strict=True)]
    entries[0]["nodata"] = True
    named = label_catalog({"classification:classes": entries})
    assert _task(named, {}).classes == ("unlabeled", *names[1:])


def test_stac_paired_assets_groups_and_per_item_classes(
    paired_catalog: Path, class_catalog: Path, s2_dates: list[Path]
) -> None:
    task = _task(paired_catalog, {"ignore": "0", "group": "place", "target": "scene"})
    assert task.kind == "classification" and task.name == "paired"
    assert Counter(i.group for i in task.items) == {"north": 3 * 16, "south": 2 * 16}
    assert task.items[0].key == "d0@0,0"
    with pytest.raises(ValueError, match="item 'd0' has no property 'tile'"):
        read_geospatial_task(paired_catalog, {"ignore": "0", "group": "tile"})

    chips = _task(class_catalog, {"group": "site"})
    assert (chips.kind, chips.classes) == ("classification", ("field", "forest", "water"))
    assert [(i.key, i.target, i.group) for i in chips.items] == [
        ("c0", 1, "s0"),
        ("c1", 0, "s1"),
        ("c2", 1, "s0"),
        ("c3", 2, "s1"),
        ("c4", 0, "s0"),
    ]
    assert [i.inputs[0] for i in chips.items] == s2_dates and all(
        i.region is None for i in chips.items
    )

    item_file = class_catalog.parent / "c0" / "c0.json"
    item = json.loads(item_file.read_text())
    item["assets"]["visual"]["href"] = "https://example.com/c0.tif"
    item_file.write_text(json.dumps(item))
    with pytest.raises(ValueError, match=r"item 'c0' asset 'visual' is remote"):
        read_geospatial_task(class_catalog, {})
