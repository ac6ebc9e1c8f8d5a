"""The real ``domainfm`` entry point runs the quickstart config end to end (a few steps)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _monitor_overrides(tmp_path: Path, *, preview: bool) -> Path:
    """The quickstart's monitors, firing every step so a 3-step run exercises them (the
    reconstruction preview only for configs with an MAE objective)."""
    path = tmp_path / "monitors.yaml"
    path.write_text(
        "trainer:\n"
        "  callbacks:\n"
        "    - class_path: domainfm.tasks.monitors.RankMeMonitor\n"
        "      init_args: {every_n_steps: 1, max_samples: 64}\n"
        + (
            "    - class_path: domainfm.tasks.monitors.ReconstructionPreview\n"
            "      init_args: {every_n_steps: 2, max_images: 2}\n"
            if preview
            else ""
        )
        + "    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
        "      init_args: {save_last: true}\n"
    )
    return path


def _is_pretraining(config: Path) -> bool:
    """Pretraining configs on raw files (streaming ones, reading prepared ``shards:``, run in
    tests/test_cli_prepare.py and tests/test_scale_recipe.py)."""
    text = config.read_text()
    return "PretrainModule" in text and "shards:" not in text and "released:" not in text


CONFIGS = sorted(c for c in (REPO / "configs").rglob("*.yaml") if _is_pretraining(c))
QUICKSTART = REPO / "configs/medical3d/mae_quickstart.yaml"
FOREIGN_CHATTER = ("litlogger", "GPU available", "LeafSpec", "across ranks is zero", "┏━━")


def _cli(subcommand: str, config: Path, tmp_path: Path, *extra: str) -> list[str]:
    """``python -m domainfm.cli SUBCOMMAND --config CONFIG`` writing its outputs to tmp_path."""
    return [
        sys.executable,
        "-m",
        "domainfm.cli",
        subcommand,
        "--config",
        str(config),
        f"--trainer.default_root_dir={tmp_path}",
        *extra,
    ]


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_fit_every_config_runs(config: Path, tmp_path: Path, data_root: Path) -> None:
    """Each shipped config trains a few steps through the real entry point, with monitors."""
    env = {**os.environ, "DOMAINFM_DATA": str(data_root)}
    text = config.read_text()
    pixel_mae = "objectives.mae.MAE" in text and "target:" not in text  # feature targets: no image
    has_preview = pixel_mae or "objectives.inpainting.Inpainting" in text
    cmd = _cli(
        "fit",
        config,
        tmp_path,
        "--trainer.max_steps=3",
        "--config",
        str(_monitor_overrides(tmp_path, preview=has_preview)),
        "--trainer.enable_progress_bar=false",
        "--trainer.log_every_n_steps=1",
        "--data.init_args.num_workers=0",
        (
            "--data.init_args.samples_per_volume=4"
            if "samples_per_volume" in text
            else "--data.init_args.samples_per_epoch=32"
        ),
    )
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = [line for line in proc.stdout.splitlines() if line.startswith("domainfm fit:")]
    assert len(summary) == 1 and "3 steps" in summary[0], proc.stdout[-2000:]
    printed = proc.stdout + proc.stderr
    for chatter in FOREIGN_CHATTER:  # other packages' advertisements and internal warnings
        assert chatter not in printed, (chatter, printed[-3000:])
    metrics = list(tmp_path.rglob("metrics.csv"))
    assert metrics, "no CSV log written"
    assert list(tmp_path.rglob("*.ckpt")), "no checkpoint written"
    header = metrics[0].read_text().splitlines()[0]
    assert "monitor/rankme" in header, header
    previews = list(tmp_path.rglob("previews/step_*.png"))
    assert bool(previews) == has_preview, "previews expected exactly with pixel MAE or inpainting"


def test_missing_data_says_what_to_set(tmp_path: Path) -> None:
    env = {**os.environ, "DOMAINFM_DATA": str(tmp_path / "absent")}
    cmd = _cli("fit", QUICKSTART, tmp_path, "--trainer.max_steps=1")
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "DOMAINFM_DATA" in proc.stderr and "is not a directory" in proc.stderr


@pytest.mark.parametrize("entry", ["domainfm"])
def test_console_script_installed(entry: str) -> None:
    proc = subprocess.run([entry, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "fit" in proc.stdout


@pytest.mark.slow  # keeps the default suite under ~10 min on 2 cores
def test_validate_and_predict_subcommands(tmp_path: Path, data_root: Path) -> None:
    env = {**os.environ, "DOMAINFM_DATA": str(data_root)}
    val_ct = "medical/totalsegmentator_examples/ct_labeled/example_ct_sm.nii.gz"
    val_files = f"--data.init_args.val_files=[{val_ct}]"
    common = (
        "--trainer.enable_progress_bar=false",
        "--data.init_args.samples_per_volume=2",
        "--data.init_args.num_workers=0",
    )
    for cmd in ("validate", "predict"):
        args = _cli(cmd, QUICKSTART, tmp_path, *common, val_files)
        proc = subprocess.run(
            args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, (cmd, proc.stderr[-3000:])
        if cmd == "validate":
            assert "val/loss" in proc.stdout
    missing = _cli("validate", QUICKSTART, tmp_path, *common)
    proc = subprocess.run(
        missing, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode != 0 and "needs val_files" in proc.stderr


FINETUNE_CT = REPO / "configs/medical3d/finetune_seg_ct.yaml"
CT_SMALL = "medical/totalsegmentator_examples/ct_labeled/example_ct_sm.nii.gz"


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (args[:4], proc.stdout[-2000:], proc.stderr[-3000:])
    return proc


def test_pretrain_export_finetune_segment_end_to_end(tmp_path: Path, data_root: Path) -> None:
    """The medical3d path through the real CLI: MAE pretraining → export → fine-tune the
    exported backbone for segmentation (whole-volume validation Dice logged per class) →
    segment a NIfTI and a DICOM series; the label maps lie on the inputs' grids with their
    affines."""
    import nibabel as nib
    import numpy as np

    env = {**os.environ, "DOMAINFM_DATA": str(data_root)}
    quiet = ("--trainer.enable_progress_bar=false", "--data.init_args.num_workers=0")
    pre = tmp_path / "pre"
    _run(
        [*_cli("fit", QUICKSTART, pre, *quiet, "--trainer.max_steps=2")],
        tmp_path,
        env,
    )
    ckpt = next(pre.rglob("last.ckpt"))
    export = tmp_path / "export"
    cli = [sys.executable, "-m", "domainfm.cli"]
    _run([*cli, "export", str(ckpt), str(export)], tmp_path, env)

    ft = tmp_path / "ft"
    proc = _run(
        _cli(
            "fit",
            FINETUNE_CT,
            ft,
            *quiet,
            "--trainer.max_steps=2",
            "--data.init_args.samples_per_volume=2",
            f"--model.init_args.pretrained={export}",
        ),
        tmp_path,
        env,
    )
    from safetensors import safe_open

    with safe_open(str(export / "model.safetensors"), framework="pt") as f:
        n_tensors = len(list(f.keys()))
    assert f"loaded {n_tensors} tensors from {export / 'model.safetensors'}" in proc.stdout
    metrics = next(ft.rglob("metrics.csv")).read_text().splitlines()[0]
    assert "val/dice/mean" in metrics and "val/dice/class_1" in metrics, metrics
    seg_ckpt = next(ft.rglob("last.ckpt"))

    ct = data_root / CT_SMALL
    out = tmp_path / "ct_seg.nii.gz"
    _run([*cli, "segment", str(seg_ckpt), str(ct), str(out), "--no-progress"], tmp_path, env)
    source, written = nib.load(ct), nib.load(out)
    assert written.shape == source.shape
    np.testing.assert_allclose(written.affine, source.affine, atol=1e-6)
    labels = np.asarray(written.dataobj)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2}

    from domainfm.domains.medical3d import load_volume

    series = data_root / "medical/totalsegmentator_examples/ct_dicom_series/dicom"
    out = tmp_path / "dicom_seg.nii.gz"
    _run([*cli, "segment", str(seg_ckpt), str(series), str(out), "--no-progress"], tmp_path, env)
    volume, written = load_volume(series), nib.load(out)
    assert written.shape == volume.shape
    np.testing.assert_allclose(written.affine, volume.affine, atol=1e-4)


MAE_S2 = REPO / "configs/geospatial/mae_s2.yaml"
MAE_TEMPORAL_S2 = REPO / "configs/geospatial/mae_temporal_s2.yaml"
FINETUNE_LULC = REPO / "configs/geospatial/finetune_lulc.yaml"
SCENE_LULC = REPO / "configs/geospatial/finetune_scene_lulc.yaml"
DETECT_LULC = REPO / "configs/geospatial/detect_lulc_patches.yaml"


def test_geospatial_pretrain_export_finetune_predict(tmp_path: Path, data_root: Path) -> None:
    """Sentinel-2 through the real CLI: MAE and MAE + temporal-contrast pretraining → export
    → load → fine-tune segmentation (UPerNet), scene classification and object detection
    (Faster R-CNN on LULC patches) on the LULC labels from the export → tiled prediction of
    a 13-band GeoTIFF, written with the input's CRS, transform and size, and tiled detection
    written as GeoJSON boxes in the input's CRS inside its bounds."""
    import rasterio

    from domainfm.pretrained.load import load_backbone

    env = {**os.environ, "DOMAINFM_DATA": str(data_root)}
    quiet = ("--trainer.enable_progress_bar=false", "--data.init_args.num_workers=0")
    cli = [sys.executable, "-m", "domainfm.cli"]
    for name, config_file in (("temporal", MAE_TEMPORAL_S2), ("mae", MAE_S2)):
        pre = tmp_path / f"pre_{name}"
        _run(_cli("fit", config_file, pre, *quiet, "--trainer.max_steps=2"), tmp_path, env)
        export = tmp_path / f"export_{name}"
        _run([*cli, "export", str(next(pre.rglob("last.ckpt"))), str(export)], tmp_path, env)
        config = json.loads((export / "config.json").read_text())
        assert config["input"]["bands"][:2] == ["B01", "B02"] and config["input"]["crs"]
        backbone, report = load_backbone(export)  # strict: raises unless every key loads
        assert not report.missing and not report.unexpected
        assert backbone(torch.zeros(1, 13, 32, 32)).shape == (1, backbone.embed_dim)

    ft = tmp_path / "ft"
    proc = _run(
        _cli(
            "fit",
            FINETUNE_LULC,
            ft,
            *quiet,
            "--trainer.max_steps=2",
            "--data.init_args.samples_per_epoch=16",  # one epoch of 2 steps, then validation
            f"--model.init_args.pretrained={export}",
        ),
        tmp_path,
        env,
    )
    assert f"from {export / 'model.safetensors'}" in proc.stdout
    header = next(ft.rglob("metrics.csv")).read_text().splitlines()[0]
    assert "val/dice/mean" in header, header

    scene = sorted(
        (data_root / "geospatial/eolearn_s2_slovenia_patch/s2_l1c_13band").glob("*.tif")
    )[0]
    out = tmp_path / "lulc_pred.tif"
    seg_ckpt = next(ft.rglob("last.ckpt"))
    _run([*cli, "segment", str(seg_ckpt), str(scene), str(out), "--no-progress"], tmp_path, env)
    with rasterio.open(scene) as src, rasterio.open(out) as pred:
        assert pred.crs == src.crs and pred.transform == src.transform
        assert (pred.width, pred.height) == (src.width, src.height)
        labels = pred.read(1)
    assert labels.dtype == "uint8" and set(labels.ravel().tolist()) <= set(range(6))

    scene_run = tmp_path / "scene"
    _run(
        _cli(
            "fit",
            SCENE_LULC,
            scene_run,
            *quiet,
            "--trainer.max_steps=2",
            "--data.init_args.samples_per_epoch=16",
            f"--model.init_args.pretrained={export}",
        ),
        tmp_path,
        env,
    )
    header = next(scene_run.rglob("metrics.csv")).read_text().splitlines()[0]
    assert "val/acc" in header and "val/macc" in header, header

    det_run = tmp_path / "detect"
    _run(
        _cli(
            "fit",
            DETECT_LULC,
            det_run,
            *quiet,
            "--trainer.max_steps=2",
            "--data.init_args.samples_per_epoch=16",
            f"--model.init_args.pretrained={export}",
        ),
        tmp_path,
        env,
    )
    header = next(det_run.rglob("metrics.csv")).read_text().splitlines()[0]
    assert "val/map_50" in header and "val/mar_100" in header, header
    boxes_out = tmp_path / "objects.geojson"
    det_ckpt = next(det_run.rglob("last.ckpt"))
    args = ["--no-progress", "--score-threshold=0"]
    proc = _run([*cli, "detect", str(det_ckpt), str(scene), str(boxes_out), *args], tmp_path, env)
    assert "domainfm detect: wrote" in proc.stdout
    collection = json.loads(boxes_out.read_text())
    with rasterio.open(scene) as src:
        epsg = src.crs.to_epsg()
        assert collection["crs"]["properties"]["name"] == f"urn:ogc:def:crs:EPSG::{epsg}"
        left, bottom, right, top = src.bounds
    assert collection["features"], "an untrained detector still proposes boxes at score >= 0"
    for feature in collection["features"]:
        ring = np.array(feature["geometry"]["coordinates"][0])
        assert left <= ring[:, 0].min() and ring[:, 0].max() <= right
        assert bottom <= ring[:, 1].min() and ring[:, 1].max() <= top
        assert feature["properties"]["class_name"] in ("shrubland", "built-up")


