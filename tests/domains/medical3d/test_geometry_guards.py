"""Geometry is validated, never guessed: a NIfTI whose qform and sform disagree is refused
unless ``geometry=`` (``--assume-geometry``) says which one is right, through the loader, the
index, the training datasets and ``domainfm segment``; a DICOM slice with cut pixel data is
named as truncated, and spacing faults of a series are named errors."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch

from domainfm import cli
from domainfm.domains.medical3d import (
    LabeledVolumeDataset,
    Medical3DPlugin,
    VolumeContract,
    VolumeCropDataset,
    VolumeIndex,
    VolumePreparer,
    load_volume,
    segment_volume,
)
from domainfm.domains.medical3d.io import read_header
from domainfm.tasks import finetune_module

SERIES = "medical/totalsegmentator_examples/ct_dicom_series/dicom"
SFORM = np.array(
    [[1.5, 0.0, 0.0, -20.0], [0.0, 1.5, 0.0, -30.0], [0.0, 0.0, 1.5, 40.0], [0.0, 0.0, 0.0, 1.0]]
)


def _volume(shape: tuple[int, int, int] = (12, 10, 8)) -> np.ndarray:
    """CT-like int16 values: air and tissue, so no value check trips."""
    data = np.full(shape, -1000, dtype=np.int16)
    data[2:-2, 2:-2, 2:-2] = 40
    data[4:6, 4:6, 3:5] = 700
    return data


def _nifti(
    path: Path,
    *,
    sform: np.ndarray | None = SFORM,
    qform: np.ndarray | None = SFORM,
    data: np.ndarray | None = None,
) -> Path:
    """A NIfTI with the given sform and qform (``None``: that code 0)."""
    image = nib.Nifti1Image(_volume() if data is None else data, None)
    image.set_sform(sform, code=0 if sform is None else 1)
    image.set_qform(qform, code=0 if qform is None else 1)
    nib.save(image, str(path))
    return path


def _shifted(dx: float) -> np.ndarray:
    moved = SFORM.copy()
    moved[0, 3] += dx
    return moved


def test_disagreeing_qform_and_sform_are_refused_naming_file_and_fields(tmp_path: Path) -> None:
    path = _nifti(tmp_path / "both.nii.gz", qform=_shifted(5.0))
    for read in (read_header, load_volume):
        with pytest.raises(ValueError) as info:
            read(path)
        message = str(info.value)
        assert message.startswith(str(path))
        assert "qform (code 1) and sform (code 1) disagree" in message
        assert "up to 5 mm apart" in message and "qform -15 vs sform -20" in message
        assert "--assume-geometry" in message and "\n" not in message


def test_the_geometry_option_states_which_transform_places_the_voxels(tmp_path: Path) -> None:
    qform = _shifted(5.0)
    path = _nifti(tmp_path / "both.nii.gz", qform=qform)
    by_sform = load_volume(path, geometry="sform")
    by_qform = load_volume(path, geometry="qform")
    np.testing.assert_allclose(by_sform.affine, SFORM)
    np.testing.assert_allclose(by_qform.affine, qform, atol=1e-5)
    np.testing.assert_array_equal(by_sform.array, by_qform.array)  # same voxels, other place
    assert read_header(path, geometry="qform").affine[0, 3] == pytest.approx(-15.0)
    with pytest.raises(ValueError, match="geometry must be one of strict, sform, qform"):
        load_volume(path, geometry="best")  # type: ignore[arg-type]


def test_a_single_transform_is_used_in_every_mode(tmp_path: Path) -> None:
    only_sform = _nifti(tmp_path / "s.nii.gz", qform=None)
    only_qform = _nifti(tmp_path / "q.nii.gz", sform=None, qform=_shifted(5.0))
    for geometry in ("strict", "sform", "qform"):
        np.testing.assert_allclose(load_volume(only_sform, geometry=geometry).affine, SFORM)
        got = load_volume(only_qform, geometry=geometry).affine
        np.testing.assert_allclose(got, _shifted(5.0), atol=1e-5)


def test_float32_rounding_of_an_oblique_far_grid_is_not_a_disagreement(tmp_path: Path) -> None:
    angle = 0.3
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.7, 0.7, 1.3])
    affine[:3, 3] = [-812.3, 655.1, 1203.7]
    path = _nifti(tmp_path / "oblique.nii.gz", sform=affine, qform=affine)
    header = nib.load(path).header
    assert not np.array_equal(header.get_qform(), header.get_sform())  # rounded differently
    np.testing.assert_allclose(load_volume(path).affine, affine, atol=1e-3)


def test_a_sheared_sform_differs_from_its_rigid_qform(tmp_path: Path) -> None:
    sheared = SFORM.copy()
    sheared[0, 1] = 0.4  # gantry tilt: no qform can hold it, nibabel writes the nearest
    path = _nifti(tmp_path / "tilt.nii.gz", sform=sheared, qform=sheared)
    with pytest.raises(ValueError, match=r"tilt\.nii\.gz: qform .* disagree"):
        load_volume(path)
    np.testing.assert_allclose(load_volume(path, geometry="sform").affine, sheared)


def test_training_paths_and_index_take_the_option(tmp_path: Path) -> None:
    path = _nifti(tmp_path / "both.nii.gz", qform=_shifted(5.0))
    label = _nifti(
        tmp_path / "label.nii.gz", qform=_shifted(5.0), data=(_volume() > 0).astype(np.uint8)
    )
    index = VolumeIndex.build(tmp_path)
    assert {Path(e.path).name: e.status for e in index} == {
        "both.nii.gz": "error",
        "label.nii.gz": "error",
    }
    assert "disagree" in (index.errors[0].reason or "")
    cache = tmp_path / "index.json"
    assert len(VolumeIndex.build(tmp_path, cache=cache, geometry="qform").ok) == 2
    with pytest.raises(ValueError, match=r"both\.nii\.gz.*disagree"):
        VolumeCropDataset(files=[path], crop_size=4, spacing=1.5, strict=True)
    crops = VolumeCropDataset(files=[path], crop_size=4, spacing=1.5, geometry="sform")
    assert crops.skipped == [] and len(crops.volumes) == 1
    with pytest.raises(ValueError, match=r"both\.nii\.gz.*disagree"):
        LabeledVolumeDataset(images=[path], labels=[label], crop_size=4, spacing=1.5)
    pairs = LabeledVolumeDataset(
        images=[path], labels=[label], crop_size=4, spacing=1.5, geometry="qform"
    )
    assert pairs.labels[0].max() == 1
    with pytest.raises(ValueError, match="disagree"):
        next(VolumePreparer(spacing=1.5).items((path,)))
    preparer = VolumePreparer(spacing=1.5, geometry="sform")
    assert preparer.settings()["geometry"] == "sform"
    assert "geometry" not in VolumePreparer(spacing=1.5).settings()  # old manifests still match
    assert next(preparer.items((path,)))["image"].shape[0] == 1


class _Thresholder(torch.nn.Module):
    """A stand-in segmentation module: class 1 above the middle of the HU window."""

    task = "segmentation"
    num_classes = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([0.5 - x, x - 0.5], dim=1)


@pytest.fixture
def fake_checkpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """``load_finetuned`` gives a thresholding volume model, whatever the path."""
    contract = VolumeContract(modality="ct", spacing_mm=1.5, crop_size=[8, 8, 8])
    meta = {"input": contract.to_dict()}
    monkeypatch.setattr(finetune_module, "load_finetuned", lambda path: (_Thresholder(), meta))


def _main(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    return int(info.value.code or 0)


def test_segment_command_refuses_or_assumes_the_stated_geometry(
    tmp_path: Path, fake_checkpoint: None, capsys: pytest.CaptureFixture[str]
) -> None:
    scan = _nifti(tmp_path / "scan.nii.gz", qform=_shifted(5.0))
    out = tmp_path / "seg.nii.gz"
    assert _main(["segment", "model.ckpt", str(scan), str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"domainfm segment: error: {scan}: qform (code 1) and sform")
    assert err.count("\n") == 1 and not out.exists()
    argv = ["segment", "--assume-geometry", "qform", "model.ckpt", str(scan), str(out)]
    assert _main([*argv, "--no-progress"]) == 0  # the option may come before the positionals
    written = nib.load(out)
    assert written.shape == (12, 10, 8)
    np.testing.assert_array_equal(np.asarray(written.dataobj) == 1, _volume() > 0)
    assert _main(["segment", "model.ckpt", str(scan), str(out), "--assume-geometry", "best"]) == 2
    assert "invalid choice: 'best'" in capsys.readouterr().err


def test_segment_passes_the_domain_options_in_the_request(
    tmp_path: Path, fake_checkpoint: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Any] = []

    def record(self: Any, module: Any, contract: Any, request: Any) -> str:
        seen.append(request)
        return "nothing"

    monkeypatch.setattr(Medical3DPlugin, "segment", record)
    scan = _nifti(tmp_path / "scan.nii.gz")
    for extra, expected in (([], None), (["--assume-geometry=sform"], "sform")):
        argv = ["segment", "model.ckpt", str(scan), str(tmp_path / "o.nii.gz"), *extra]
        assert _main(argv) == 0
        assert dict(seen[-1].options) == {"assume_geometry": expected}


def test_segment_volume_takes_the_option(tmp_path: Path) -> None:
    scan = _nifti(tmp_path / "scan.nii.gz", qform=_shifted(5.0))
    kwargs: dict[str, Any] = {"roi_size": 8, "spacing": 1.5, "modality": "ct"}
    with pytest.raises(ValueError, match="disagree"):
        segment_volume(_Thresholder(), scan, tmp_path / "a.nii.gz", **kwargs)
    out = segment_volume(_Thresholder(), scan, tmp_path / "a.nii.gz", geometry="sform", **kwargs)
    assert nib.load(out).shape == (12, 10, 8)


# --- DICOM series ---------------------------------------------------------------------------


def _series(
    tmp_path: Path, data_root: Path, edit: Callable[[int, Any], None] | None = None
) -> Path:
    """Four consecutive slices of the real series, each edited by ``edit(i, dataset)``."""
    folder = tmp_path / "series"
    folder.mkdir(parents=True)
    for i, source in enumerate(sorted((data_root / SERIES).iterdir())[:4]):
        ds = pydicom.dcmread(source)
        if edit is not None:
            edit(i, ds)
        ds.save_as(folder / source.name)
    return folder


def _cut(path: Path, keep: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep])


@pytest.mark.parametrize("cut", [-80_000, -5_000])
def test_a_slice_with_cut_pixel_data_is_named_as_truncated(
    tmp_path: Path, data_root: Path, cut: int
) -> None:
    folder = _series(tmp_path, data_root)
    slice_file = sorted(folder.iterdir())[2]
    _cut(slice_file, cut)
    with pytest.raises(ValueError) as info:
        load_volume(folder)
    message = str(info.value)
    assert message.startswith(f"{folder}: slice {slice_file.name}")
    assert "truncated" in message and "ImagePositionPatient" not in message


def test_uncompressed_pixel_data_cut_short_is_named_as_truncated(
    tmp_path: Path, data_root: Path
) -> None:
    folder = _series(tmp_path, data_root, edit=lambda i, ds: ds.decompress())
    slice_file = sorted(folder.iterdir())[1]
    _cut(slice_file, -1000)
    with pytest.raises(ValueError, match=rf"pixels of slice {slice_file.name} .*truncated"):
        load_volume(folder)


def test_a_slice_cut_before_its_pixel_data_is_named_as_truncated(
    tmp_path: Path, data_root: Path
) -> None:
    folder = _series(tmp_path, data_root)
    slice_file = sorted(folder.iterdir())[3]
    _cut(slice_file, 1500)  # inside the header: the geometry tags are gone too
    for read in (read_header, load_volume):
        with pytest.raises(ValueError, match=rf"slice {slice_file.name} .*truncated"):
            read(folder)


def _set(tag: str, value: Any) -> Callable[[int, Any], None]:
    def edit(i: int, ds: Any) -> None:
        if i == 2:
            setattr(ds, tag, value)

    return edit


@pytest.mark.parametrize(
    ("tag", "value", "message"),
    [
        ("PixelSpacing", [0.0, 0.9765625], r"PixelSpacing \[0.0, 0.9765625\]: .*positive"),
        ("PixelSpacing", [-1.0, -1.0], r"PixelSpacing \[-1.0, -1.0\]: .*positive"),
        ("PixelSpacing", ["nan", "1.0"], r"non-finite PixelSpacing \[nan, 1.0\]"),
        ("PixelSpacing", [0.9765625], r"PixelSpacing with 1 values \[0.9765625\]; 2 are needed"),
        ("ImagePositionPatient", [1.0, 2.0], r"ImagePositionPatient with 2 values"),
        (
            "ImageOrientationPatient",
            [1.0, 0.0, 0.0, 0.7, 0.7, 0.0],
            r"ImageOrientationPatient .*orthogonal unit vectors",
        ),
        ("ImageOrientationPatient", [0.0] * 6, r"orthogonal unit vectors"),
    ],
)
def test_dicom_spacing_faults_are_named_never_guessed(
    tmp_path: Path, data_root: Path, tag: str, value: Any, message: str
) -> None:
    folder = _series(tmp_path, data_root, edit=_set(tag, value))
    name = sorted(folder.iterdir())[2].name
    for read in (read_header, load_volume):
        with pytest.raises(ValueError, match=rf"series: slice {name} has .*{message}"):
            read(folder)


def test_dicom_duplicate_positions_and_missing_rows_are_named(
    tmp_path: Path, data_root: Path
) -> None:
    first = pydicom.dcmread(sorted((data_root / SERIES).iterdir())[0])

    def same_place(i: int, ds: Any) -> None:
        if i == 3:
            ds.ImagePositionPatient = list(first.ImagePositionPatient)

    with pytest.raises(ValueError, match="are at the same position"):
        load_volume(_series(tmp_path / "a", data_root, edit=same_place))

    def no_rows(i: int, ds: Any) -> None:
        if i == 1:
            del ds.Rows

    with pytest.raises(ValueError, match=r"has Rows None: a positive number of pixels"):
        read_header(_series(tmp_path / "b", data_root, edit=no_rows))


def test_prepare_takes_the_option() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dtype")  # added by the generic `prepare` parser
    plugin = Medical3DPlugin()
    plugin.add_prepare_arguments(parser)
    preparer = plugin.preparer(parser.parse_args(["--assume-geometry", "qform"]))
    assert isinstance(preparer, VolumePreparer) and preparer.geometry == "qform"
    assert plugin.preparer(parser.parse_args([])).geometry == "strict"  # type: ignore[attr-defined]
