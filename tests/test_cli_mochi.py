"""MoCHi through the real CLI on the shipped CT volumes (configs/medical3d/mochi_ct.yaml):
InfoNCE with hard-negative mixing trains, its loss falls over a short run to below the
chance level of its logits, and ``domainfm export`` records the mixing in the recipe of a
backbone that loads strictly."""

from __future__ import annotations

import json
import math
from pathlib import Path
from runpy import run_path

import pytest

from domainfm.pretrained.load import load_backbone

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs/medical3d/mochi_ct.yaml"
STEPS = 40
WINDOW = 10
"""Losses averaged at each end of the run (single batches of 4 crop pairs are noisy)."""
_cli = run_path(str(Path(__file__).with_name("cli_run.py")))
_run, _fit, _losses = _cli["run_cli"], _cli["fit_cli"], _cli["train_losses"]


def test_mochi_config_loss_falls(
    tmp_path: Path,
    data_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DOMAINFM_DATA", str(data_root))
    argv = [
        "--config",
        str(CONFIG),
        f"--trainer.default_root_dir={tmp_path}",
        f"--trainer.max_steps={STEPS}",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
        "--data.init_args.num_workers=0",
    ]
    out = _fit(argv, capsys)
    assert f"domainfm fit: {STEPS} steps" in out, out[-2000:]

    losses = _losses(tmp_path)
    assert len(losses) == STEPS
    first, last = (sum(part) / WINDOW for part in (losses[:WINDOW], losses[-WINDOW:]))
    assert last < first - 0.1, losses
    # every logit equal (nothing learned): ln(2B - 1 real + s + s' synthetic negatives)
    chance = math.log(2 * 4 - 1 + 8 + 4)
    assert last < chance, (last, chance, losses)

    (ckpt,) = tmp_path.rglob("last.ckpt")
    export = tmp_path / "export"
    code, _out, err = _run(["export", str(ckpt), str(export)], capsys)
    assert code == 0, err[-3000:]
    config = json.loads((export / "config.json").read_text())
    mochi = config["recipe"]["objectives"]["mochi"]
    assert mochi["class"] == "InfoNCE" and config["domain"] == "medical3d"
    assert (mochi["mixing_hard"], mochi["mixing_pairs"], mochi["mixing_query"]) == (4, 8, 4)
    _backbone, report = load_backbone(export)  # strict: raises unless every key loads
    assert not report.missing and not report.unexpected
