"""SatMAE releases: the full-size key layouts of ``pretrain-vit-large-e199.pth`` and
``fmow_pretrain.pth`` (written from upstream's model code, meta device) map strictly with the
decoder dropped by name; shrunk files in the release nesting load through the registry and
give the tokens of an independent forward (per-group ``F.conv2d``, SatMAE's concatenated
position ‖ group codes, timm blocks; timm's ViT for the RGB file); other layouts fail naming
the keys; the RGB decoder maps onto our MAE."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from runpy import run_path
from types import SimpleNamespace
from typing import Any

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import Tensor

import domainfm.domains.geospatial  # noqa: F401 - registers the releases
from domainfm.core.backbone import build_backbone
from domainfm.core.objectives.mae import MAE
from domainfm.domains.geospatial.released.satmae import (
    GROUP_VIT_L,
    SATMAE_BANDS,
    SATMAE_GROUPS,
    VIT_L16_RGB,
)
from domainfm.domains.geospatial.spectral_temporal import SATMAE_S2_GROUPS
from domainfm.pretrained.registry import RELEASED, load_released, split_dropped
from domainfm.pretrained.report import CheckpointMismatchError, compare_state_dict

released_files = SimpleNamespace(**run_path(str(Path(__file__).parents[3] / "released_files.py")))

GROUP = "satmae-group-channel-vit-l"
RGB = "satmae-fmow-rgb-vit-l"
SMALL_GROUP = {**GROUP_VIT_L, "grid_size": 4, "embed_dim": 64, "channel_embed": 16, "depth": 2}
SMALL_GROUP["num_heads"] = 4
SMALL_DECODER = {"dim": 32, "depth": 1, "heads": 4, "channel": 8}
FULL_DECODER = {"dim": 512, "depth": 8, "heads": 16, "channel": 128}


def _blocks(prefix: str, dim: int, heads: int, depth: int) -> dict[str, Tensor]:
    """timm ``Block`` keys/shapes (SatMAE's blocks are timm's) under ``prefix.N.``."""
    with torch.device("meta"):
        block = Block(dim, heads, 4.0, qkv_bias=True)
    return {f"{prefix}.{i}.{k}": v for i in range(depth) for k, v in block.state_dict().items()}


def _group_mae_state(kw: dict[str, Any], dec: dict[str, int], device: str) -> dict[str, Tensor]:
    """``MaskedAutoencoderGroupChannelViT.state_dict()`` key names and shapes, random values."""
    d, dc, p = kw["embed_dim"], kw["channel_embed"], kw["patch_size"]
    groups, n = kw["channel_groups"], 1 + kw["grid_size"] ** 2
    shapes: dict[str, tuple[int, ...]] = {"cls_token": (1, 1, d), "pos_embed": (1, n, d - dc)}
    shapes["channel_embed"] = (1, len(groups), dc)
    for i, group in enumerate(groups):
        shapes[f"patch_embed.{i}.proj.weight"] = (d, len(group), p, p)
        shapes[f"patch_embed.{i}.proj.bias"] = (d,)
        shapes[f"decoder_pred.{i}.weight"] = (len(group) * p * p, dec["dim"])
        shapes[f"decoder_pred.{i}.bias"] = (len(group) * p * p,)
    blocks = _blocks("blocks", d, kw["num_heads"], kw["depth"])
    blocks.update(_blocks("decoder_blocks", dec["dim"], dec["heads"], dec["depth"]))
    shapes.update({k: tuple(v.shape) for k, v in blocks.items()})
    shapes.update({"norm.weight": (d,), "norm.bias": (d,), "decoder_embed.weight": (dec["dim"], d)})
    shapes.update({"decoder_embed.bias": (dec["dim"],), "mask_token": (1, 1, dec["dim"])})
    shapes["decoder_pos_embed"] = (1, n, dec["dim"] - dec["channel"])
    shapes["decoder_channel_embed"] = (1, len(groups) + 1, dec["channel"])
    shapes.update({"decoder_norm.weight": (dec["dim"],), "decoder_norm.bias": (dec["dim"],)})
    with torch.device(device):
        state = {k: torch.randn(s) * 0.1 for k, s in shapes.items()}
    if device != "meta":
        state["pos_embed"][:, 0] = 0  # the sin-cos table's class row
    return state


def _checkpoint(state: dict[str, Tensor]) -> dict[str, Any]:
    """``util/misc.py`` ``save_model``'s nesting."""
    args = argparse.Namespace(model="mae_vit_large_patch16", input_size=96, patch_size=8)
    return {"model": state, "optimizer": {}, "epoch": 199, "scaler": {"scale": 1.0}, "args": args}


