"""SoftCon through the real CLI on the shipped Sentinel-2 scenes and LULC raster
(configs/geospatial/softcon_s2.yaml): the loss falls over a short run and the run exports to
a backbone that loads strictly (what ``domainfm benchmark`` takes); the same config starts
from RGB weights through channel expansion, the expansion printed in the load report."""

from __future__ import annotations

import json
from pathlib import Path
from runpy import run_path

import pytest
import torch

from domainfm.core.vit import VisionTransformerND
from domainfm.pretrained.load import load_backbone

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs/geospatial/softcon_s2.yaml"
_cli = run_path(str(Path(__file__).with_name("cli_run.py")))
_run, _fit_cli, _losses = _cli["run_cli"], _cli["fit_cli"], _cli["train_losses"]


def _fit(tmp_path: Path, steps: int, *extra: str) -> list[str]:
    return [
        "--config",
        str(CONFIG),
        *extra,
        f"--trainer.default_root_dir={tmp_path}",
        f"--trainer.max_steps={steps}",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
        "--data.init_args.num_workers=0",
        f"--data.init_args.stats_cache={tmp_path / 'stats.json'}",
    ]


def test_softcon_config_loss_falls_and_exports(
    tmp_path: Path,
    data_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DOMAINFM_DATA", str(data_root))
    _fit_cli(_fit(tmp_path / "run", 12), capsys)
    losses = _losses(tmp_path / "run")
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses
    (ckpt,) = (tmp_path / "run").rglob("last.ckpt")
    export = tmp_path / "export"
    code, _out, err = _run(["export", str(ckpt), str(export)], capsys)
    assert code == 0, err[-3000:]
    config = json.loads((export / "config.json").read_text())
    assert config["input"]["bands"][3] == "B04" and config["domain"] == "geospatial"
    assert config["recipe"]["objectives"]["softcon"]["class"] == "SoftCon"
    backbone, report = load_backbone(export)  # strict: raises unless every key loads
    assert not report.missing and not report.unexpected
    assert backbone(torch.zeros(1, 13, 32, 32)).shape == (1, 96)


def test_softcon_config_starts_from_rgb_weights(
    tmp_path: Path,
    data_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DOMAINFM_DATA", str(data_root))
    sizes = {"spatial_dims": 2, "patch_size": 8, "embed_dim": 96, "depth": 4, "num_heads": 4}
    weights = tmp_path / "rgb.pth"
    torch.save(VisionTransformerND(in_chans=3, **sizes).state_dict(), weights)  # type: ignore[arg-type]
    override = tmp_path / "rgb_init.yaml"
    override.write_text(
        "model:\n  init_args:\n    backbone:\n"
        "      class_path: domainfm.pretrained.channel_expansion.RGBExpandedBackbone\n"
        "      init_args:\n"
        f"        weights: {weights}\n"
        "        architecture: vit_nd\n"
        f"        kwargs: {json.dumps(sizes)}\n"
        "        expansion:\n"
        "          bands: [B01, B02, B03, B04, B05, B06, B07, B08, B8A, B09, B10, B11, B12]\n"
    )
    out = _fit_cli(_fit(tmp_path / "run", 2, "--config", str(override)), capsys)
    assert f"RGBExpandedBackbone: {weights}: fits this model" in out, out[-2000:]
    assert "adapted patch_embed.proj.weight: channels B02<-B, B03<-G, B04<-R" in out
    (ckpt,) = (tmp_path / "run").rglob("last.ckpt")
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert saved["domainfm"]["backbone"]["architecture"] == "vit_nd"
    assert saved["domainfm"]["backbone"]["kwargs"]["in_chans"] == 13
