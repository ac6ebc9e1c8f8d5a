"""Released Swin UNETR key layouts load strictly into SwinViT3D and match MONAI's encoder.

No file can be downloaded here: each test writes a checkpoint with the real layout (key
names, nesting, prefixes and shapes) from MONAI's own Swin UNETR encoder, at a small
``feature_size`` (the key names do not depend on it), and loads it through the same code
path a user's real file takes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from monai.networks.nets import SwinUNETR

from domainfm.pretrained import CheckpointMismatchError, load_released

SMALL = {"feature_size": 12}


@pytest.fixture(scope="module")
def monai_model() -> SwinUNETR:
    torch.manual_seed(0)
    return SwinUNETR(in_channels=1, out_channels=3, feature_size=12).eval()


def _encoder(model: SwinUNETR) -> dict[str, torch.Tensor]:
    """The encoder's keys relative to ``swinViT.`` in the original research naming (fc1/fc2)."""
    return {
        k.replace("mlp.linear1.", "mlp.fc1.").replace("mlp.linear2.", "mlp.fc2."): v
        for k, v in model.swinViT.state_dict().items()
    }


def _check_same_features(model: torch.nn.Module, monai_model: SwinUNETR) -> None:
    x = torch.randn(1, 1, 64, 64, 64)
    with torch.no_grad():
        ours = model.eval().forward_intermediates(x)
        ref = monai_model.swinViT(x, normalize=True)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b)


def test_model_swinvit_layout(tmp_path: Path, monai_model: SwinUNETR) -> None:
    state = {f"module.{k}": v for k, v in _encoder(monai_model).items()}
    assert "module.layers1.0.downsample.reduction.weight" in state
    assert "module.patch_embed.proj.weight" in state
    torch.save({"state_dict": state}, tmp_path / "model_swinvit.pt")
    model, report = load_released(
        "swin-unetr-ssl-model_swinvit", tmp_path / "model_swinvit.pt", model_kwargs=SMALL
    )
    assert report.ok and len(report.loaded) == len(state)
    _check_same_features(model, monai_model)


def test_pretraining_script_layout_drops_ssl_heads(tmp_path: Path, monai_model: SwinUNETR) -> None:
    state = {f"swin_vit.{k}": v for k, v in _encoder(monai_model).items()}
    state.update(
        {
            "rotation_head.weight": torch.zeros(4, 192),
            "contrastive_head.weight": torch.zeros(512, 192),
            "conv.0.weight": torch.zeros(1),
        }
    )
    torch.save({"epoch": 100, "state_dict": state}, tmp_path / "model_bestValRMSE.pt")
    model, report = load_released(
        "swin-unetr-ssl-pretrain-checkpoint", tmp_path / "model_bestValRMSE.pt", model_kwargs=SMALL
    )
    assert report.ok and not report.unexpected
    _check_same_features(model, monai_model)


def test_ssl_50k_layout(tmp_path: Path, monai_model: SwinUNETR) -> None:
    layered = re.compile(r"^(layers[1-4])\.0\.")
    state = {
        "encoder." + layered.sub(r"\1.0.0.", k): v
        for k, v in monai_model.swinViT.state_dict().items()
    }
    assert "encoder.layers2.0.0.blocks.1.attn.qkv.weight" in state
    state.update(
        {
            "encoder.mask_token": torch.zeros(1, 1, 12),
            "encoder.norm.weight": torch.ones(192),
            "encoder.norm.bias": torch.zeros(192),
            "out.conv.conv.weight": torch.zeros(1, 12, 1, 1, 1),
            "out.conv.conv.bias": torch.zeros(1),
        }
    )
    torch.save({"model": state}, tmp_path / "ssl_pretrained_weights.pth")
    model, report = load_released(
        "swin-unetr-ssl-50k", tmp_path / "ssl_pretrained_weights.pth", model_kwargs=SMALL
    )
    assert report.ok and not report.unexpected
    _check_same_features(model, monai_model)


