"""Released Swin UNETR key layouts load strictly into SwinViT3DLegacy and match the encoder
of MONAI's Swin UNETR as these weights were trained (MONAI < 1.5's patch merging).

No file can be downloaded here: each test writes a checkpoint with the real layout (key
names, nesting, prefixes and shapes) from MONAI's own Swin UNETR encoder, at a small
``feature_size`` (the key names do not depend on it), and loads it through the same code
path a user's real file takes. The reference is MONAI's ``SwinUNETR`` with the old merging
restated (``tests/domains/medical3d/monai_merging.py``, loaded by path).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from runpy import run_path
from typing import Any

import pytest
import torch
from monai.networks.nets import UNETR, SwinUNETR
from monai.networks.nets.swin_unetr import PatchMergingV2

import domainfm.domains.medical3d  # noqa: F401 - registers the releases
from domainfm.core.backbone import build_backbone
from domainfm.core.vit import VisionTransformerND
from domainfm.domains.medical3d.swin import SwinViT3D
from domainfm.domains.medical3d.swin_legacy import SwinViT3DLegacy
from domainfm.pretrained import RELEASED, CheckpointMismatchError, load_released
from domainfm.pretrained.identify import meta_parameters
from domainfm.pretrained.registry import mapped_release_state
from domainfm.pretrained.report import compare_state_dict

SMALL = {"feature_size": 12}
SWIN_RELEASES = (
    "swin-unetr-ssl-model_swinvit",
    "swin-unetr-ssl-pretrain-checkpoint",
    "swin-unetr-ssl-50k",
    "monai-zoo-swin-unetr",
)


_MERGING = run_path(str(Path(__file__).parents[1] / "monai_merging.py"))
MonaiPre15PatchMerging = _MERGING["MonaiPre15PatchMerging"]


def ssl_heads(dim: int) -> dict[str, tuple[int, ...]]:
    """SSLHead's heads (Pretrain/models/ssl_head.py, upsample "vae") on a ``dim``-wide
    encoder output (16 * feature_size): rotation, contrastive, and the first conv of the
    reconstruction head (each later conv is ``conv.<i>.*`` too)."""
    return {
        "rotation_head.weight": (4, dim),
        "rotation_head.bias": (4,),
        "contrastive_head.weight": (512, dim),
        "contrastive_head.bias": (512,),
        "conv.0.weight": (dim // 2, dim, 3, 3, 3),
        "conv.0.bias": (dim // 2,),
    }


SSL_HEADS = ssl_heads(192)  # feature_size 12


@pytest.fixture(scope="module")
def monai_model() -> SwinUNETR:
    """MONAI's Swin UNETR as the releases were trained: MONAI < 1.5's patch merging."""
    torch.manual_seed(0)
    return SwinUNETR(
        in_channels=1, out_channels=3, feature_size=12, downsample=MonaiPre15PatchMerging
    ).eval()


def _encoder(model: SwinUNETR) -> dict[str, torch.Tensor]:
    """The encoder's keys relative to ``swinViT.`` in the original research naming (fc1/fc2)."""
    return {
        k.replace("mlp.linear1.", "mlp.fc1.").replace("mlp.linear2.", "mlp.fc2."): v
        for k, v in model.swinViT.state_dict().items()
    }


def _check_same_features(model: torch.nn.Module, monai_model: SwinUNETR) -> None:
    assert isinstance(model, SwinViT3DLegacy)  # every Swin release: MONAI < 1.5's merging
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


def test_swin_releases_build_the_pre_1_5_merging() -> None:
    """Every Swin release was trained before MONAI 1.5 (see the module docstring of
    released/swin_unetr.py); the ViT-based UNETR has no patch merging and is unaffected."""
    for name in SWIN_RELEASES:
        assert RELEASED.get(name).architecture == "swin_vit_3d_legacy", name
    assert RELEASED.get("monai-unetr").architecture == "vit_nd"


