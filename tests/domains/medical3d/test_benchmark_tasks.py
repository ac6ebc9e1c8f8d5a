"""Benchmark task specs of volumes: MSD / nnU-Net v2 ``dataset.json`` and CSV, built over the
shipped BRATS cases (4 subjects, FLAIR + T1c, OTMultiClass labels 0-4)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from domainfm.domains.medical3d.benchmark_tasks import read_volume_task
from domainfm.domains.medical3d.dataset_json import label_classes
from domainfm.domains.plugin import get_domain

Cases = dict[str, dict[str, Path]]
BRATS_LABELS = {
    "0": "background",
    "1": "necrosis",
    "2": "edema",
    "3": "non-enhancing tumour",
    "4": "enhancing tumour",
}


def _write(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def _msd(root: Path, cases: Cases, **extra: Any) -> Path:
    """An MSD dataset.json whose images list the channel files (MONAI datalist style),
    paths relative to the JSON as ./..."""
    for case, files in cases.items():
        for kind in ("flair", "t1c", "seg"):
            target = root / ("labelsTr" if kind == "seg" else "imagesTr") / f"{case}_{kind}.nii.gz"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(files[kind])
    training = [
        {
            "image": [f"./imagesTr/{case}_flair.nii.gz", f"./imagesTr/{case}_t1c.nii.gz"],
            "label": f"./labelsTr/{case}_seg.nii.gz",
        }
        for case in cases
    ]
    return _write(
        root / "dataset.json",
        {
            "name": "BRATS-mini",
            "tensorImageSize": "3D",
            "modality": {"0": "FLAIR", "1": "T1c"},
            "labels": BRATS_LABELS,
            "numTraining": len(training),
            "training": training,
            **extra,
        },
    )


def _nnunet(root: Path, cases: Cases, labels: Any = None, **extra: Any) -> Path:
    """An nnU-Net v2 dataset folder: imagesTr/CASE_0000 (FLAIR), _0001 (T1c), labelsTr/CASE."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for case, files in cases.items():
        (root / "imagesTr" / f"{case}_0000.nii.gz").symlink_to(files["flair"])
        (root / "imagesTr" / f"{case}_0001.nii.gz").symlink_to(files["t1c"])
        (root / "labelsTr" / f"{case}.nii.gz").symlink_to(files["seg"])
    names = {v: int(k) for k, v in BRATS_LABELS.items()}
    _write(
        root / "dataset.json",
        {
            "channel_names": {"0": "FLAIR", "1": "T1c"},
            "labels": names if labels is None else labels,
            "numTraining": len(cases),
            "file_ending": ".nii.gz",
            **extra,
        },
    )
    return root


def test_msd_dataset_json_over_brats(brats_mini: Cases, tmp_path: Path) -> None:
    spec = _msd(tmp_path / "Task01_mini", brats_mini)
    task = get_domain("medical3d").benchmark.read_task(spec, {})
    assert task is not None
    assert (task.kind, task.name, task.source) == ("segmentation", "BRATS-mini", spec)
    assert task.classes == tuple(BRATS_LABELS.values()) and task.ignore_index is None
    assert [item.key for item in task.items] == [f"{case}_seg" for case in brats_mini]
    first = task.items[0]
    assert [p.name for p in first.inputs] == [
        "brats_2013_pat0005_1_flair.nii.gz",
        "brats_2013_pat0005_1_t1c.nii.gz",
    ]
    assert first.target == spec.parent / "labelsTr" / "brats_2013_pat0005_1_seg.nii.gz"
    assert all(item.group == item.key for item in task.items)  # a case is its own patient
    meta = task.metadata
    assert (meta["format"], meta["channels"], meta["modality"]) == ("msd", ["FLAIR", "T1c"], "mri")
    assert meta["label_map"] == {0: 0, 1: 1, 2: 2, 3: 3, 4: 4}
    assert meta["spacing"] is None and meta["roi"] is None  # the contract or the defaults decide

    kept = read_volume_task(spec, {"channels": "T1c", "spacing": "4", "roi": "16,16,8"})
    assert kept is not None and [len(item.inputs) for item in kept.items] == [1, 1, 1, 1]
    assert kept.items[0].inputs[0].name.endswith("_t1c.nii.gz")
    assert kept.metadata["spacing"] == (4.0, 4.0, 4.0) and kept.metadata["roi"] == (16, 16, 8)


