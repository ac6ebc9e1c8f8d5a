"""The ``dataset.json`` of a Medical Segmentation Decathlon task or an nnU-Net v2 dataset,
parsed: channel names, classes from ``labels``, and the training cases' files.

* MSD (and nnU-Net v1): ``modality`` ``{"0": "FLAIR", ...}``, ``labels`` value → name
  (``{"0": "background", "1": "edema"}``), ``training`` ``[{"image": ..., "label": ...}]``
  with paths relative to the JSON's folder (``./imagesTr/BRATS_001.nii.gz``); an ``image``
  may be a list of channel files (MONAI datalists). One file for several channels is a 4D
  NIfTI, refused: the domain's readers take 3D volumes (one file per channel).
* nnU-Net v2: ``channel_names``, ``labels`` name → value (a list of several values is a
  region, refused; ``"ignore"`` marks unannotated voxels), ``file_ending``,
  ``numTraining``; cases ``imagesTr/{CASE}_{XXXX}{file_ending}`` + ``labelsTr/{CASE}{file_ending}``,
  or the explicit ``dataset`` ``{CASE: {"images": [...], "label": ...}}``.

Every error is a ``ValueError`` naming the ``dataset.json``.

Example::

    >>> label_classes(Path("dataset.json"), {"background": 0, "PZ": 1, "TZ": 2})
    (('background', 'PZ', 'TZ'), {0: 0, 1: 1, 2: 2}, None)
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from domainfm.domains.medical3d.nifti import is_nifti

DATASET_JSON = "dataset.json"
IGNORE_NAME = "ignore"
"""nnU-Net v2's name of the label of unannotated voxels."""


def read_dataset_json(source: Path) -> dict[str, Any] | None:
    """The JSON of an MSD / nnU-Net ``dataset.json``; ``None`` for another JSON."""
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        if source.name == DATASET_JSON:
            raise ValueError(f"{source}: not a readable JSON dataset description ({err})") from None
        return None
    if not isinstance(data, dict) or "labels" not in data:
        return None
    if isinstance(data.get("training"), list) or "channel_names" in data:
        return data
    return None


def channel_names(source: Path, names: Any) -> list[str]:
    """Channel names by index: ``{"0": "FLAIR", "1": "T1w"}`` → ``["FLAIR", "T1w"]``."""
    if not isinstance(names, Mapping) or not names:
        raise ValueError(f"{source}: no channel names ('channel_names' or 'modality')")
    try:
        indices = sorted(int(k) for k in names)
    except ValueError:
        raise ValueError(f"{source}: channel indices must be integers, got {list(names)}") from None
    if indices != list(range(len(indices))):
        raise ValueError(f"{source}: channel indices must be 0, 1, ..., got {indices}")
    return [str(names[str(i)]) for i in indices]


def label_classes(source: Path, labels: Any) -> tuple[tuple[str, ...], dict[int, int], int | None]:
    """Class names by value, raw value → class index, and the ignore index: MSD's
    ``{"0": "background"}`` or nnU-Net v2's ``{"background": 0}`` (a one-value list is that
    value; several values are a region, refused; ``"ignore"`` is left out of the classes)."""
    if not isinstance(labels, Mapping) or not labels:
        raise ValueError(f"{source}: 'labels' must be a non-empty mapping")
    pairs: list[tuple[int, str]] = []
    for key, value in labels.items():
        if isinstance(value, str):  # MSD: value -> name
            raw, name = key, value
        else:  # nnU-Net v2: name -> value, or a region of values
            raw, name = value, key
            if isinstance(value, list) and len(value) == 1:
                raw = value[0]
            elif isinstance(value, list):
                raise ValueError(
                    f"{source}: label {key!r} is a region of values {value} (nnU-Net "
                    "region-based training); give each class its own label value"
                )
        if isinstance(raw, bool) or not re.fullmatch(r"\d+", str(raw)):
            raise ValueError(f"{source}: label {key!r}: {raw!r} is no label value >= 0")
        pairs.append((int(str(raw)), str(name)))
    values = [v for v, _ in pairs]
    if len(set(values)) != len(values):
        raise ValueError(f"{source}: a label value is named twice in {dict(labels)}")
    if 0 not in values:
        raise ValueError(f"{source}: the labels name no background (value 0)")
    named = sorted((v, n) for v, n in pairs if n != IGNORE_NAME)
    classes = tuple(n for _, n in named)
    label_map = {v: i for i, (v, _) in enumerate(named)}
    ignored = [v for v, n in pairs if n == IGNORE_NAME]
    ignore_index = len(classes) if ignored else None
    if ignored:
        label_map[ignored[0]] = len(classes)
    return classes, label_map, ignore_index


