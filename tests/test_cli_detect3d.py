"""3D detection end to end through the real ``domainfm`` entry point (in-process) on the shipped
BRATS cases: ``domainfm fit --config configs/medical3d/detect_brats.yaml`` fine-tunes RetinaNet
on the whole-tumour boxes, then ``domainfm detect`` writes the boxes of a volume as MONAI JSON
+ CSV in world RAS mm and a box mask on the input's grid and affine (a NIfTI file and a DICOM
series); bad outputs and inputs are one line naming the file with exit status 2.

The strict acceptance run (``slow``, about a minute on one core): after 120 steps on one case
the top box's centre lies within one voxel of the model's 4 mm grid (in fact within a
millimetre) of the centre of the label region's bounding box, and the loss has fallen."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path
from runpy import run_path

import nibabel as nib
import numpy as np
import pytest

from domainfm.cli import main
from domainfm.domains.medical3d.boxes3d import label_map_boxes, read_box_json
from domainfm.domains.medical3d.detect_volume import CSV_COLUMNS, JSON_KEY
from domainfm.domains.medical3d.io import load_volume

CLI = run_path(str(Path(__file__).with_name("cli_run.py")))
_run, train_losses = CLI["run_cli"], CLI["train_losses"]

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs/medical3d/detect_brats.yaml"
BRATS = "medical/brats2015_deepmedic"
TRAIN = f"{BRATS}/train/brats_2013_pat0006_1"
VAL = f"{BRATS}/validation/brats_2013_pat0004_1"
SERIES = "medical/totalsegmentator_examples/ct_dicom_series/dicom"
WHOLE_TUMOUR = {1: 0, 2: 0, 3: 0, 4: 0}
SPACING_MM = 4.0


@pytest.fixture(scope="module")
def data_env(data_root: Path) -> Iterator[Path]:
    """``$DOMAINFM_DATA`` pointing at the shipped data while this module runs."""
    before = os.environ.get("DOMAINFM_DATA")
    os.environ["DOMAINFM_DATA"] = str(data_root)
    yield data_root
    if before is None:
        os.environ.pop("DOMAINFM_DATA", None)
    else:
        os.environ["DOMAINFM_DATA"] = before


def _fit(root: Path, steps: int, *, validate: bool) -> Path:
    """``domainfm fit`` of the config on the training case (and the validation case when
    ``validate``); returns the run's ``last.ckpt``."""
    val = f"[{VAL}/Flair_subtrMeanDivStd.nii.gz]" if validate else "[]"
    val_labels = f"[{VAL}/OTMultiClass.nii.gz]" if validate else "[]"
    argv = [
        "fit",
        "--config",
        str(CONFIG),
        f"--trainer.default_root_dir={root}",
        f"--trainer.max_steps={steps}",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
        f"--data.init_args.images=[{TRAIN}/Flair_subtrMeanDivStd.nii.gz]",
        f"--data.init_args.labels=[{TRAIN}/OTMultiClass.nii.gz]",
        f"--data.init_args.val_images={val}",
        f"--data.init_args.val_labels={val_labels}",
    ]
    try:
        main(argv)
    except SystemExit as stop:  # Lightning's verbs return; a failure exits non-zero
        assert not stop.code, stop.code
    return next(root.rglob("last.ckpt"))


def _logged_names(root: Path) -> set[str]:
    """The metric names of the run's CSV log."""
    with open(next(root.rglob("metrics.csv")), newline="") as handle:
        return set(next(csv.reader(handle)))