def test_monai_zoo_swin_unetr_state_dict(tmp_path: Path, monai_model: SwinUNETR) -> None:
    torch.save(monai_model.state_dict(), tmp_path / "model.pt")
    model, report = load_released("monai-zoo-swin-unetr", tmp_path / "model.pt", model_kwargs=SMALL)
    assert report.ok
    _check_same_features(model, monai_model)


def test_wrong_layout_fails_loudly_naming_keys(tmp_path: Path, monai_model: SwinUNETR) -> None:
    """A pretraining checkpoint given as model_swinvit.pt: nothing silently loads."""
    state = {f"swin_vit.{k}": v for k, v in _encoder(monai_model).items()}
    torch.save({"state_dict": state}, tmp_path / "ckpt.pt")
    with pytest.raises(CheckpointMismatchError) as info:
        load_released("swin-unetr-ssl-model_swinvit", tmp_path / "ckpt.pt", model_kwargs=SMALL)
    report = info.value.report
    assert "swinViT.patch_embed.proj.weight" in report.missing
    assert "swin_vit.patch_embed.proj.weight" in report.unexpected
    assert not report.loaded
    with pytest.raises(ValueError, match=r"does not have the key layout of 'swin-unetr-ssl-50k'"):
        load_released("swin-unetr-ssl-50k", tmp_path / "ckpt.pt", model_kwargs=SMALL)


def test_feature_size_mismatch_is_reported(tmp_path: Path, monai_model: SwinUNETR) -> None:
    state = {f"module.{k}": v for k, v in _encoder(monai_model).items()}
    torch.save({"state_dict": state}, tmp_path / "model_swinvit.pt")
    with pytest.raises(CheckpointMismatchError, match=r"mismatched.*patch_embed\.proj\.weight"):
        load_released("swin-unetr-ssl-model_swinvit", tmp_path / "model_swinvit.pt")  # 48


def test_monai_unetr_layout_matches_monai_vit(tmp_path: Path) -> None:
    """A MONAI UNETR state dict (research BTCV checkpoint layout: {"state_dict": ...}) loads
    strictly into VisionTransformerND, which then computes MONAI's ViT features."""
    from monai.networks.nets import UNETR

    torch.manual_seed(0)
    unetr = UNETR(
        in_channels=1,
        out_channels=3,
        img_size=32,
        feature_size=8,
        hidden_size=48,
        mlp_dim=192,
        num_heads=4,
    ).eval()
    state = unetr.state_dict()
    assert "vit.patch_embedding.patch_embeddings.weight" in state
    assert (
        "vit.blocks.0.norm_cross_attn.weight" in state
        and "decoder5.transp_conv.conv.weight" in state
    )
    torch.save({"state_dict": state, "epoch": 7}, tmp_path / "UNETR_model_best_acc.pth")
    tiny = {"embed_dim": 48, "num_heads": 4, "grid_size": 2}
    model, report = load_released(
        "monai-unetr", tmp_path / "UNETR_model_best_acc.pth", model_kwargs=tiny
    )
    vit_keys = [k for k in state if k.startswith("vit.") and "norm_cross_attn" not in k]
    assert report.ok and len(report.loaded) == len(vit_keys)
    x = torch.randn(2, 1, 32, 32, 32)
    with torch.no_grad():
        ours, _ = model.eval().forward_tokens(x)
        ref, _ = unetr.vit(x)  # normed tokens (B, N, D), per-block hidden states
    # 12 blocks of fused SDPA vs MONAI's einsum attention in float32: ~3e-5 apart; a wrong
    # mapping (names, qkv order, eps) is off by O(1)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=2e-4)

    broken = {k: v for k, v in state.items() if "blocks.3.attn.qkv" not in k}
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(CheckpointMismatchError, match=r"blocks\.3\.attn\.qkv\.weight"):
        load_released("monai-unetr", tmp_path / "broken.pt", model_kwargs=tiny)
