"""The real ``domainfm`` entry point runs the quickstart config end to end (a few steps)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _monitor_overrides(tmp_path: Path) -> Path:
    """The quickstart's monitors, firing every step so a 3-step run exercises them."""
    path = tmp_path / "monitors.yaml"
    path.write_text(
        "trainer:\n"
        "  callbacks:\n"
        "    - class_path: domainfm.core.monitors.RankMeMonitor\n"
        "      init_args: {every_n_steps: 1, max_samples: 64}\n"
        "    - class_path: domainfm.core.monitors.ReconstructionPreview\n"
        "      init_args: {every_n_steps: 2, max_images: 2}\n"
        "    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
        "      init_args: {save_last: true}\n"
    )
    return path


CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))
QUICKSTART = REPO / "configs/medical3d/mae_quickstart.yaml"


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
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        *extra,
    ]


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_fit_every_config_runs(config: Path, tmp_path: Path, data_root: Path) -> None:
    """Each shipped config trains a few steps through the real entry point, with monitors."""
    env = {**os.environ, "DOMAINFM_DATA": str(data_root)}
    cmd = _cli(
        "fit",
        config,
        tmp_path,
        "--trainer.max_steps=3",
        "--config",
        str(_monitor_overrides(tmp_path)),
        "--trainer.enable_progress_bar=false",
        "--trainer.log_every_n_steps=1",
        "--data.init_args.num_workers=0",
        "--data.init_args.samples_per_volume=4",
    )
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = [line for line in proc.stdout.splitlines() if line.startswith("domainfm fit:")]
    assert summary and "3 steps" in summary[0], proc.stdout[-2000:]
    metrics = list(tmp_path.rglob("metrics.csv"))
    assert metrics, "no CSV log written"
    assert list(tmp_path.rglob("*.ckpt")), "no checkpoint written"
    header = metrics[0].read_text().splitlines()[0]
    assert "monitor/rankme" in header, header
    previews = list(tmp_path.rglob("previews/step_*.png"))
    assert previews, "no reconstruction preview written"


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
