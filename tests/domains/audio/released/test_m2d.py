"""M2D release: the full training checkpoint (``{'model', 'optimizer', 'epoch', 'scaler',
'args'}``, decoder and EMA target encoder included) and the flat encoder-only file load
strictly with the pretraining parts dropped by name; a shrunk copy gives timm's
VisionTransformer numbers (M2D's encoder-only model is a timm ViT); ``norm_stats`` is checked;
the log-mel is nnAudio's (Slaney mel filters built here by hand)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from runpy import run_path
from types import SimpleNamespace
from typing import Any

import pytest
import timm
import torch
from torch import Tensor

import domainfm.domains.audio  # noqa: F401 - registers the releases
from domainfm.domains.audio.released.m2d import M2D_VIT_B_80X608
from domainfm.pretrained.registry import RELEASED, load_released, mapped_release_state
from domainfm.pretrained.report import CheckpointMismatchError, compare_state_dict

released_files = SimpleNamespace(**run_path(str(Path(__file__).parents[3] / "released_files.py")))

NAME = "m2d-vit-b-80x608"
SMALL = {"embed_dim": 64, "depth": 2, "num_heads": 4, "grid_size": [2, 4]}  # 32 x 64 input


def pretraining_shapes(
    d: int = 768, depth: int = 12, dec: int = 512, tokens: int = 191
) -> dict[str, tuple[int, ...]]:
    """M2DViT's keys beyond the encoder (m2d_vit_base: decoder 512 x 8 blocks, target encoder)."""
    shapes = released_files.mae_decoder_shapes(d, dec, tokens, d)  # predicts target features
    shapes.update({"target_norm.weight": (d,), "target_norm.bias": (d,)})
    for i in range(8):
        shapes.update(released_files.timm_block_shapes(f"decoder_blocks.{i}.", dec))
    for i in range(depth):
        shapes.update(released_files.timm_block_shapes(f"target_blocks.{i}.", d))
    return shapes


def encoder_shapes(d: int = 768, depth: int = 12, tokens: int = 191) -> dict[str, tuple[int, ...]]:
    return released_files.vit_encoder_shapes(d, depth, tokens, (1, 16, 16))


def _tensors(shapes: dict[str, tuple[int, ...]], device: str) -> dict[str, Tensor]:
    return {
        k: torch.empty(s, device=device).normal_()
        if device != "meta"
        else torch.empty(s, device="meta")
        for k, s in shapes.items()
    }


def _checkpoint(model: dict[str, Tensor]) -> dict[str, Any]:
    """As train_audio.py's misc.save_model writes ``checkpoint-300.pth``."""
    args = argparse.Namespace(model="m2d_vit_base", input_size="80x608", patch_size="16x16")
    return {"model": model, "optimizer": {}, "epoch": 300, "scaler": {}, "args": args}


def full_checkpoint(device: str) -> tuple[Any, str]:
    state = _tensors({**encoder_shapes(), **pretraining_shapes()}, device)
    return _checkpoint(state), ".pth"


LAYOUT_FILES: dict[str, Callable[[str], tuple[Any, str]]] = {NAME: full_checkpoint}


def test_full_size_checkpoint_maps_strictly() -> None:
    entry = RELEASED.get(NAME)
    content, _ = full_checkpoint("meta")
    model, state, dropped, report = released_files.full_size_report(
        NAME, content, "checkpoint-300.pth"
    )
    assert report.ok and not report.unexpected and not report.missing, report
    assert sorted(report.loaded) == sorted(encoder_shapes())
    assert dropped == sorted(pretraining_shapes())
    # the encoder-only file (flat, with norm_stats) maps the same, norm_stats dropped
    flat = {**_tensors(encoder_shapes(), "meta"), "norm_stats": torch.empty(2, device="meta")}
    state, dropped = mapped_release_state(entry, flat, path="enconly.pth")
    assert compare_state_dict(model, state).ok and dropped == ["norm_stats"]


def _timm_m2d(seed: int) -> torch.nn.Module:
    """M2D's encoder-only model is a timm VisionTransformer (in_chans 1, eps 1e-6, no head)."""
    torch.manual_seed(seed)
    vit = timm.create_model(
        "vit_base_patch16_224",
        pretrained=False,
        img_size=(32, 64),
        in_chans=1,
        embed_dim=64,
        depth=2,
        num_heads=4,
        num_classes=0,
    ).eval()
    with torch.no_grad():  # a non-trivial class token and positions
        vit.cls_token.normal_()
        vit.pos_embed.normal_()
    return vit