def test_msd_refuses_4d_images_missing_files_and_bad_options(
    brats_mini: Cases, tmp_path: Path
) -> None:
    spec = _msd(tmp_path / "a", brats_mini)
    data = json.loads(spec.read_text())
    data["training"][0]["image"] = "./imagesTr/BRATS_001.nii.gz"  # MSD's one 4D file per case
    _write(spec, data)
    with pytest.raises(ValueError, match=r"dataset\.json: training\[0\].*4D NIfTI"):
        read_volume_task(spec, {})
    data["training"][0]["image"] = ["./imagesTr/gone.nii.gz", "./imagesTr/gone2.nii.gz"]
    _write(spec, data)
    with pytest.raises(ValueError, match=r"imagesTr/gone\.nii\.gz does not exist"):
        read_volume_task(spec, {})
    good = _msd(tmp_path / "b", brats_mini)
    with pytest.raises(ValueError, match="unknown --task-option window"):
        read_volume_task(good, {"window": "3"})
    with pytest.raises(ValueError, match="no channel 'T2'"):
        read_volume_task(good, {"channels": "T2"})
    with pytest.raises(ValueError, match="modality must be ct or mri"):
        read_volume_task(good, {"modality": "pet"})
    with pytest.raises(ValueError, match="spacing must be one or three finite positive"):
        read_volume_task(good, {"spacing": "0"})


def test_nnunet_v2_dataset_folder(brats_mini: Cases, tmp_path: Path) -> None:
    root = _nnunet(tmp_path / "Dataset501_BratsMini", brats_mini)
    task = read_volume_task(root, {"modality": "mri"})  # the folder, or its dataset.json
    assert task is not None and task.source == root / "dataset.json"
    assert task.metadata["format"] == "nnunet" and task.name == "Dataset501_BratsMini"
    assert sorted(item.key for item in task.items) == sorted(brats_mini)
    for item in task.items:
        assert [p.name for p in item.inputs] == [
            f"{item.key}_0000.nii.gz",
            f"{item.key}_0001.nii.gz",
        ]
        assert item.target == root / "labelsTr" / f"{item.key}.nii.gz"
    assert task.classes == tuple(BRATS_LABELS.values())

    data = json.loads((root / "dataset.json").read_text())
    explicit = {  # absolute image paths, label paths relative to the new dataset.json
        case: {
            "images": [str(root / "imagesTr" / f"{case}_0000.nii.gz")],
            "label": f"../{root.name}/labelsTr/{case}.nii.gz",
        }
        for case in list(brats_mini)[:2]
    }
    one = _write(
        tmp_path / "explicit" / "dataset.json",
        {**data, "channel_names": {"0": "FLAIR"}, "dataset": explicit},
    )
    task = read_volume_task(one, {})
    assert task is not None and [item.key for item in task.items] == list(explicit)
    assert [len(item.inputs) for item in task.items] == [1, 1]
    label = root / "labelsTr" / f"{task.items[1].key}.nii.gz"
    assert os.path.normpath(task.items[1].target) == str(label)


def test_nnunet_refusals(brats_mini: Cases, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="numTraining is 7, imagesTr holds 4 cases"):
        read_volume_task(_nnunet(tmp_path / "a", brats_mini, numTraining=7), {})
    region = {"background": 0, "whole tumour": [1, 2, 3, 4], "core": [1, 3, 4]}
    with pytest.raises(ValueError, match="'whole tumour' is a region of values"):
        read_volume_task(_nnunet(tmp_path / "b", brats_mini, labels=region), {})
    with pytest.raises(ValueError, match=r"file_ending '\.mha'"):
        read_volume_task(_nnunet(tmp_path / "c", brats_mini, file_ending=".mha"), {})
    root = _nnunet(tmp_path / "d", brats_mini)
    (root / "imagesTr" / "brats_2013_pat0003_1_0001.nii.gz").unlink()
    with pytest.raises(ValueError, match="case brats_2013_pat0003_1 needs channels 0000-0001"):
        read_volume_task(root, {})


