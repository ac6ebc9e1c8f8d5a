"""SSAST tiny/small/base, patch/frame: the DataParallel ``ASTModel`` layout loads strictly
into the distilled ViT with the pretext heads and classifiers dropped by name; numbers equal
timm's ``VisionTransformerDistilled``; other layouts fail naming keys or the file."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
from timm.models.deit import VisionTransformerDistilled
from torch import Tensor, nn

import domainfm.domains.audio  # noqa: F401 - registers the releases
from domainfm.domains.audio.distilled_vit import DistilledVisionTransformerND
from domainfm.domains.audio.released.ssast import PATCHES, SIZES, ssast_kwargs
from domainfm.pretrained.registry import RELEASED, load_released, mapped_release_state
from domainfm.pretrained.report import CheckpointMismatchError, compare_state_dict

RELEASES = {
    "ssast-tiny-patch-400": ("tiny", "patch"),
    "ssast-tiny-frame-400": ("tiny", "frame"),
    "ssast-small-patch-400": ("small", "patch"),
    "ssast-base-patch-400": ("base", "patch"),
    "ssast-base-frame-400": ("base", "frame"),
}
HEADS = {
    "cpredlayer.0.weight": "DD",
    "cpredlayer.0.bias": "D",
    "cpredlayer.2.weight": "PD",
    "cpredlayer.2.bias": "P",
    "gpredlayer.0.weight": "DD",
    "gpredlayer.0.bias": "D",
    "gpredlayer.2.weight": "PD",
    "gpredlayer.2.bias": "P",
    "mask_embed": "11D",
}


def ast_state(v: dict[str, Tensor], device: str = "cpu") -> dict[str, Any]:
    """``torch.save(nn.DataParallel(ASTModel(pretrain_stage=True)).state_dict())`` around a
    DeiT state ``v`` (with ``head``/``head_dist``)."""
    dim = v["cls_token"].shape[-1]
    sizes = {"D": dim, "P": 256, "1": 1}
    state: dict[str, Any] = {
        "module.p_input_fdim": torch.tensor(128, device=device),
        "module.p_input_tdim": torch.tensor(1024, device=device),
    }
    state.update(
        {
            f"module.{k}": torch.randn([sizes[c] for c in shape], device=device)
            for k, shape in HEADS.items()
        }
    )
    state.update({f"module.v.{k}": t for k, t in v.items()})
    return state


def deit_shapes(dim: int, patch: tuple[int, int], tokens: int) -> dict[str, tuple[int, ...]]:
    """timm 0.4.5 distilled DeiT keys with SSAST's 1-channel patch conv and table."""
    shapes: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, dim),
        "dist_token": (1, 1, dim),
        "pos_embed": (1, 2 + tokens, dim),
        "patch_embed.proj.weight": (dim, 1, *patch),
        "patch_embed.proj.bias": (dim,),
        "norm.weight": (dim,),
        "norm.bias": (dim,),
        "head.weight": (1000, dim),
        "head.bias": (1000,),
        "head_dist.weight": (1000, dim),
        "head_dist.bias": (1000,),
    }
    for i in range(12):
        for name, shape in (
            ("norm1.weight", (dim,)),
            ("norm1.bias", (dim,)),
            ("attn.qkv.weight", (3 * dim, dim)),
            ("attn.qkv.bias", (3 * dim,)),
            ("attn.proj.weight", (dim, dim)),
            ("attn.proj.bias", (dim,)),
            ("norm2.weight", (dim,)),
            ("norm2.bias", (dim,)),
            ("mlp.fc1.weight", (4 * dim, dim)),
            ("mlp.fc1.bias", (4 * dim,)),
            ("mlp.fc2.weight", (dim, 4 * dim)),
            ("mlp.fc2.bias", (dim,)),
        ):
            shapes[f"blocks.{i}.{name}"] = shape
    return shapes


def build_release(size: str, kind: str, device: str) -> tuple[Any, str]:
    """The released ``SSAST-<Size>-<Kind>-400.pth``, full size."""
    dim, _ = SIZES[size]
    patch, grid = PATCHES[kind]
    shapes = deit_shapes(dim, patch, grid[0] * grid[1])
    return ast_state({k: torch.empty(s, device=device) for k, s in shapes.items()}, device), ".pth"