@pytest.fixture(scope="module")
def short_run(data_env: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """8 steps on one case, validated on another: ``(run folder, last.ckpt)``."""
    root = tmp_path_factory.mktemp("detect_fit")
    return root, _fit(root, 8, validate=True)


def test_fit_logs_falling_loss_and_detection_metrics(short_run: tuple[Path, Path]) -> None:
    names = {"val/map_10", "val/map_25", "val/map_50", "val/froc", "val/froc_fp0.125"}
    assert names <= _logged_names(short_run[0])
    losses = train_losses(short_run[0])
    assert len(losses) == 8 and all(np.isfinite(losses))
    first, last = np.mean(losses[:3]), np.mean(losses[-3:])
    print(f"train/loss {first:.3f} -> {last:.3f}")
    assert last < first, losses


def test_detect_writes_world_boxes_and_a_mask_on_the_input_grid(
    short_run: tuple[Path, Path], data_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flair = data_env / TRAIN / "Flair_subtrMeanDivStd.nii.gz"
    out, mask = tmp_path / "boxes.json", tmp_path / "boxes_mask.nii.gz"
    args = ["--score-threshold=0", "--no-progress", "--box-mask", str(mask)]
    code, stdout, stderr = _run(["detect", str(short_run[1]), str(flair), str(out), *args], capsys)
    assert code == 0, stderr
    assert "domainfm detect: wrote" in stdout and "world RAS mm" in stdout
    data = json.loads(out.read_text())
    assert data["box_mode"] == "cccwhd" and data["space"] == "RAS"
    entry = data[JSON_KEY][0]
    assert entry["image"] == flair.name and entry["class_name"][0] == "whole tumour"
    boxes = read_box_json(out, key=JSON_KEY)[tmp_path / flair.name][0]
    assert len(boxes) > 0 and np.isfinite(boxes).all()
    source = nib.load(flair)
    corners = np.array([[0, 0, 0], np.array(source.shape) - 1]) @ source.affine[:3, :3].T
    corners += source.affine[:3, 3]
    margin = 12 * SPACING_MM  # 40 slices of 4 mm padded to the 64-voxel window
    centres = (boxes[:, :3] + boxes[:, 3:]) / 2
    assert (centres >= corners.min(0) - margin).all() and (centres <= corners.max(0) + margin).all()
    with open(tmp_path / "boxes.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == len(boxes)
    written = nib.load(mask)
    assert written.shape == source.shape
    np.testing.assert_allclose(written.affine, source.affine, atol=1e-6)
    assert set(np.unique(np.asarray(written.dataobj)).tolist()) <= {0, 1}


def test_detect_on_a_dicom_series_slides_windows(
    short_run: tuple[Path, Path], data_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CT series (125 x 125 x 10 voxels at 4 mm: larger than the 64-voxel window in-plane)
    goes through the sliding windows; its mask is on the series' grid and RAS affine."""
    series = data_env / SERIES
    out, mask = tmp_path / "ct.json", tmp_path / "ct_mask.nii.gz"
    argv = [
        "detect",
        str(short_run[1]),
        str(series),
        str(out),
        "--no-progress",
        "--box-mask",
        str(mask),
    ]
    code, _, stderr = _run(argv, capsys)
    assert code == 0, stderr
    assert json.loads(out.read_text())[JSON_KEY][0]["image"] == series.name
    volume = load_volume(series)
    written = nib.load(mask)
    assert written.shape == volume.shape
    np.testing.assert_allclose(written.affine, volume.affine, atol=1e-4)


def test_bad_outputs_and_inputs_exit_2_naming_the_file(
    short_run: tuple[Path, Path], data_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt, flair = str(short_run[1]), data_env / TRAIN / "Flair_subtrMeanDivStd.nii.gz"
    before = flair.stat().st_mtime_ns
    cases = [
        (["detect", ckpt, str(flair), str(flair)], "the output is the input"),
        (
            ["detect", ckpt, str(flair), str(tmp_path / "b.json"), "--box-mask", str(flair)],
            "the output is the input",
        ),
        (
            ["detect", ckpt, str(tmp_path / "absent.nii.gz"), str(tmp_path / "c.json")],
            "absent.nii.gz",
        ),
        (["detect", ckpt, str(flair), str(tmp_path / "d.geojson")], "unsupported output format"),
        (
            ["detect", str(tmp_path), str(flair), str(tmp_path / "e.json")],
            "export holds only the backbone",
        ),
    ]
    (tmp_path / "f.csv").write_text("keep me\n")
    cases.append(
        (["detect", ckpt, str(flair), str(tmp_path / "f.json")], "f.csv: the output exists")
    )
    for argv, message in cases:
        code, _, stderr = _run([*argv, "--no-progress"], capsys)
        assert code == 2, (argv, stderr)
        assert stderr.startswith("domainfm detect: error:") and message in stderr, stderr
        assert len(stderr.strip().splitlines()) == 1
    assert flair.stat().st_mtime_ns == before and (tmp_path / "f.csv").read_text() == "keep me\n"
    assert not (tmp_path / "f.json").exists()


@pytest.mark.slow  # about a minute of training on one core
def test_top_box_centre_lands_on_the_tumour(
    data_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Acceptance: fine-tuned on the case's whole-tumour box, the top box ``domainfm detect``
    writes for the same volume is centred within one voxel of the model's 4 mm grid (per
    axis) of the label region's bounding-box centre, in world RAS mm."""
    ckpt = _fit(tmp_path / "run", 120, validate=False)
    losses = train_losses(tmp_path / "run")
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10]), losses
    flair = data_env / TRAIN / "Flair_subtrMeanDivStd.nii.gz"
    out = tmp_path / "boxes.json"
    code, _, stderr = _run(["detect", str(ckpt), str(flair), str(out), "--no-progress"], capsys)
    assert code == 0, stderr
    top = read_box_json(out, key=JSON_KEY)[tmp_path / flair.name][0][0]
    world, _ = label_map_boxes(
        data_env / TRAIN / "OTMultiClass.nii.gz", objects=WHOLE_TUMOUR, min_volume_mm3=1000
    )
    assert len(world) == 1
    found, expected = (top[:3] + top[3:]) / 2, (world[0, :3] + world[0, 3:]) / 2
    print(f"top box centre {found.round(2)} mm, region centre {expected.round(2)} mm")
    assert np.abs(found - expected).max() <= SPACING_MM, (found, expected)
