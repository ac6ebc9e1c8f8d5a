from __future__ import annotations

import math
from typing import Any

import pytest
from torch import nn

from domainfm.core.backbone import BACKBONES
from domainfm.core.registry import init_config
from domainfm.core.vit import VisionTransformerND
from domainfm.core.vit_size import (
    VIT_LARGE,
    ViTDimsArgs,
    ViTShapeArgs,
    ViTSize,
    ViTSizeArgs,
    check_count,
)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"embed_dim": 0}, "embed_dim must be an integer >= 1"),
        ({"depth": True}, "depth must be an integer >= 1"),
        ({"num_heads": 2.0}, "num_heads must be an integer >= 1"),
        ({"embed_dim": 10, "num_heads": 4}, "embed_dim=10 must be divisible by num_heads=4"),
        ({"mlp_ratio": math.inf}, "mlp_ratio must be a finite number > 0"),
        ({"norm_eps": 0.0}, "norm_eps must be a finite number > 0"),
        ({"drop_path_rate": 1.0}, r"drop_path_rate must be in \[0, 1\)"),
    ],
)
def test_bad_sizes_are_named(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ViTSize(**change)


def test_from_arguments_is_strict() -> None:
    def build(*, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float) -> ViTSize:
        return ViTSize.from_arguments(locals(), qkv_bias=False, drop_path_rate=0.1, norm_eps=1e-5)

    size = build(embed_dim=64, depth=2, num_heads=4, mlp_ratio=2.0)
    assert (size.embed_dim, size.mlp_ratio, size.qkv_bias, size.norm_eps) == (64, 2.0, False, 1e-5)
    assert size.head_dim == 16
    without_eps = {k: v for k, v in size.kwargs().items() if k != "norm_eps"}
    with pytest.raises(TypeError, match=r"missing from the arguments: \['norm_eps'\]"):
        ViTSize.from_arguments(without_eps)
    with pytest.raises(TypeError, match=r"for taken arguments: \['depth'\]"):
        ViTSize.from_arguments(size.kwargs(), depth=3)
    with pytest.raises(TypeError, match=r"no field: \['width'\]"):
        ViTSize.from_arguments(size.kwargs(), width=3)


def test_timm_kwargs_turn_the_epsilon_into_a_norm_layer() -> None:
    kwargs = ViTSize(embed_dim=32, depth=1, num_heads=2, norm_eps=1e-5).timm_kwargs()
    assert "norm_eps" not in kwargs
    norm = kwargs.pop("norm_layer")(8)
    assert isinstance(norm, nn.LayerNorm) and norm.eps == 1e-5
    assert kwargs == {
        "embed_dim": 32,
        "depth": 1,
        "num_heads": 2,
        "mlp_ratio": 4.0,
        "qkv_bias": True,
        "drop_path_rate": 0.0,
    }


def test_the_vit_checks_in_chans_before_the_size() -> None:
    with pytest.raises(ValueError, match="in_chans must be an integer >= 1"):
        VisionTransformerND(in_chans=0, spatial_dims=2, embed_dim=10, num_heads=4)
    with pytest.raises(ValueError, match="in_chans"):
        check_count("in_chans", -1)


def test_from_keywords_applies_defaults_and_refuses_foreign_keys() -> None:
    size = ViTSize.from_keywords(
        {"depth": 2, "embed_dim": 64}, accepted=ViTShapeArgs, owner="Enc", **VIT_LARGE
    )
    assert (size.embed_dim, size.depth, size.num_heads, size.norm_eps) == (64, 2, 16, 1e-6)
    with pytest.raises(TypeError, match=r"Enc\(\) got unexpected keyword arguments \['qkv_bias'\]"):
        ViTSize.from_keywords({"qkv_bias": False}, accepted=ViTShapeArgs, owner="Enc")
    with pytest.raises(TypeError, match=r"\['mlp_ratio'\]"):
        ViTSize.from_keywords({"mlp_ratio": 2.0}, accepted=ViTDimsArgs, owner="Enc")
    full = ViTSize.from_keywords({"norm_eps": 1e-5}, accepted=ViTSizeArgs, owner="Enc")
    assert full.norm_eps == 1e-5 and full.embed_dim == 768


def test_size_keywords_are_recorded_flat_and_rebuild_the_encoder() -> None:
    vit = VisionTransformerND(in_chans=1, spatial_dims=2, embed_dim=32, depth=1, num_heads=2)
    config = init_config(vit)
    assert config["kwargs"]["embed_dim"] == 32 and "size_args" not in config["kwargs"]
    rebuilt = BACKBONES.get(config["architecture"])(**config["kwargs"])
    assert rebuilt.embed_dim == 32 and len(rebuilt.blocks) == 1
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in vit.state_dict().items()
    }
