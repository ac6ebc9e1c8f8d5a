"""AudioMAE ViT-B/16 (AS-2M pretrained): the real key layout (encoder + Swin decoder) loads
strictly with the decoder dropped by name; numbers equal timm's ViT on the transposed input
(AudioMAE runs over (time, mel), ours over (mel, time)); other layouts fail naming keys."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from runpy import run_path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from einops import rearrange
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

import domainfm.domains.audio  # noqa: F401 - registers the releases
from domainfm.pretrained.registry import RELEASED, load_released
from domainfm.pretrained.report import CheckpointMismatchError

released_files = SimpleNamespace(**run_path(str(Path(__file__).parents[3] / "released_files.py")))

NAME = "audiomae-vit-b-as2m-pretrained"
SMALL = {"embed_dim": 32, "depth": 2, "num_heads": 2}  # the release's 8 x 64 grid


def encoder_shapes(dim: int, depth: int, tokens: int) -> dict[str, tuple[int, ...]]:
    """``models_mae.MaskedAutoencoderViT`` encoder keys and shapes (timm ViT, 1 channel)."""
    return released_files.vit_encoder_shapes(dim, depth, 1 + tokens, (1, 16, 16))


def decoder_shapes(dim: int, tokens: int, dec: int = 512, depth: int = 16, heads: int = 16):
    """The ``decoder_mode=1`` decoder: 16 ``timm_patch`` Swin blocks (meta MLP 2 → 384 →
    heads), decoder_pred over a 16×16 patch."""
    shapes = released_files.mae_decoder_shapes(dim, dec, 1 + tokens, 256)
    for i in range(depth):
        block = {
            "attn.tau": (heads,),
            "attn.qkv.weight": (3 * dec, dec),
            "attn.qkv.bias": (3 * dec,),
            "attn.proj.weight": (dec, dec),
            "attn.proj.bias": (dec,),
            "attn.meta_mlp.fc1.weight": (384, 2),
            "attn.meta_mlp.fc1.bias": (384,),
            "attn.meta_mlp.fc2.weight": (heads, 384),
            "attn.meta_mlp.fc2.bias": (heads,),
            "norm1.weight": (dec,),
            "norm1.bias": (dec,),
            "mlp.fc1.weight": (4 * dec, dec),
            "mlp.fc1.bias": (4 * dec,),
            "mlp.fc2.weight": (dec, 4 * dec),
            "mlp.fc2.bias": (dec,),
            "norm2.weight": (dec,),
            "norm2.bias": (dec,),
        }
        shapes.update({f"decoder_blocks.{i}.{k}": s for k, s in block.items()})
    return shapes


def audiomae_file(encoder: dict[str, Tensor], device: str = "cpu", **dec: int) -> dict[str, Any]:
    """``pretrained.pth`` as ``misc.save_model`` writes it, around an encoder state."""
    dim = encoder["cls_token"].shape[-1]
    tokens = encoder["pos_embed"].shape[1] - 1
    decoder = {
        k: torch.randn(s, device=device) for k, s in decoder_shapes(dim, tokens, **dec).items()
    }
    return {"model": {**encoder, **decoder}, "epoch": 32, "scaler": {}, "optimizer": {}}


def build_release(device: str) -> tuple[Any, str]:
    """The released file's content, full size (64 × 8 patches, ViT-B, 16 Swin blocks)."""
    encoder = {k: torch.empty(s, device=device) for k, s in encoder_shapes(768, 12, 512).items()}
    return audiomae_file(encoder, device), ".pth"


LAYOUT_FILES: dict[str, Callable[[str], tuple[Any, str]]] = {NAME: build_release}


def test_full_size_layout_loads_strictly_with_the_decoder_dropped() -> None:
    entry = RELEASED.get(NAME)
    content, _ = build_release("meta")
    model, state, dropped, report = released_files.full_size_report(NAME, content, "pretrained.pth")
    assert model.pos_embed is not None and model.pos_embed.is_meta
    assert report.ok and not report.unexpected and len(report.loaded) == len(state)
    assert set(dropped) == set(decoder_shapes(768, 512))
    assert len(dropped) == 8 + 16 * 17
    assert entry.pretext is None  # Swin decoder: not our MAE decoder


@pytest.fixture(scope="module")
def reference() -> nn.Module:
    torch.manual_seed(0)
    return VisionTransformer(
        img_size=(1024, 128),
        patch_size=16,
        in_chans=1,
        embed_dim=32,
        depth=2,
        num_heads=2,
        num_classes=0,
    ).eval()


def test_equals_timm_vit_on_the_transposed_input(reference: nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "pretrained.pth"
    torch.save(audiomae_file(dict(reference.state_dict()), dec=16, depth=1, heads=2), path)
    model, report = load_released(NAME, path, model_kwargs=SMALL)
    assert report.ok and len(report.loaded) == len(model.state_dict())
    assert len(report.dropped) == 8 + 17 and not report.resampled
    x = torch.randn(2, 1, 128, 1024)  # (B, 1, mel, time), the front end's orientation
    with torch.no_grad():
        ours, grid = model.eval().forward_tokens(x)
        theirs = reference.forward_features(x.transpose(-1, -2))  # AudioMAE's (time, mel)
    assert grid.shape == (8, 64) and grid.axes == ("f", "t")
    patches = rearrange(theirs[:, 1:], "b (t f) d -> b (f t) d", f=8)
    torch.testing.assert_close(ours, torch.cat([theirs[:, :1], patches], dim=1))
    torch.testing.assert_close(model(x), ours[:, 1:].mean(dim=1))  # mean of patch tokens


def test_other_grids_resample_the_stored_table(reference: nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "pretrained.pth"
    torch.save(audiomae_file(dict(reference.state_dict()), dec=16, depth=1, heads=2), path)
    _, report = load_released(NAME, path, model_kwargs={**SMALL, "grid_size": [8, 16]})
    assert report.resampled == [("pos_embed", (1, 513, 32), (1, 129, 32))]


def test_other_layouts_fail_naming_keys_or_file(reference: nn.Module, tmp_path: Path) -> None:
    flat = tmp_path / "flat.pth"
    torch.save(dict(reference.state_dict()), flat)  # no 'model' wrapper
    with pytest.raises(ValueError, match=r"flat\.pth does not have the key layout"):
        load_released(NAME, flat, model_kwargs=SMALL)
    content = audiomae_file(dict(reference.state_dict()), dec=16, depth=1, heads=2)
    content["model"]["blocks.1.attn.qkv_w"] = content["model"].pop("blocks.1.attn.qkv.weight")
    renamed = tmp_path / "renamed.pth"
    torch.save(content, renamed)
    with pytest.raises(CheckpointMismatchError, match=r"missing +blocks\.1\.attn\.qkv\.weight"):
        load_released(NAME, renamed, model_kwargs=SMALL)
    with pytest.raises(CheckpointMismatchError, match=r"unexpected +blocks\.1\.attn\.qkv_w"):
        load_released(NAME, renamed, model_kwargs=SMALL)


def test_contract_is_audiomae_fbank() -> None:
    contract = RELEASED.get(NAME).contract
    frontend = contract.frontend_module
    assert contract.sample_rate == 16000 and contract.frames == 1024
    assert contract.frontend["architecture"] == "kaldi_fbank"
    assert (frontend.n_bins, frontend.mean, frontend.std) == (128, -4.2677393, 4.5689974)
    assert frontend.norm_scale == 2.0  # (x - mean) / (2 std), as dataset.py
    assert contract.normalize(torch.zeros(16000 * 2)).shape == (128, 198)