@pytest.mark.parametrize("stats", [None, [-7.1, 4.2]])
def test_shrunk_checkpoint_equals_timm(stats: list[float] | None, tmp_path: Path) -> None:
    vit = _timm_m2d(0)
    state = dict(vit.state_dict())
    assert not any(k.startswith("head.") and v.numel() for k, v in state.items())
    state.update(_tensors(pretraining_shapes(d=64, depth=2, dec=32, tokens=9), "cpu"))
    if stats is not None:
        state["norm_stats"] = torch.tensor(stats)
    path = tmp_path / "checkpoint-300.pth"
    torch.save(_checkpoint(state), path)
    model, report = load_released(NAME, path, model_kwargs=SMALL)
    assert report.ok and len(report.loaded) == len(model.state_dict())
    assert "decoder_blocks.0.attn.qkv.weight" in report.dropped
    assert ("norm_stats" in report.dropped) == (stats is not None)
    x = torch.randn(2, 1, 32, 64)
    with torch.no_grad():
        tokens, grid = model.eval().forward_tokens(x)
        torch.testing.assert_close(tokens, vit.forward_features(x))
        torch.testing.assert_close(model(x), tokens[:, 1:].mean(dim=1))  # mean of patches
    assert grid.axes == ("f", "t") and grid.shape == (2, 4)


def test_other_norm_stats_or_layout_fail(tmp_path: Path) -> None:
    vit = _timm_m2d(1)
    state = {**vit.state_dict(), "norm_stats": torch.tensor([-5.0, 3.0])}
    torch.save({"model": state}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"other\.pth does not have the key layout.*norm_stats"):
        load_released(NAME, tmp_path / "other.pth", model_kwargs=SMALL)
    state["norm_stats"] = torch.tensor([-7.1, 4.2])
    state["blocks.1.attn.in_proj.weight"] = state.pop("blocks.1.attn.qkv.weight")
    torch.save({"model": state}, tmp_path / "renamed.pth")
    with pytest.raises(CheckpointMismatchError) as err:
        load_released(NAME, tmp_path / "renamed.pth", model_kwargs=SMALL)
    assert err.value.report.unexpected == ["blocks.1.attn.in_proj.weight"]
    assert err.value.report.missing == ["blocks.1.attn.qkv.weight"]
    torch.save({"cfg": {}, "model": {"patch_embedding.weight": torch.ones(1)}}, tmp_path / "b.pt")
    with pytest.raises(ValueError, match=r"b\.pt does not have the key layout.*blocks"):
        load_released(NAME, tmp_path / "b.pt")


def _slaney_mel(f: Tensor) -> Tensor:
    """Hz → Slaney mel (linear below 1 kHz, logarithmic above), as librosa's default."""
    linear = f / (200.0 / 3)
    log = 15.0 + torch.log(f.clamp(min=1e-10) / 1000.0) / (math.log(6.4) / 27.0)
    return torch.where(f >= 1000.0, log, linear)


def _slaney_hz(m: Tensor) -> Tensor:
    linear = m * (200.0 / 3)
    log = 1000.0 * torch.exp((math.log(6.4) / 27.0) * (m - 15.0))
    return torch.where(m >= 15.0, log, linear)


def _mel_filters(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> Tensor:
    """librosa.filters.mel(htk=False, norm='slaney') by hand: ``(n_mels, n_fft // 2 + 1)``."""
    bins = torch.linspace(0, sr / 2, n_fft // 2 + 1, dtype=torch.float64)
    edges = _slaney_hz(
        torch.linspace(
            float(_slaney_mel(torch.tensor(fmin))),
            float(_slaney_mel(torch.tensor(fmax))),
            n_mels + 2,
            dtype=torch.float64,
        )
    )
    lower = (bins[None] - edges[:-2, None]) / (edges[1:-1] - edges[:-2])[:, None]
    upper = (edges[2:, None] - bins[None]) / (edges[2:] - edges[1:-1])[:, None]
    weights = torch.clamp(torch.minimum(lower, upper), min=0.0)
    return weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]


def test_log_mel_is_m2d_runtime() -> None:
    contract = RELEASED.get(NAME).contract
    assert contract.sample_rate == 16000 and contract.frames == 608
    kwargs = contract.frontend["kwargs"]
    assert contract.frontend["architecture"] == "log_mel_slaney"
    assert (kwargs["mean"], kwargs["std"]) == (-7.1, 4.2)
    wave = torch.rand(2, 8000) * 0.2 - 0.1
    spec = (
        torch.stft(
            wave,
            n_fft=400,
            hop_length=160,
            win_length=400,
            window=torch.hann_window(400),
            center=True,
            pad_mode="reflect",
            return_complex=True,
        ).abs()
        ** 2
    )  # (B, 201, T)
    mel = _mel_filters(16000, 400, 80, 50.0, 8000.0).float() @ spec
    expected = ((mel + torch.finfo(torch.float32).eps).log() + 7.1) / 4.2
    torch.testing.assert_close(contract.normalize(wave), expected, rtol=1e-4, atol=1e-4)
    assert M2D_VIT_B_80X608["grid_size"] == [5, 38]  # 80 / 16 x 608 / 16