def _rgb_mae_state(device: str) -> dict[str, Tensor]:
    """``models_mae.MaskedAutoencoderViT`` (ViT-L/16, 224) key names and shapes."""
    with torch.device("meta"):
        vit = timm.create_model("vit_large_patch16_224", pretrained=False, num_classes=0)
    shapes = {k: tuple(v.shape) for k, v in vit.state_dict().items()}
    shapes.update({k: tuple(v.shape) for k, v in _blocks("decoder_blocks", 512, 16, 8).items()})
    shapes.update({"decoder_embed.weight": (512, 1024), "decoder_embed.bias": (512,)})
    shapes.update({"mask_token": (1, 1, 512), "decoder_pos_embed": (1, 197, 512)})
    shapes.update({"decoder_norm.weight": (512,), "decoder_norm.bias": (512,)})
    shapes.update({"decoder_pred.weight": (768, 512), "decoder_pred.bias": (768,)})
    with torch.device(device):
        return {k: torch.zeros(s) for k, s in shapes.items()}


LAYOUT_FILES: dict[str, Callable[[str], tuple[Any, str]]] = {
    GROUP: lambda device: (
        _checkpoint(_group_mae_state(GROUP_VIT_L, FULL_DECODER, device)),
        ".pth",
    ),
    RGB: lambda device: (_checkpoint(_rgb_mae_state(device)), ".pth"),
}


@pytest.mark.parametrize("name", [GROUP, RGB])
def test_full_size_layout_maps_strictly(name: str) -> None:
    content, suffix = LAYOUT_FILES[name]("meta")
    _, mapped, dropped, report = released_files.full_size_report(name, content, name + suffix)
    assert report.ok and not report.unexpected and not report.mismatched, report
    assert dropped and all(k.startswith(("decoder_", "mask_token")) for k in dropped)
    assert len(dropped) == sum(k.startswith(("decoder", "mask")) for k in content["model"])
    if name == GROUP:
        assert mapped["patch_embed.2.proj.weight"].shape == (1024, 2, 8, 8)
        assert mapped["pos_embed"].shape == (1, 145, 768)
        assert mapped["channel_embed"].shape == (1, 3, 256)
    else:
        assert mapped["pos_embed"].shape == (1, 197, 1024)


def _reference_group_tokens(state: dict[str, Tensor], x: Tensor, kw: dict[str, Any]) -> Tensor:
    """SatMAE's encoder forward, written from the paper / models_vit_group_channels."""
    p, groups = kw["patch_size"], kw["channel_groups"]
    embeds = []
    for i, group in enumerate(groups):
        w, b = state[f"patch_embed.{i}.proj.weight"], state[f"patch_embed.{i}.proj.bias"]
        embeds.append(F.conv2d(x[:, group], w, b, stride=p).flatten(2).transpose(1, 2))
    tokens = torch.stack(embeds, dim=1)  # (B, G, L, D)
    pos, chan = state["pos_embed"][0, 1:], state["channel_embed"][0]  # (L, Dp), (G, Dc)
    codes = torch.stack(
        [
            torch.stack([torch.cat([pos[t], chan[g]]) for t in range(pos.shape[0])])
            for g in range(len(groups))
        ]
    )  # (G, L, D), built token by token
    tokens = (tokens + codes).flatten(1, 2)
    cls = state["cls_token"].expand(x.shape[0], -1, -1)  # the MAE encoder adds no code to it
    seq = torch.cat([cls, tokens], dim=1)
    for i in range(kw["depth"]):
        block = Block(kw["embed_dim"], kw["num_heads"], 4.0, qkv_bias=True).eval()
        block.load_state_dict(
            {k.split(".", 2)[2]: v for k, v in state.items() if k.startswith(f"blocks.{i}.")}
        )
        seq = block(seq)
    return F.layer_norm(seq, (kw["embed_dim"],), state["norm.weight"], state["norm.bias"], 1e-6)


def test_group_channel_numbers_match_an_independent_forward(tmp_path: Path) -> None:
    torch.manual_seed(0)
    state = _group_mae_state(SMALL_GROUP, SMALL_DECODER, "cpu")
    path = tmp_path / "pretrain-vit-large-e199.pth"
    torch.save(_checkpoint(state), path)
    model, report = load_released(GROUP, path, model_kwargs=SMALL_GROUP)
    assert report.ok and not report.resampled and len(report.loaded) == len(model.state_dict())
    assert report.dropped == sorted(k for k in state if k.startswith(("decoder_", "mask_token")))
    x = torch.randn(2, 10, 32, 32)
    with torch.no_grad():
        tokens, grid = model.eval().forward_tokens(x)
        expected = _reference_group_tokens(state, x, SMALL_GROUP)
    assert grid.shape == (3, 4, 4) and grid.axes == ("g", "h", "w")
    torch.testing.assert_close(tokens, expected)
    torch.testing.assert_close(model(x), expected[:, 0])


