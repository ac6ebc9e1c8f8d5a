"""SparK's shipped configs through the real CLI on the shipped data (issue 19): ``domainfm
fit`` lowers the loss over the config's 30 steps (mean of the last 5 logged losses against the
first 5), ``domainfm export`` turns the checkpoint into a backbone-only export that loads
strictly, and ``domainfm benchmark --backbone`` runs on it (Sentinel-2 here; CT, which needs a
BRATS task built first, in the slow suite)."""

from __future__ import annotations

import json
from pathlib import Path
from runpy import run_path

import nibabel as nib
import numpy as np
import pytest
import torch

from domainfm import load_backbone

_cli = run_path(str(Path(__file__).with_name("cli_run.py")))
_run, _fit, _losses = _cli["run_cli"], _cli["fit_cli"], _cli["train_losses"]

REPO = Path(__file__).resolve().parents[1]
SPARK_CT = REPO / "configs/medical3d/spark_ct.yaml"
SPARK_S2 = REPO / "configs/geospatial/spark_s2.yaml"
S2 = "geospatial/eolearn_s2_slovenia_patch"
BRATS = "medical/brats2015_deepmedic"
BENCH = ["--seeds", "2", "--folds", "2", "--finetune-steps", "2", "--no-progress"]


def _fit_and_export(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[list[float], Path]:
    """Fit ``config`` for its 30 steps, logging every step; export its last checkpoint."""
    run = tmp_path / "run"
    out = _fit(
        [
            "--config",
            str(config),
            f"--trainer.default_root_dir={run}",
            "--trainer.enable_progress_bar=false",
            "--trainer.log_every_n_steps=1",
            "--data.init_args.num_workers=0",
        ],
        capsys,
    )
    assert "domainfm fit: 30 steps" in out, out[-2000:]
    export = tmp_path / "export"
    code, out, err = _run(["export", str(next(run.rglob("last.ckpt"))), str(export)], capsys)
    assert code == 0 and "load check clean" in out, err[-3000:]
    return _losses(run), export


def _benchmark(
    export: Path, task: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> dict[str, object]:
    """``domainfm benchmark --backbone EXPORT`` on ``task`` (its ``--task`` arguments)."""
    argv = ["benchmark", *task, "--backbone", str(export), *BENCH, "--out", str(tmp_path / "b")]
    code, _, err = _run(argv, capsys)
    assert code == 0, err[-3000:]
    results: dict[str, object] = json.loads((tmp_path / "b" / "results.json").read_text())
    return results


CASES = {
    "s2": (SPARK_S2, (1, 13, 64, 64), "timm_cnn"),
    "ct": (SPARK_CT, (1, 1, 32, 32, 32), "segresnet_encoder_3d"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_config_loss_falls_and_exports(
    case: str,
    tmp_path: Path,
    data_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config, shape, architecture = CASES[case]
    monkeypatch.setenv("DOMAINFM_DATA", str(data_root))
    losses, export = _fit_and_export(config, tmp_path, capsys)
    assert len(losses) == 30, losses
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.97 * first, (first, last, losses)

    meta = json.loads((export / "config.json").read_text())
    assert meta["architecture"] == architecture and set(meta["recipe"]["objectives"]) == {"spark"}
    backbone, report = load_backbone(export)  # strict: raises unless every key loads
    assert not report.missing and not report.unexpected
    assert backbone(torch.zeros(shape)).shape == (1, backbone.embed_dim)
    if case == "s2":  # the CT export's benchmark needs a BRATS task built first: slow suite
        labels = f"labels={data_root / S2 / 'labels/LULC.tif'}"
        task = ["--task", str(data_root / S2 / "s2_l1c_13band/S2_L1C_2015-07-11.tif")]
        for option in (labels, "window=16", "block=32"):
            task += ["--task-option", option]
        runs = _benchmark(export, task, tmp_path, capsys)["runs"]
        assert isinstance(runs, list) and runs
        assert all(r["backbone"] == "export" for r in runs)


def _brats_task(data_root: Path, root: Path) -> Path:
    """An MSD ``dataset.json`` over the 4 shipped BRATS cases (FLAIR, labels), every 4th voxel."""
    training = []
    for subject in sorted((data_root / BRATS).glob("*/brats_2013_pat*")):
        for stem, folder, dtype in (
            ("Flair_subtrMeanDivStd", "imagesTr", np.float32),
            ("OTMultiClass", "labelsTr", np.uint8),
        ):
            image = nib.load(subject / f"{stem}.nii.gz")
            array = np.asarray(image.dataobj)[::4, ::4, ::4].astype(dtype)
            (root / folder).mkdir(parents=True, exist_ok=True)
            affine = image.affine @ np.diag([4.0, 4.0, 4.0, 1.0])
            nib.save(nib.Nifti1Image(array, affine), root / folder / f"{subject.name}.nii.gz")
        name = f"{subject.name}.nii.gz"
        training.append({"image": [f"./imagesTr/{name}"], "label": f"./labelsTr/{name}"})
    labels = {str(k): str(k) for k in range(5)}
    spec = root / "dataset.json"
    spec.write_text(
        json.dumps(
            {
                "name": "BRATS-mini",
                "modality": {"0": "FLAIR"},
                "labels": labels,
                "training": training,
            }
        )
    )
    return spec


@pytest.mark.slow  # a CT fit plus a BRATS benchmark: about a minute of CPU
def test_ct_export_benchmarks_on_brats(
    tmp_path: Path,
    data_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DOMAINFM_DATA", str(data_root))
    _, export = _fit_and_export(SPARK_CT, tmp_path, capsys)
    task = ["--task", str(_brats_task(data_root, tmp_path / "msd"))]
    task += ["--task-option", "spacing=8", "--task-option", "roi=16"]
    results = _benchmark(export, task, tmp_path, capsys)
    assert results["task"]["domain"] == "medical3d" and results["runs"]  # type: ignore[index]
