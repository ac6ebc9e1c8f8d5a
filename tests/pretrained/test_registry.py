from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from safetensors.torch import save_file

from domainfm.pretrained import RELEASED, CheckpointMismatchError, load_released


def _timm_vit_file(device: str) -> tuple[Any, str]:
    """``vit_small_patch16_224.safetensors`` as timm publishes it: the plain state dict,
    classifier included (``head.*`` (1000, 384))."""
    with torch.device(device):
        state = timm.create_model("vit_small_patch16_224", pretrained=False).state_dict()
    return state, ".safetensors"


LAYOUT_FILES: dict[str, Callable[[str], tuple[Any, str]]] = {
    "timm-vit-small-patch16-224": _timm_vit_file,
}


def test_timm_vit_release_loads_and_matches_timm(tmp_path: Path) -> None:
    """A state dict with the real timm ViT-S/16 layout (no download) loads strictly."""
    ref = timm.create_model("vit_small_patch16_224", pretrained=False).eval()
    path = tmp_path / "vit_s16.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    model, report = load_released("timm-vit-small-patch16-224", path)
    assert report.ok and not report.unexpected and len(report.loaded) == len(model.state_dict())
    assert report.dropped == ["head.bias", "head.weight"]  # the classifier, by name
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model.eval().forward_tokens(x)[0], ref.forward_features(x))
    entry = RELEASED.get("timm-vit-small-patch16-224")
    assert entry.input["normalization"]["mean"] == [0.485, 0.456, 0.406]
    # a DDP-style "module." wrapper is not this layout: loud failure naming the keys
    torch.save(
        {"model": {f"module.{k}": v for k, v in ref.state_dict().items()}}, tmp_path / "wrapped.pth"
    )
    with pytest.raises(CheckpointMismatchError, match=r"module\.blocks\.0\.attn\.qkv\.weight"):
        load_released("timm-vit-small-patch16-224", tmp_path / "wrapped.pth")


def test_release_resampled_to_new_grid(tmp_path: Path) -> None:
    ref = timm.create_model("vit_small_patch16_224", pretrained=False)
    path = tmp_path / "vit.pth"
    torch.save(ref.state_dict(), path)
    model, report = load_released(
        "timm-vit-small-patch16-224", path, model_kwargs={"grid_size": 8, "in_chans": 3}
    )
    assert report.resampled == [("pos_embed", (1, 197, 384), (1, 65, 384))]
    assert model(torch.randn(1, 3, 128, 128)).shape == (1, 384)


def test_missing_file_is_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        load_released("timm-vit-small-patch16-224", tmp_path / "absent.pth")
    with pytest.raises(KeyError, match="unknown released checkpoint 'nope'"):
        load_released("nope", tmp_path / "absent.pth")