def test_current_monai_merging_computes_other_features(
    tmp_path: Path, monai_model: SwinUNETR
) -> None:
    """Why the legacy backbone: the same released file in ``swin_vit_3d`` (MONAI >= 1.5's
    merging) loads just as strictly but computes other features from the first merging on;
    ``swin_vit_3d_legacy`` computes the features of the model the weights were trained in."""
    state = {f"module.{k}": v for k, v in _encoder(monai_model).items()}
    torch.save({"state_dict": state}, tmp_path / "model_swinvit.pt")
    legacy, report = load_released(
        "swin-unetr-ssl-model_swinvit", tmp_path / "model_swinvit.pt", model_kwargs=SMALL
    )
    assert report.ok and isinstance(legacy, SwinViT3DLegacy)
    entry = RELEASED.get("swin-unetr-ssl-model_swinvit")
    mapped, _ = mapped_release_state(entry, {"state_dict": state}, path="model_swinvit.pt")
    current = build_backbone("swin_vit_3d", {**entry.kwargs, **SMALL})
    assert type(current) is SwinViT3D
    current.load_state_dict(mapped)  # strict: the same keys and shapes
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        ref = monai_model.swinViT(x, normalize=True)
        ours = legacy.eval().forward_intermediates(x)
        new = current.eval().forward_intermediates(x)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(new[0], ref[0])  # the patch embedding: no merging yet
    for i in range(1, len(ref)):
        assert not torch.allclose(new[i], ref[i], atol=1e-3), i

    monai_current = SwinUNETR(in_channels=1, out_channels=3, feature_size=12).eval()
    monai_current.load_state_dict(monai_model.state_dict())
    with torch.no_grad():  # the difference is MONAI's own: its current SwinUNETR agrees
        for a, b in zip(new, monai_current.swinViT(x, normalize=True), strict=True):
            torch.testing.assert_close(a, b)


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
    assert report.dropped == ["contrastive_head.weight", "conv.0.weight", "rotation_head.weight"]
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
    assert report.dropped == [
        "encoder.mask_token",
        "encoder.norm.bias",
        "encoder.norm.weight",
        "out.conv.conv.bias",
        "out.conv.conv.weight",
    ]
    _check_same_features(model, monai_model)


def test_monai_zoo_swin_unetr_state_dict(tmp_path: Path, monai_model: SwinUNETR) -> None:
    torch.save(monai_model.state_dict(), tmp_path / "model.pt")
    model, report = load_released("monai-zoo-swin-unetr", tmp_path / "model.pt", model_kwargs=SMALL)
    assert report.ok
    decoder = [k for k in monai_model.state_dict() if not k.startswith("swinViT.")]
    assert report.dropped == sorted(decoder) and decoder  # encoder1..10, decoder1..5, out
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
    assert not any(isinstance(m, PatchMergingV2) for m in unetr.modules())  # no merging
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
    assert len(report.dropped) == len(state) - len(vit_keys)  # the decoder, norm_cross_attn
    assert "blocks.0.norm_cross_attn.weight" in report.dropped and "out.conv.conv.weight" in (
        report.dropped
    )
    assert isinstance(model, VisionTransformerND)
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


def test_real_model_swinvit_holds_a_final_norm(tmp_path: Path, monai_model: SwinUNETR) -> None:
    """The real model_swinvit.pt holds ``module.norm.{weight,bias}`` beyond the encoder
    (research-contributions #150): dropped by name and reported, as are SSL heads should a
    copy carry them; the encoder still loads strictly and computes MONAI's features."""
    state = {f"module.{k}": v for k, v in _encoder(monai_model).items()}
    state["module.norm.weight"] = torch.ones(192)  # 16 * feature_size
    state["module.norm.bias"] = torch.zeros(192)
    state.update({f"module.{k}": torch.zeros(shape) for k, shape in SSL_HEADS.items()})
    torch.save({"state_dict": state}, tmp_path / "model_swinvit.pt")
    model, report = load_released(
        "swin-unetr-ssl-model_swinvit", tmp_path / "model_swinvit.pt", model_kwargs=SMALL
    )
    assert report.ok and not report.unexpected
    assert report.dropped == sorted(
        ["module.norm.weight", "module.norm.bias", *(f"module.{k}" for k in SSL_HEADS)]
    )
    assert len(report.loaded) == len(state) - len(report.dropped)
    _check_same_features(model, monai_model)
    state["module.norm2.weight"] = torch.ones(192)  # anything else: named, not dropped
    torch.save({"state_dict": state}, tmp_path / "model_swinvit.pt")
    with pytest.raises(CheckpointMismatchError, match=r"unexpected +swinViT\.norm2\.weight"):
        load_released(
            "swin-unetr-ssl-model_swinvit", tmp_path / "model_swinvit.pt", model_kwargs=SMALL
        )


