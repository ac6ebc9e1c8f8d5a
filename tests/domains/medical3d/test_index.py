"""VolumeIndex: header-only geometry of a folder of real volumes, errors listed, cached as JSON."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest

from domainfm.domains.medical3d import VolumeIndex, load_volume
from domainfm.domains.medical3d import index as index_module
from domainfm.domains.medical3d.io import read_header

TS = "medical/totalsegmentator_examples"
CT_SMALL = f"{TS}/ct_labeled/example_ct_sm.nii.gz"
MR_LPS = f"{TS}/mr_labeled/example_mr_sm.nii.gz"
SERIES = f"{TS}/ct_dicom_series/dicom"
FOUR_D = "medical/nibabel_pydicom_small/example4d.nii.gz"


@pytest.fixture
def tree(tmp_path: Path, data_root: Path) -> Path:
    """root/{ct.nii.gz, mri/mr.nii.gz, mri/fmri.nii.gz (4D), broken.nii.gz, series/ (3 slices,
    plus a README)}."""
    root = tmp_path / "root"
    (root / "mri").mkdir(parents=True)
    shutil.copy(data_root / CT_SMALL, root / "ct.nii.gz")
    shutil.copy(data_root / MR_LPS, root / "mri" / "mr.nii.gz")
    shutil.copy(data_root / FOUR_D, root / "mri" / "fmri.nii.gz")
    (root / "broken.nii.gz").write_bytes(b"\x1f\x8b\x08 this is not a volume")
    (root / "series").mkdir()
    for file in sorted((data_root / SERIES).iterdir())[:3]:
        shutil.copy(file, root / "series" / file.name)
    (root / "series" / "README.txt").write_text("three slices")
    return root


def _touch(path: Path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))


def test_index_reads_headers_only(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    dcmread = pydicom.dcmread

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return dcmread(*args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", spy)
    index = VolumeIndex.build(tree)
    assert index.reads == len(index) == 5
    by_name = {Path(e.path).name: e for e in index}
    assert sorted(by_name) == ["broken.nii.gz", "ct.nii.gz", "fmri.nii.gz", "mr.nii.gz", "series"]
    assert len(calls) == 3 and all(c["stop_before_pixels"] for c in calls)

    ct = by_name["ct.nii.gz"]
    raw = nib.load(tree / "ct.nii.gz")
    assert ct.status == "ok" and ct.kind == "nifti" and ct.reason is None
    assert ct.shape == raw.shape and ct.spacing == (3.0, 3.0, 3.0)
    np.testing.assert_allclose(np.array(ct.affine), raw.affine)
    assert ct.size == (tree / "ct.nii.gz").stat().st_size
    assert ct.mtime_ns == (tree / "ct.nii.gz").stat().st_mtime_ns

    series = by_name["series"]
    assert series.kind == "dicom" and series.status == "ok" and series.modality == "ct"
    assert series.shape == (512, 512, 3) and series.spacing == (0.9765625, 0.9765625, 2.0)
    np.testing.assert_allclose(np.array(series.affine), load_volume(tree / "series").affine)

    assert by_name["broken.nii.gz"].status == "error"
    assert "could not read" in str(by_name["broken.nii.gz"].reason)
    assert "has shape (128, 96, 24, 2)" in str(by_name["fmri.nii.gz"].reason)
    assert index.paths() == [Path(e.path) for e in index if e.status == "ok"]
    assert {p.name for p in index.paths()} == {"ct.nii.gz", "mr.nii.gz", "series"}
    assert {Path(e.path).name for e in index.errors} == {"broken.nii.gz", "fmri.nii.gz"}


def test_cache_is_reused_and_refreshed(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "index.json"
    first = VolumeIndex.build(tree, cache=cache)
    assert first.reads == 5
    stored = json.loads(cache.read_text())
    assert len(stored["entries"]) == 5

    reads: list[Path] = []

    def counting(path: str | Path) -> Any:
        reads.append(Path(path))
        return read_header(path)

    monkeypatch.setattr(index_module, "read_header", counting)
    second = VolumeIndex.build(tree, cache=cache)
    assert second.reads == 0 and reads == []  # nothing opened
    assert [e.to_json() for e in second] == [e.to_json() for e in first]

    _touch(tree / "ct.nii.gz")
    _touch(sorted((tree / "series").glob("*.dcm"))[0])
    shutil.copy(tree / "ct.nii.gz", tree / "mri" / "new.nii.gz")
    third = VolumeIndex.build(tree, cache=cache)
    assert sorted(p.name for p in reads) == ["ct.nii.gz", "new.nii.gz", "series"]
    assert third.reads == 3 and len(third) == 6

    reads.clear()
    (tree / "broken.nii.gz").unlink()
    fourth = VolumeIndex.build(tree, cache=cache)
    assert reads == [] and len(fourth) == 5  # a removed file leaves the index


def test_cache_inside_the_tree_and_corrupt_cache(tree: Path) -> None:
    cache = tree / "series" / "index.json"  # even inside a DICOM folder: not part of it
    VolumeIndex.build(tree, cache=cache)
    assert VolumeIndex.build(tree, cache=cache).reads == 0
    cache.write_text("{not json")
    with pytest.warns(UserWarning, match=r"ignoring unreadable volume index cache .*index\.json"):
        rebuilt = VolumeIndex.build(tree, cache=cache)
    assert rebuilt.reads == 5
    assert VolumeIndex.build(tree, cache=cache).reads == 0


def test_files_and_missing(tree: Path, data_root: Path) -> None:
    index = VolumeIndex.build([tree / "ct.nii.gz", tree / "series", tree / "ct.nii.gz"])
    assert [Path(e.path).name for e in index] == ["ct.nii.gz", "series"]  # no duplicates
    with pytest.raises(FileNotFoundError, match=r"absent\.nii\.gz does not exist"):
        VolumeIndex.build([tree / "absent.nii.gz"])
