"""``domainfm fit`` on configs/medical3d/global_local_mri.yaml (Chaitanya et al.'s global +
local contrast on the shipped BRATS FLAIR MRI), in-process: the run finishes, logs both
losses and the partition positives, and the total loss falls over a short run."""

from __future__ import annotations

from pathlib import Path
from runpy import run_path

import pytest

_cli = run_path(str(Path(__file__).with_name("cli_run.py")))
_fit, _logged = _cli["fit_cli"], _cli["logged_rows"]

CONFIG = Path(__file__).resolve().parents[1] / "configs/medical3d/global_local_mri.yaml"
STEPS = 30
WINDOW = 5


def test_global_local_config_loss_falls(
    tmp_path: Path,
    data_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DOMAINFM_DATA", str(data_root))
    monkeypatch.chdir(tmp_path)
    out = _fit(
        [
            "--config",
            str(CONFIG),
            f"--trainer.default_root_dir={tmp_path}",
            f"--trainer.max_steps={STEPS}",
            "--trainer.log_every_n_steps=1",
            "--trainer.enable_progress_bar=false",
            "--data.init_args.num_workers=0",
        ],
        capsys,
    )
    assert f"domainfm fit: {STEPS} steps" in out, out[-2000:]
    rows = _logged(tmp_path)
    assert [int(r["step"]) for r in rows] == list(range(STEPS))
    for key in ("train/global", "train/local", "train/global/cross_positives"):
        assert rows[0].get(key), key
    # the brains share partitions: most anchors have positives beyond their own crop's view
    cross = [float(r["train/global/cross_positives"]) for r in rows]
    assert sum(cross) / len(cross) > 1.0, cross
    losses = [float(r["train/loss"]) for r in rows]
    first, last = losses[:WINDOW], losses[-WINDOW:]
    assert sum(last) / WINDOW < 0.75 * sum(first) / WINDOW, losses
    local = [float(r["train/local"]) for r in rows]
    assert sum(local[-WINDOW:]) < sum(local[:WINDOW]), local
