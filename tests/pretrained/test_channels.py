"""A 13-band checkpoint loads into 4-band and 10-band models, channels mapped by band name."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import domainfm
from domainfm.core.objectives.mae import MAE
from domainfm.core.vit import VisionTransformerND
from domainfm.domains.geospatial import SENTINEL2_L1C_BANDS
from domainfm.pretrained.channels import adapt_input_channels
from domainfm.pretrained.export import export_checkpoint
from domainfm.tasks.pretrain_module import PretrainModule

RGBN = ["B02", "B03", "B04", "B08"]
S2_10_20M = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]


@pytest.fixture(scope="module")
def export_13(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, VisionTransformerND]:
    torch.manual_seed(0)
    vit = VisionTransformerND(
        in_chans=13, spatial_dims=2, patch_size=8, embed_dim=32, depth=2, num_heads=4
    ).eval()
    mae = MAE(
        embed_dim=32,
        in_chans=13,
        patch_size=(8, 8),
        decoder_dim=32,
        decoder_depth=1,
        decoder_heads=4,
    )
    module = PretrainModule(backbone=vit, objectives={"mae": mae}, domain="geospatial")
    checkpoint = {"state_dict": module.state_dict(), "global_step": 1, "epoch": 0}
    module.on_save_checkpoint(checkpoint)
    checkpoint["domainfm"]["input"] = {"bands": list(SENTINEL2_L1C_BANDS)}  # as the data module
    root = tmp_path_factory.mktemp("s2")
    torch.save(checkpoint, root / "last.ckpt")
    return export_checkpoint(root / "last.ckpt", root / "export"), vit


@pytest.mark.parametrize("bands", [RGBN, S2_10_20M], ids=["4-band", "10-band"])
def test_subset_of_bands_gives_the_pretrained_features(
    export_13: tuple[Path, VisionTransformerND], bands: list[str]
) -> None:
    export, source = export_13
    model, report = domainfm.load_backbone(export, channels=bands)
    assert report.ok and model.in_chans == len(bands)
    ((key, detail),) = report.adapted
    assert key == "patch_embed.proj.weight"
    assert detail.startswith("channels " + ", ".join(f"{b}<-{b}" for b in bands))
    dropped = [b for b in SENTINEL2_L1C_BANDS if b not in bands]
    assert detail.endswith("dropped " + ", ".join(dropped))
    assert "adapted" in str(report) and report.as_dict()["adapted"][0]["key"] == key
    # the selected bands through the new model == all 13 bands with the others at zero
    x = torch.randn(2, len(bands), 16, 16)
    full = torch.zeros(2, 13, 16, 16)
    for i, band in enumerate(bands):
        full[:, list(SENTINEL2_L1C_BANDS).index(band)] = x[:, i]
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), source(full))


def test_new_band_is_initialized_explicitly(export_13: tuple[Path, VisionTransformerND]) -> None:
    export, source = export_13
    model, report = domainfm.load_backbone(export, channels=["B04", "VV", "B08"])
    assert "new VV (zeros)" in report.adapted[0][1]
    weight = model.patch_embed.proj.weight
    assert torch.count_nonzero(weight[:, 1]) == 0
    torch.testing.assert_close(weight[:, 0], source.patch_embed.proj.weight[:, 3])
    _, mean_report = domainfm.load_backbone(export, channels=["VV"], new_channel_init="mean")
    assert "new VV (mean)" in mean_report.adapted[0][1]


def test_channel_mapping_errors() -> None:
    state = {"w": torch.zeros(4, 3, 2, 2)}
    with pytest.raises(ValueError, match="repeat"):
        adapt_input_channels(
            state, {"w": torch.zeros(4, 2, 2, 2)}, source=["a", "a", "b"], target=["a", "b"]
        )
    with pytest.raises(ValueError, match="no input-channel tensor"):
        adapt_input_channels(
            state, {"w": torch.zeros(5, 2, 2, 2)}, source=["a", "b", "c"], target=["a", "b"]
        )
