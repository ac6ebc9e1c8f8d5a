"""Continued MAE pretraining from a release with its decoder, through the CLI: the shipped
config starts from a file in the SSL4EO-S12 MAE layout (encoder + decoder), trains on the real
Sentinel-2 rasters, and the export's model card names the release and its licence."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from domainfm.core.objectives.mae import MAE
from domainfm.core.vit import VisionTransformerND
from domainfm.domains.geospatial.released.ssl4eo import SSL4EO_MAE_DECODER, VIT_S16_S2

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs/geospatial/continue_ssl4eo_mae.yaml"
SHRINK = {"depth": 1}
HEAD = {"decoder_depth": 1, "decoder_dim": 64, "decoder_heads": 4}


def _release_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A full MAE checkpoint in the release's layout ({'model': encoder + decoder, ...}),
    shrunk in depth and decoder width (what the test passes as overrides)."""
    torch.manual_seed(0)
    vit = VisionTransformerND(**{**VIT_S16_S2, **SHRINK})
    mae = MAE(**{**SSL4EO_MAE_DECODER, **HEAD})
    mae.bind_backbone(vit)
    table = torch.zeros(1, 1 + 14 * 14, HEAD["decoder_dim"])
    model = {**vit.state_dict(), **mae.state_dict(), "decoder_pos_embed": table}
    torch.save({"model": model, "epoch": 99, "optimizer": {}}, path)
    return vit.state_dict(), mae.state_dict()


def test_shipped_config_continues_the_release_pretext_task(tmp_path: Path, data_root: Path) -> None:
    weights = tmp_path / "B13_vits16_mae_ep99.pth"
    _, decoder = _release_file(weights)
    env = {**os.environ, "DOMAINFM_DATA": str(data_root)}
    cmd = [
        sys.executable,
        "-m",
        "domainfm.cli",
        "fit",
        "--config",
        str(CONFIG),
        f"--model.init_args.pretrained={weights}",
        f"--model.init_args.model_kwargs={json.dumps(SHRINK)}",
        f"--model.init_args.pretext_kwargs={json.dumps(HEAD)}",
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.max_steps=2",
        "--trainer.enable_progress_bar=false",
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        "--data.init_args.num_workers=0",
        "--data.init_args.samples_per_epoch=16",
        f"--data.init_args.stats_cache={tmp_path / 'stats.json'}",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "as ssl4eo-s12-vit-small-patch16-mae: fits this model" in out, out[-2000:]
    assert "(mae pretext head): fits this model" in out, out[-2000:]
    assert "start fresh" not in out
    ckpt = next(tmp_path.rglob("*.ckpt"))
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    origin = saved["domainfm"]["provenance"]["initialized_from"]
    assert origin["released"] == "ssl4eo-s12-vit-small-patch16-mae"
    assert origin["pretext_head"] == "loaded"
    # the decoder trained on from the release's weights (a fresh decoder would be far off)
    trained = saved["state_dict"]["objectives.mae.decoder_pred.weight"]
    start = decoder["decoder_pred.weight"]
    assert (trained - start).abs().max() < 0.05 * start.abs().max()
    assert not torch.equal(trained, start)
    export = tmp_path / "export"
    proc = subprocess.run(
        [sys.executable, "-m", "domainfm.cli", "export", str(ckpt), str(export)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    card = (export / "README.md").read_text()
    assert "ssl4eo-s12-vit-small-patch16-mae" in card
    assert json.loads((export / "config.json").read_text())["license"] in card