MAE_AUDIO = REPO / "configs/audio/mae_audio.yaml"
BYOLA_AUDIO = REPO / "configs/audio/byola_audio.yaml"
PROBE_DIGITS = REPO / "configs/audio/probe_digits.yaml"
SED_DIGITS = REPO / "configs/audio/sed_digits.yaml"


def test_audio_pretrain_export_probe_hear_sed(tmp_path: Path, data_root: Path) -> None:
    """Audio through the real CLI on the shipped clips: MAE and BYOL-A pretraining → export →
    load (strict) → linear probe on spoken digits split by speaker (front end from the
    export) → HEAR scene/timestamp embeddings of the export → SED fine-tuning on composed
    digit sequences → `domainfm sed` writing (file, onset, offset, label) rows, scored
    against the sequences' reference events."""
    from domainfm.domains.audio import EventSequenceDataset, write_event_sequences
    from domainfm.domains.audio.datamodule import checkpoint_frontend
    from domainfm.domains.audio.hear import (
        get_scene_embeddings,
        get_timestamp_embeddings,
        load_model,
    )
    from domainfm.pretrained.load import load_backbone

    env = {**os.environ, "DOMAINFM_DATA": str(data_root)}
    quiet = ("--trainer.enable_progress_bar=false",)
    cli = [sys.executable, "-m", "domainfm.cli"]
    exports = {}
    for name, config_file in (("byola", BYOLA_AUDIO), ("mae", MAE_AUDIO)):
        pre = tmp_path / f"pre_{name}"
        args = (*quiet, "--trainer.max_steps=2", "--data.init_args.num_workers=0")
        _run(_cli("fit", config_file, pre, *args), tmp_path, env)
        export = exports[name] = tmp_path / f"export_{name}"
        _run([*cli, "export", str(next(pre.rglob("last.ckpt"))), str(export)], tmp_path, env)
        backbone, report = load_backbone(export)
        assert not report.missing and not report.unexpected
        assert backbone(torch.zeros(1, 1, 64, 96)).shape == (1, backbone.embed_dim)
        frontend = json.loads((export / "config.json").read_text())["input"]["frontend"]
        assert frontend["architecture"] == "log_mel" and frontend["kwargs"]["mean"] is not None
        model = load_model(str(export))
        audio = torch.randn(3, 16000) * 0.1
        emb, ts = get_timestamp_embeddings(audio, model)
        assert emb.shape[:2] == ts.shape and emb.shape[0] == 3
        assert emb.shape[2] == model.timestamp_embedding_size == backbone.embed_dim
        assert get_scene_embeddings(audio, model).shape == (3, model.scene_embedding_size)
    export = exports["mae"]

    probe = tmp_path / "probe"
    from_export = (
        f"--model.init_args.pretrained={export}",
        "--model.init_args.backbone=null",
        f"--data.init_args.frontend_from={export}",
        "--data.init_args.frontend=null",
    )
    _run(
        _cli(
            "fit",
            PROBE_DIGITS,
            probe,
            *quiet,
            "--trainer.max_steps=2",
            "--trainer.limit_train_batches=2",  # one short epoch, then validation
            "--trainer.limit_val_batches=2",
            *from_export,
        ),
        tmp_path,
        env,
    )
    header = next(probe.rglob("metrics.csv")).read_text().splitlines()[0]
    assert "val/acc" in header, header

    sed = tmp_path / "sed"
    _run(
        _cli(
            "fit",
            SED_DIGITS,
            sed,
            *quiet,
            "--trainer.max_steps=2",
            "--data.init_args.sequences_per_epoch=32",
            "--data.init_args.val_sequences=4",
            *from_export,
        ),
        tmp_path,
        env,
    )
    header = next(sed.rglob("metrics.csv")).read_text().splitlines()[0]
    assert "val/frame_f1" in header, header
    george = sorted((data_root / "audio/fsdd_spoken_digits/recordings").glob("*_george_*.wav"))
    sequences = EventSequenceDataset(
        files=[str(p) for p in george],
        labels=[int(p.name.split("_")[0]) for p in george],
        num_classes=10,
        frontend=checkpoint_frontend(export),
        frames=400,
    )
    files, _ = write_event_sequences(
        sequences, tmp_path / "sequences", count=3, class_names=[str(k) for k in range(10)]
    )
    out = tmp_path / "events.csv"
    ckpt = next(sed.rglob("last.ckpt"))
    args = ["--threshold=0.05", f"--reference={tmp_path / 'sequences' / 'events.csv'}"]
    proc = _run([*cli, "sed", str(ckpt), str(out), *map(str, files), *args], tmp_path, env)
    assert "event F1" in proc.stdout, proc.stdout
    rows = out.read_text().splitlines()
    assert rows[0] == "file,onset,offset,label" and len(rows) > 1
    for row in rows[1:]:
        file, onset, offset, label = row.split(",")
        assert file in {str(f) for f in files} and 0 <= float(onset) < float(offset) <= 4.01
        assert label in {str(k) for k in range(10)}