Cases = dict[str, tuple[list[str], str]]
"""case id → (channel files, label file), paths as the spec writes them."""


def msd_cases(source: Path, training: list[Any], num_channels: int) -> Cases:
    """The cases of MSD's ``training`` list, keyed by the label file's name (its case id);
    when label files share a name (one folder per case, e.g. ``case1/seg.nii.gz``), by the
    label's path without its ending instead, so that no case hides another."""
    labels = [Path(str(e.get("label", ""))) for e in training if isinstance(e, Mapping)]
    naming = _case_naming(labels)
    cases: Cases = {}
    for i, entry in enumerate(training):
        if not isinstance(entry, Mapping) or "image" not in entry or "label" not in entry:
            raise ValueError(f"{source}: training[{i}] needs 'image' and 'label'")
        image, label = entry["image"], str(entry["label"])
        images = [str(p) for p in image] if isinstance(image, list) else [str(image)]
        if len(images) == 1 and num_channels > 1:
            raise ValueError(
                f"{source}: training[{i}] image {images[0]} holds {num_channels} channels in "
                "one 4D NIfTI, which domainfm does not read: split it into one 3D file per "
                "channel (nnU-Net v2's CASE_0000.nii.gz ... layout, e.g. "
                "nnUNetv2_convert_MSD_dataset) or list the channel files in 'image'"
            )
        if len(images) != num_channels:
            raise ValueError(
                f"{source}: training[{i}] has {len(images)} image files for {num_channels} channels"
            )
        key = naming(Path(label))
        if key in cases:
            raise ValueError(f"{source}: training[{i}] lists the label {label} twice")
        cases[key] = (images, label)
    return cases


def nnunet_cases(source: Path, data: Mapping[str, Any], num_channels: int) -> Cases:
    """The cases of an nnU-Net v2 dataset: its ``dataset`` entry, else the ``imagesTr`` files
    named ``{CASE}_{XXXX}{file_ending}`` (every channel of every case, ``numTraining`` of
    them when given) with ``labelsTr/{CASE}{file_ending}``."""
    ending = str(data.get("file_ending", ""))
    if not is_nifti(Path(f"x{ending}")):
        raise ValueError(
            f"{source}: file_ending {ending!r}; domainfm reads NIfTI (.nii.gz, .nii) volumes"
        )
    if isinstance(data.get("dataset"), Mapping):  # explicit file lists
        cases: Cases = {}
        for case, entry in data["dataset"].items():
            if not isinstance(entry, Mapping) or "images" not in entry or "label" not in entry:
                raise ValueError(f"{source}: dataset[{case!r}] needs 'images' and 'label'")
            images = entry["images"] if isinstance(entry["images"], list) else [entry["images"]]
            images = [str(p) for p in images]
            if len(images) != num_channels:
                raise ValueError(
                    f"{source}: case {case} has {len(images)} images for {num_channels} channels"
                )
            cases[str(case)] = (images, str(entry["label"]))
        return cases
    folder = source.parent / "imagesTr"
    pattern = re.compile(rf"(.+)_(\d{{4}}){re.escape(ending)}")
    found: dict[str, dict[int, str]] = {}
    for path in sorted(folder.glob(f"*{ending}")):
        match = pattern.fullmatch(path.name)
        if match:
            found.setdefault(match[1], {})[int(match[2])] = f"imagesTr/{path.name}"
    if not found:
        raise ValueError(f"{source}: no {folder}/CASE_XXXX{ending} images")
    expected = data.get("numTraining")
    if isinstance(expected, int) and expected != len(found):
        raise ValueError(f"{source}: numTraining is {expected}, imagesTr holds {len(found)} cases")
    cases = {}
    for case, files in found.items():
        if sorted(files) != list(range(num_channels)):
            raise ValueError(
                f"{source}: case {case} needs channels 0000-{num_channels - 1:04d} in imagesTr, "
                f"has {sorted(files)}"
            )
        cases[case] = ([files[c] for c in range(num_channels)], f"labelsTr/{case}{ending}")
    return cases


def _case_naming(labels: list[Path]) -> Callable[[Path], str]:
    """How cases are named: by the label file's name, else (names shared) by its folder and
    name, else by its whole path; each without the NIfTI ending."""
    for naming in (
        lambda p: case_id(p.name),
        lambda p: case_id(f"{p.parent.name}/{p.name}"),
        lambda p: case_id(p.as_posix()),
    ):
        names = [naming(p) for p in labels]
        if len(set(names)) == len(names):
            return naming
    return lambda p: case_id(p.as_posix())  # listed twice: refused by the caller


def case_id(name: str) -> str:
    """A file name without its NIfTI ending."""
    return re.sub(r"\.nii(\.gz)?$", "", name, flags=re.IGNORECASE)