def _swin_unetr_full(device: str) -> dict[str, torch.Tensor]:
    """MONAI ``SwinUNETR`` at the released size (feature_size 48, 14 BTCV classes), its weights
    on ``device`` (MONAI's constructor cannot run on the meta device: parameters are moved
    there as they are made)."""
    with meta_parameters():
        model = SwinUNETR(in_channels=1, out_channels=14, feature_size=48)
    return {k: v.to(device) for k, v in model.state_dict().items()}


def _fc_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {
        k.replace("mlp.linear1.", "mlp.fc1.").replace("mlp.linear2.", "mlp.fc2."): v
        for k, v in state.items()
    }


def _model_swinvit_file(device: str) -> tuple[Any, str]:
    encoder = _fc_names(
        {k[8:]: v for k, v in _swin_unetr_full(device).items() if k.startswith("swinViT.")}
    )
    state = {f"module.{k}": v for k, v in encoder.items()}
    state["module.norm.weight"] = torch.ones(768, device=device)
    state["module.norm.bias"] = torch.zeros(768, device=device)
    return {"state_dict": state}, ".pt"


def _pretrain_checkpoint_file(device: str) -> tuple[Any, str]:
    full = _swin_unetr_full(device)
    state = {k.replace("swinViT.", "swin_vit.", 1): v for k, v in full.items() if "swinViT." in k}
    heads = ssl_heads(768)
    state.update({k: torch.zeros(shape, device=device) for k, shape in heads.items()})
    return {"epoch": 100, "state_dict": state, "optimizer": {}}, ".pt"


def _ssl_50k_file(device: str) -> tuple[Any, str]:
    layered = re.compile(r"^swinViT\.(layers[1-4])\.0\.")
    state = {
        "encoder." + layered.sub(r"\1.0.0.", k).removeprefix("swinViT."): v
        for k, v in _swin_unetr_full(device).items()
        if k.startswith("swinViT.")
    }
    extras = {
        "encoder.mask_token": (1, 1, 48),
        "encoder.norm.weight": (768,),
        "encoder.norm.bias": (768,),
        "out.conv.conv.weight": (1, 48, 1, 1, 1),
        "out.conv.conv.bias": (1,),
    }
    state.update({k: torch.zeros(shape, device=device) for k, shape in extras.items()})
    return {"model": state}, ".pth"


def _unetr_file(device: str) -> tuple[Any, str]:
    """research-contributions UNETR/BTCV ``UNETR_model_best_acc.pth``: {"state_dict": ...}."""
    with torch.device(device):
        model = UNETR(
            in_channels=1,
            out_channels=14,
            img_size=96,
            feature_size=16,
            hidden_size=768,
            mlp_dim=3072,
            num_heads=12,
        )
    return {"epoch": 5000, "state_dict": model.state_dict()}, ".pth"


LAYOUT_FILES: dict[str, Callable[[str], tuple[Any, str]]] = {
    "swin-unetr-ssl-model_swinvit": _model_swinvit_file,
    "swin-unetr-ssl-pretrain-checkpoint": _pretrain_checkpoint_file,
    "swin-unetr-ssl-50k": _ssl_50k_file,
    "monai-zoo-swin-unetr": lambda d: (_swin_unetr_full(d), ".pt"),
    "monai-unetr": _unetr_file,
}
"""Each release's file at its real size and nesting (see tests/pretrained/test_identify.py)."""


def test_strict_layouts_full_size() -> None:
    """Every entry on its full-size file (meta device): all loaded, nothing missing or
    unexpected, the parts beyond the encoder dropped by name."""
    dropped = {
        "swin-unetr-ssl-model_swinvit": 2,  # module.norm.*
        "swin-unetr-ssl-pretrain-checkpoint": len(SSL_HEADS),
        "swin-unetr-ssl-50k": 5,
    }
    for name, build in LAYOUT_FILES.items():
        content, _ = build("meta")
        entry = RELEASED.get(name)
        state, gone = mapped_release_state(entry, content, path=name)
        with meta_parameters():
            model = build_backbone(entry.architecture, entry.kwargs)
        report = compare_state_dict(model, state)
        assert report.ok and len(report.loaded) == len(model.state_dict()), (name, report)
        assert len(gone) == dropped.get(name, len(gone)) and (gone or name in dropped), name