def test_label_classes_of_both_forms() -> None:
    src = Path("dataset.json")
    assert label_classes(src, {"0": "background", "2": "b", "1": "a"}) == (
        ("background", "a", "b"),
        {0: 0, 1: 1, 2: 2},
        None,
    )
    classes, label_map, ignore = label_classes(src, {"background": 0, "tumour": [2], "ignore": 3})
    assert (classes, label_map, ignore) == (("background", "tumour"), {0: 0, 2: 1, 3: 2}, 2)
    with pytest.raises(ValueError, match="no background"):
        label_classes(src, {"1": "a", "2": "b"})
    with pytest.raises(ValueError, match="named twice"):
        label_classes(src, {"a": 0, "b": 0})


def test_group_mapping_option(brats_mini: Cases, tmp_path: Path) -> None:
    root = _nnunet(tmp_path / "ds", brats_mini)
    mapping = tmp_path / "patients.csv"
    mapping.write_text(
        "case,group\n" + "".join(f"{c},patient{i // 2}\n" for i, c in enumerate(brats_mini))
    )
    task = read_volume_task(root, {"group": str(mapping)})
    assert task is not None
    assert sorted({item.group for item in task.items}) == ["patient0", "patient1"]
    mapping.write_text("case,group\nbrats_2013_pat0005_1,p0\n")
    with pytest.raises(ValueError, match="no group for 3 cases"):
        read_volume_task(root, {"group": str(mapping)})


def test_csv_of_volumes(brats_mini: Cases, tmp_path: Path) -> None:
    rows = ["image,label,group"] + [
        f"{f['flair']};{f['t1c']},{f['seg']},p{i % 2}" for i, f in enumerate(brats_mini.values())
    ]
    spec = tmp_path / "cases.csv"
    spec.write_text("\n".join(rows) + "\n")
    task = read_volume_task(spec, {})
    assert task is not None and task.metadata["format"] == "csv"
    # no classes= given: the values found in the label maps, background first
    seg = np.concatenate(
        [np.asarray(nib.load(f["seg"]).dataobj).ravel() for f in brats_mini.values()]
    )
    assert task.classes == ("background", *(str(v) for v in np.unique(seg)[1:]))
    assert task.classes == ("background", "1", "2", "3", "4")
    assert [len(item.inputs) for item in task.items] == [2, 2, 2, 2]
    assert [item.group for item in task.items] == ["p0", "p1", "p0", "p1"]
    assert task.metadata["modality"] == "mri"  # the NIfTI hint: no CT air
    named = read_volume_task(spec, {"classes": "bg,a,b,c,d", "channels": "0"})
    assert named is not None and named.classes == ("bg", "a", "b", "c", "d")
    assert [len(item.inputs) for item in named.items] == [1, 1, 1, 1]

    sounds = tmp_path / "clips.csv"
    sounds.write_text("image,label\nclip.wav,dog\n")
    assert read_volume_task(sounds, {}) is None  # another domain's CSV
    other = tmp_path / "catalog.json"
    other.write_text(json.dumps({"type": "Catalog", "links": []}))
    assert read_volume_task(other, {}) is None
    spec.write_text(
        rows[0] + "\n" + rows[1] + "\n" + f"{tmp_path / 'x.nii.gz'},{tmp_path / 'y.nii.gz'}\n"
    )
    with pytest.raises(ValueError, match=r"cases\.csv: .*x\.nii\.gz does not exist"):
        read_volume_task(spec, {})


def test_msd_cases_in_folders_of_their_own_keep_apart(brats_mini: Cases, tmp_path: Path) -> None:
    """The shipped BRATS layout: one folder per case, every label named OTMultiClass."""
    training = []
    for case, files in brats_mini.items():
        folder = tmp_path / "cases" / case
        folder.mkdir(parents=True)
        for kind in ("flair", "seg"):
            os.symlink(files[kind], folder / f"{kind}.nii.gz")
        training.append(
            {"image": f"cases/{case}/flair.nii.gz", "label": f"cases/{case}/seg.nii.gz"}
        )
    spec = _write(
        tmp_path / "dataset.json",
        {"modality": {"0": "FLAIR"}, "labels": BRATS_LABELS, "training": training},
    )
    task = read_volume_task(spec, {})
    assert task is not None and len(task.items) == len(brats_mini) == 4
    assert sorted(item.key for item in task.items) == sorted(f"{c}/seg" for c in brats_mini)
    assert len({item.group for item in task.items}) == 4
