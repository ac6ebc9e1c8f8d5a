"""The I-JEPA configs train on the shipped CT volumes and audio clips through the real CLI:
the loss falls over a short run, and the checkpoint exports the context encoder as the
backbone (the EMA target encoder stays in the checkpoint only)."""

from __future__ import annotations

from pathlib import Path
from runpy import run_path

import pytest
import torch

from domainfm.pretrained.load import load_backbone

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {
    "ct": REPO / "configs/medical3d/ijepa_ct.yaml",
    "audio": REPO / "configs/audio/ijepa_audio.yaml",
}
STEPS = 12
INPUTS = {"ct": (1, 1, 48, 48, 48), "audio": (1, 1, 64, 96)}

_cli = run_path(str(Path(__file__).with_name("cli_run.py")))
_run, _fit, _losses = _cli["run_cli"], _cli["fit_cli"], _cli["train_losses"]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_ijepa_config_loss_falls_and_exports(
    name: str,
    tmp_path: Path,
    data_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DOMAINFM_DATA", str(data_root))
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    out = _fit(
        [
            "--config",
            str(CONFIGS[name]),
            f"--trainer.default_root_dir={run}",
            f"--trainer.max_steps={STEPS}",
            "--trainer.log_every_n_steps=1",
            "--trainer.enable_progress_bar=false",
            "--data.init_args.num_workers=0",
        ],
        capsys,
    )
    assert f"{STEPS} steps" in out
    losses = _losses(run)
    assert len(losses) == STEPS
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.85 * first, losses

    (checkpoint,) = run.rglob("last.ckpt")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    assert any(k.startswith("objectives.ijepa.target_encoder.teacher.") for k in state)
    export = tmp_path / "export"
    code, _, err = _run(["export", str(checkpoint), str(export)], capsys)
    assert code == 0, err[-3000:]
    backbone, report = load_backbone(export)
    assert not report.missing and not report.unexpected
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, state[f"backbone.{key}"]), key
    assert backbone(torch.zeros(INPUTS[name])).shape == (1, 96)