def test_group_channel_wrong_layouts_fail_naming_keys(tmp_path: Path) -> None:
    state = _group_mae_state(SMALL_GROUP, SMALL_DECODER, "cpu")
    path = tmp_path / "other.pth"
    torch.save({"state_dict": state}, path)  # not SatMAE's {'model': ...}
    with pytest.raises(ValueError, match=r"other\.pth does not have the key layout.*'model'"):
        load_released(GROUP, path, model_kwargs=SMALL_GROUP)
    state["patch_embed.0.weight"] = state.pop("patch_embed.0.proj.weight")
    torch.save(_checkpoint(state), path)
    with pytest.raises(CheckpointMismatchError, match=r"missing +patch_embed\.0\.proj\.weight"):
        load_released(GROUP, path, model_kwargs=SMALL_GROUP)
    # the RGB release's layout (one patch_embed.proj) is not the group-channel one
    vit = timm.create_model(
        "vit_small_patch16_224", pretrained=False, num_classes=0, img_size=32, embed_dim=64,
        depth=2, num_heads=4,
    )  # fmt: skip
    other = {k: v for k, v in vit.state_dict().items() if k != "pos_embed"}  # width differs
    torch.save(_checkpoint(other), path)
    with pytest.raises(CheckpointMismatchError, match=r"unexpected +patch_embed\.proj\.weight"):
        load_released(GROUP, path, model_kwargs=SMALL_GROUP)


SMALL_RGB = {**VIT_L16_RGB, "embed_dim": 64, "depth": 2, "num_heads": 4, "grid_size": 2}


def test_fmow_rgb_loads_and_gives_timm_tokens(tmp_path: Path) -> None:
    torch.manual_seed(1)
    ref = timm.create_model(
        "vit_large_patch16_224", pretrained=False, num_classes=0, img_size=32, embed_dim=64,
        depth=2, num_heads=4,
    ).eval()  # fmt: skip
    state = dict(ref.state_dict())
    decoder = MAE(
        embed_dim=64,
        in_chans=3,
        patch_size=(16, 16),
        decoder_dim=32,
        decoder_depth=1,
        decoder_heads=4,
    )
    state.update(decoder.state_dict())
    state["decoder_pos_embed"] = torch.zeros(1, 5, 32)
    path = tmp_path / "fmow_pretrain.pth"
    torch.save(_checkpoint(state), path)
    model, report = load_released(RGB, path, model_kwargs=SMALL_RGB)
    assert report.ok and len(report.loaded) == len(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.eval().forward_tokens(x)[0], ref.forward_features(x))
    # the pretext head: the decoder maps onto our MAE strictly
    pretext = RELEASED.get(RGB).pretext
    assert pretext is not None and pretext.objective == "mae"
    kept, dropped = split_dropped(pretext.map_keys(_checkpoint(state)), pretext.drop)
    assert dropped == ["decoder_pos_embed"]
    mae = MAE(**{**pretext.kwargs, "decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 4})
    mae.bind_backbone(model)
    report = compare_state_dict(mae, kept)
    assert report.ok and not report.unexpected, report


def test_full_size_rgb_pretext_head_is_strict() -> None:
    entry = RELEASED.get(RGB)
    assert entry.pretext is not None
    content, _ = LAYOUT_FILES[RGB]("meta")
    kept, _ = split_dropped(entry.pretext.map_keys(content), entry.pretext.drop)
    with torch.device("meta"):
        model = build_backbone(entry.architecture, entry.kwargs)
        mae = MAE(**entry.pretext.kwargs)
        mae.bind_backbone(model)
    report = compare_state_dict(mae, kept)
    assert report.ok and not report.unexpected, report


def test_contracts() -> None:
    entry = RELEASED.get(GROUP)
    assert entry.pretext is None  # per-group decoder_pred: no exact map onto our MAE
    assert entry.input["bands"] == SATMAE_BANDS
    groups = [tuple(SATMAE_BANDS[i] for i in g) for g in SATMAE_GROUPS]
    assert tuple(groups) == SATMAE_S2_GROUPS  # B02-B04+B08, red edge + B8A, SWIR
    norm = entry.input["normalization"]
    assert norm["mean"][0] == pytest.approx(1184.3824625 - 2 * 650.2842772)  # B02
    assert norm["std"][-1] == pytest.approx(4 * 1087.6020813)  # B12
    assert entry.input["wavelengths_um"][7] == pytest.approx(0.865)  # B8A
    assert RELEASED.get(RGB).input["normalization"]["scale"] == pytest.approx(1 / 255)
