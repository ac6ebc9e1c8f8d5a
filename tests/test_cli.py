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


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_fit_every_config_runs(config: Path, tmp_path: Path, data_root: Path) -> None:
    """Each shipped config trains a few steps through the real entry point, with monitors."""
    env = {**os.environ, "DOMAINFM_DATA": str(data_root)}
    cmd = [
        sys.executable,
        "-m",
        "domainfm.cli",
        "fit",
        "--config",
        str(config),
        "--trainer.max_steps=3",
        "--config",
        str(_monitor_overrides(tmp_path)),
        f"--trainer.default_root_dir={tmp_path}",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--trainer.enable_progress_bar=false",
        "--trainer.log_every_n_steps=1",
        "--data.init_args.num_workers=0",
        "--data.init_args.samples_per_volume=4",
    ]
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
    env = {k: v for k, v in os.environ.items() if k != "DOMAINFM_DATA"}
    env["DOMAINFM_DATA"] = str(tmp_path / "absent")
    cmd = [
        sys.executable,
        "-m",
        "domainfm.cli",
        "fit",
        "--config",
        str(REPO / "configs/medical3d/mae_quickstart.yaml"),
        "--trainer.max_steps=1",
        f"--trainer.default_root_dir={tmp_path}",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "DOMAINFM_DATA" in proc.stderr and "is not a directory" in proc.stderr


@pytest.mark.parametrize("entry", ["domainfm"])
def test_console_script_installed(entry: str) -> None:
    proc = subprocess.run([entry, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "fit" in proc.stdout


def test_validate_and_predict_subcommands(tmp_path: Path, data_root: Path) -> None:
    env = {**os.environ, "DOMAINFM_DATA": str(data_root)}
    base = [
        sys.executable,
        "-m",
        "domainfm.cli",
        "{cmd}",
        "--config",
        str(REPO / "configs/medical3d/mae_quickstart.yaml"),
        f"--trainer.default_root_dir={tmp_path}",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--trainer.enable_progress_bar=false",
        "--data.init_args.val_files=[medical/totalsegmentator_examples/ct_labeled/example_ct_sm.nii.gz]",
        "--data.init_args.samples_per_volume=2",
        "--data.init_args.num_workers=0",
    ]
    for cmd in ("validate", "predict"):
        args = [a.format(cmd=cmd) for a in base]
        proc = subprocess.run(
            args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, (cmd, proc.stderr[-3000:])
        if cmd == "validate":
            assert "val/loss" in proc.stdout
    missing = [a.format(cmd="validate") for a in base if "val_files" not in a]
    proc = subprocess.run(
        missing, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode != 0 and "needs val_files" in proc.stderr