LAYOUT_FILES: dict[str, Callable[[str], tuple[Any, str]]] = {
    name: partial(build_release, size, kind) for name, (size, kind) in RELEASES.items()
}


@pytest.mark.parametrize("name", sorted(RELEASES))
def test_full_size_layout_loads_strictly_with_heads_dropped(name: str) -> None:
    entry = RELEASED.get(name)
    assert dict(entry.kwargs) == ssast_kwargs(*RELEASES[name])
    content, _ = LAYOUT_FILES[name]("meta")
    state, dropped = mapped_release_state(entry, content, path=f"{name}.pth")
    with torch.device("meta"):
        model = DistilledVisionTransformerND(**entry.kwargs)
    report = compare_state_dict(model, state)
    assert report.ok and not report.unexpected and len(report.loaded) == len(state)
    assert set(dropped) == {
        *HEADS,
        "p_input_fdim",
        "p_input_tdim",
        "head.weight",
        "head.bias",
        "head_dist.weight",
        "head_dist.bias",
    }
    assert entry.pretext is None


@pytest.mark.parametrize(
    ("name", "patch", "grid"),
    [
        ("ssast-tiny-patch-400", (16, 16), (8, 64)),
        ("ssast-base-frame-400", (128, 2), (1, 512)),
    ],
)
def test_equals_timm_distilled_deit(
    name: str, patch: tuple[int, int], grid: tuple[int, int], tmp_path: Path
) -> None:
    torch.manual_seed(0)
    reference: nn.Module = VisionTransformerDistilled(
        img_size=(128, 1024),
        patch_size=patch,
        in_chans=1,
        embed_dim=32,
        depth=2,
        num_heads=2,
        num_classes=1000,
    ).eval()
    path = tmp_path / f"{name}.pth"
    torch.save(ast_state(dict(reference.state_dict())), path)
    small = {"embed_dim": 32, "depth": 2, "num_heads": 2}
    model, report = load_released(name, path, model_kwargs=small)
    assert report.ok and len(report.loaded) == len(model.state_dict()) and not report.resampled
    assert len(report.dropped) == len(HEADS) + 6
    x = torch.randn(2, 1, 128, 1024)  # ASTModel.forward's (B, 1, F, T)
    with torch.no_grad():
        tokens, token_grid = model.eval().forward_tokens(x)
        torch.testing.assert_close(tokens, reference.forward_features(x))
        torch.testing.assert_close(model(x), tokens[:, 2:].mean(dim=1))  # ft_avgtok
    assert token_grid.shape == grid and model.num_prefix_tokens == 2
    _, report = load_released(name, path, model_kwargs={**small, "grid_size": [grid[0], 8]})
    assert report.resampled == [
        ("pos_embed", (1, 2 + grid[0] * grid[1], 32), (1, 2 + grid[0] * 8, 32))
    ]


def test_other_layouts_fail_naming_keys_or_file(tmp_path: Path) -> None:
    name = "ssast-tiny-patch-400"
    content, _ = build_release("tiny", "patch", "cpu")
    bare = tmp_path / "bare.pth"
    torch.save({k.removeprefix("module."): v for k, v in content.items()}, bare)  # no DataParallel
    with pytest.raises(ValueError, match=r"bare\.pth does not have the key layout"):
        load_released(name, bare)
    content["module.v.blocks.3.extra.weight"] = torch.ones(2)
    stray = tmp_path / "stray.pth"
    torch.save(content, stray)
    with pytest.raises(CheckpointMismatchError, match=r"unexpected +blocks\.3\.extra\.weight"):
        load_released(name, stray)
    frame, _ = build_release("tiny", "frame", "cpu")
    other = tmp_path / "frame.pth"
    torch.save(frame, other)  # a frame file for the patch entry: shapes differ
    with pytest.raises(CheckpointMismatchError, match=r"mismatched +patch_embed\.proj\.weight"):
        load_released(name, other)


def test_contract_is_ssast_fbank() -> None:
    for name in RELEASES:
        contract = RELEASED.get(name).contract
        assert (contract.sample_rate, contract.frames) == (16000, 1024)
        assert contract.frontend["architecture"] == "kaldi_fbank"
        assert contract.frontend["kwargs"]["mean"] == -4.2677393
        assert contract.frontend["kwargs"]["std"] == 4.5689974
