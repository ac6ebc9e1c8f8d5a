"""RGB weights start a 13-band model: R, G, B go to B04, B03, B02, the other bands take the
mean RGB kernel (or zeros), all scaled by 3 / C; the load is strict and reports the expansion."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from domainfm.core.objectives.mae import MAE
from domainfm.core.vit import VisionTransformerND
from domainfm.domains.geospatial import SENTINEL2_L1C_BANDS
from domainfm.pretrained.channel_expansion import (
    RGBExpandedBackbone,
    RGBExpansion,
    expand_rgb_weight,
    load_rgb_expanded,
    rgb_expanded_backbone,
)
from domainfm.pretrained.export import export_checkpoint
from domainfm.pretrained.report import CheckpointMismatchError
from domainfm.tasks.pretrain_module import PretrainModule

BANDS = list(SENTINEL2_L1C_BANDS)
S2 = RGBExpansion(bands=BANDS)
SIZES = {"spatial_dims": 2, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 4}


def _rgb_vit() -> VisionTransformerND:
    torch.manual_seed(0)
    return VisionTransformerND(in_chans=3, **SIZES).eval()  # type: ignore[arg-type]


def test_weight_mapping_fill_and_scale() -> None:
    weight = torch.randn(5, 3, 2, 2)
    out = expand_rgb_weight(weight, S2)
    assert out.shape == (5, 13, 2, 2)
    scale = 3 / 13
    for band, rgb in (("B04", 0), ("B03", 1), ("B02", 2)):
        torch.testing.assert_close(out[:, BANDS.index(band)], scale * weight[:, rgb])
    torch.testing.assert_close(out[:, BANDS.index("B08")], scale * weight.mean(dim=1))
    # a band-constant input keeps the RGB kernel's response: sum over bands unchanged
    torch.testing.assert_close(out.sum(dim=1), weight.sum(dim=1))
    zeros = expand_rgb_weight(
        weight, RGBExpansion(bands=["B02", "B08"], fill="zeros", rescale=False)
    )
    torch.testing.assert_close(zeros[:, 0], weight[:, 2])
    assert torch.count_nonzero(zeros[:, 1]) == 0


def test_zero_fill_gives_the_rgb_features_on_the_rgb_bands() -> None:
    rgb = _rgb_vit()
    vit = VisionTransformerND(in_chans=13, **SIZES).eval()  # type: ignore[arg-type]
    expansion = RGBExpansion(bands=BANDS, fill="zeros", rescale=False)
    state, adapted = expansion.expand_state(rgb.state_dict(), vit.state_dict())
    vit.load_state_dict(state)
    assert [key for key, _ in adapted] == ["patch_embed.proj.weight"]
    x = torch.randn(2, 3, 16, 16)  # R, G, B
    full = torch.randn(2, 13, 16, 16)  # the other bands see zero kernels
    for i, band in enumerate(("B04", "B03", "B02")):
        full[:, BANDS.index(band)] = x[:, i]
    with torch.no_grad():
        torch.testing.assert_close(vit(full), rgb(x))


def _rgb_export(root: Path) -> Path:
    rgb = _rgb_vit()
    mae = MAE(decoder_dim=32, decoder_depth=1, decoder_heads=4)
    module = PretrainModule(backbone=rgb, objectives={"mae": mae})
    checkpoint = {"state_dict": module.state_dict(), "global_step": 1, "epoch": 0}
    module.on_save_checkpoint(checkpoint)
    checkpoint["domainfm"]["input"] = {"channels": ["R", "G", "B"]}
    torch.save(checkpoint, root / "last.ckpt")
    return export_checkpoint(root / "last.ckpt", root / "export")


@pytest.mark.parametrize("source", ["export", "pth"])
def test_load_rgb_weights_strictly_with_the_expansion_reported(tmp_path: Path, source: str) -> None:
    rgb = _rgb_vit()
    if source == "export":
        weights = _rgb_export(tmp_path)
    else:
        weights = tmp_path / "rgb.pth"
        torch.save({**rgb.state_dict(), "head.weight": torch.zeros(2, 32)}, weights)
    vit = VisionTransformerND(in_chans=13, **SIZES)  # type: ignore[arg-type]
    report = load_rgb_expanded(vit, weights, S2, drop=["head.*"])
    assert report.ok and not report.missing and not report.unexpected
    ((key, detail),) = report.adapted
    assert key == "patch_embed.proj.weight"
    assert detail.startswith("channels B02<-B, B03<-G, B04<-R; new B01, B05")
    assert detail.endswith("(mean of RGB); scaled by 3/13")
    assert report.dropped == (["head.weight"] if source == "pth" else [])
    assert "adapted" in str(report)
    expected = expand_rgb_weight(rgb.patch_embed.proj.weight.detach(), S2)
    torch.testing.assert_close(vit.patch_embed.proj.weight.detach(), expected)
    torch.testing.assert_close(vit.blocks[0].attn.qkv.weight, rgb.blocks[0].attn.qkv.weight)


def test_a_mismatch_is_refused_and_a_non_rgb_model_named(tmp_path: Path) -> None:
    weights = tmp_path / "rgb.pth"
    torch.save(_rgb_vit().state_dict(), weights)
    wider = VisionTransformerND(in_chans=13, **{**SIZES, "embed_dim": 64})  # type: ignore[arg-type]
    with pytest.raises((CheckpointMismatchError, ValueError)):
        load_rgb_expanded(wider, weights, S2)
    four = VisionTransformerND(in_chans=4, **SIZES)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="an RGB model's weights into a 13-band model"):
        load_rgb_expanded(four, weights, S2)
    with pytest.raises(ValueError, match=r"\(D, 3, \.\.\.\)"):
        expand_rgb_weight(torch.zeros(2, 4, 1, 1), S2)
    with pytest.raises(ValueError, match="distinct"):
        RGBExpansion(bands=["B02", "B02"])
    with pytest.raises(ValueError, match="fill"):
        RGBExpansion(bands=BANDS, fill="random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rgb_bands"):
        RGBExpansion(bands=BANDS, rgb_bands=["B04", "B04", "B02"])


def test_the_config_class_builds_the_registered_architecture(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = tmp_path / "rgb.pth"
    torch.save(_rgb_vit().state_dict(), weights)
    model = RGBExpandedBackbone(
        weights=str(weights), architecture="vit_nd", kwargs=SIZES, expansion=S2
    )
    assert type(model) is VisionTransformerND and model.in_chans == 13
    printed = capsys.readouterr().out
    assert "fits this model" in printed and "adapted patch_embed.proj.weight" in printed
    again = rgb_expanded_backbone(
        weights=str(weights), architecture="vit_nd", kwargs=SIZES, expansion=S2
    )
    torch.testing.assert_close(again.state_dict(), model.state_dict())
    with torch.no_grad():  # a band-constant input: the RGB model's response (rescaled mean)
        x = torch.randn(1, 1, 16, 16)
        torch.testing.assert_close(
            model.patch_embed.proj(x.expand(1, 13, 16, 16)),
            _rgb_vit().patch_embed.proj(x.expand(1, 3, 16, 16)),
        )
