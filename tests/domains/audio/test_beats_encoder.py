"""BEATsEncoder against an independent computation of BEATs' forward (written here from the
structure of microsoft/unilm beats/backbone.py: fairseq-style attention with the alpha = 32
rescaling, bucketed relative bias gated per query, weight norm computed by hand from
``weight_g`` / ``weight_v``), on state dicts in the release's own key layout."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from domainfm.core.backbone import Backbone
from domainfm.domains.audio.beats_encoder import (
    BEATS_ITER3_ARCH,
    BEATsEncoder,
    relative_position_buckets,
)
from domainfm.domains.audio.released.beats import beats_key_map

SMALL: dict[str, Any] = {
    **BEATS_ITER3_ARCH,
    "embed_dim": 32,
    "encoder_layers": 2,
    "encoder_embed_dim": 48,
    "encoder_ffn_embed_dim": 96,
    "encoder_attention_heads": 4,
    "conv_pos": 16,
    "conv_pos_groups": 4,
    "num_buckets": 32,
    "max_distance": 40,
}


def upstream_state(
    arch: dict[str, Any], *, seed: int = 0, device: str = "cpu"
) -> dict[str, Tensor]:
    """A random state dict with BEATs' key names and shapes for ``arch`` (as the release's
    ``checkpoint["model"]``; the relative bias table saved under every layer, shared)."""
    gen = torch.Generator().manual_seed(seed)
    p, c, d = arch["input_patch_size"], arch["embed_dim"], arch["encoder_embed_dim"]
    ffn, heads, k = arch["encoder_ffn_embed_dim"], arch["encoder_attention_heads"], arch["conv_pos"]
    shapes: dict[str, tuple[int, ...]] = {
        "patch_embedding.weight": (c, 1, p, p),
        "layer_norm.weight": (c,),
        "layer_norm.bias": (c,),
        "post_extract_proj.weight": (d, c),
        "post_extract_proj.bias": (d,),
        "encoder.pos_conv.0.bias": (d,),
        "encoder.pos_conv.0.weight_g": (1, 1, k),
        "encoder.pos_conv.0.weight_v": (d, d // arch["conv_pos_groups"], k),
    }
    for i in range(arch["encoder_layers"]):
        pre = f"encoder.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[f"{pre}self_attn.{name}.weight"] = (d, d)
            shapes[f"{pre}self_attn.{name}.bias"] = (d,)
        shapes[f"{pre}self_attn.grep_linear.weight"] = (8, d // heads)
        shapes[f"{pre}self_attn.grep_linear.bias"] = (8,)
        shapes[f"{pre}self_attn.grep_a"] = (1, heads, 1, 1)
        for norm in ("self_attn_layer_norm", "final_layer_norm"):
            shapes[f"{pre}{norm}.weight"] = (d,)
            shapes[f"{pre}{norm}.bias"] = (d,)
        shapes[f"{pre}fc1.weight"] = (ffn, d)
        shapes[f"{pre}fc1.bias"] = (ffn,)
        shapes[f"{pre}fc2.weight"] = (d, ffn)
        shapes[f"{pre}fc2.bias"] = (d,)
    shapes["encoder.layer_norm.weight"] = (d,)
    shapes["encoder.layer_norm.bias"] = (d,)
    if device == "meta":
        state = {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}
        table = torch.empty(arch["num_buckets"], heads, device="meta")
    else:
        state = {key: torch.randn(shape, generator=gen) * 0.2 for key, shape in shapes.items()}
        for key in state:
            if key.endswith(("norm.weight", "grep_a")):
                state[key] = 1.0 + state[key]
        table = torch.randn(arch["num_buckets"], heads, generator=gen)
    for i in range(arch["encoder_layers"]):
        state[f"encoder.layers.{i}.self_attn.relative_attention_bias.weight"] = table
    return state


def _bucket(offset: int, num_buckets: int, max_distance: int) -> int:
    """One offset's bucket, in plain Python (BEATs' bidirectional T5 bucketing)."""
    half = num_buckets // 2
    base = half if offset > 0 else 0
    distance = abs(offset)
    exact = half // 2
    if distance < exact:
        return base + distance
    scaled = int(math.log(distance / exact) / math.log(max_distance / exact) * (half - exact))
    return base + min(exact + scaled, half - 1)


def reference_forward(state: dict[str, Tensor], arch: dict[str, Any], fbank: Tensor) -> Tensor:
    """BEATs' eval forward on ``fbank`` ``(B, T, F)`` (its own layout) → ``(B, T'F', D)``."""
    p, heads = arch["input_patch_size"], arch["encoder_attention_heads"]
    x = F.conv2d(fbank[:, None], state["patch_embedding.weight"], stride=p)  # (B, C, T', F')
    x = x.reshape(x.shape[0], x.shape[1], -1).transpose(1, 2)
    x = F.layer_norm(x, x.shape[-1:], state["layer_norm.weight"], state["layer_norm.bias"])
    x = F.linear(x, state["post_extract_proj.weight"], state["post_extract_proj.bias"])
    v_, g_ = state["encoder.pos_conv.0.weight_v"], state["encoder.pos_conv.0.weight_g"]
    weight = g_ * v_ / v_.pow(2).sum(dim=(0, 1), keepdim=True).sqrt()
    k = arch["conv_pos"]
    conv = F.conv1d(
        x.transpose(1, 2),
        weight,
        state["encoder.pos_conv.0.bias"],
        padding=k // 2,
        groups=arch["conv_pos_groups"],
    )
    if k % 2 == 0:
        conv = conv[..., :-1]
    x = x + F.gelu(conv).transpose(1, 2)
    d = x.shape[-1]

    def ln(t: Tensor, key: str) -> Tensor:
        return F.layer_norm(t, (d,), state[f"{key}.weight"], state[f"{key}.bias"])

    if not arch["layer_norm_first"]:
        x = ln(x, "encoder.layer_norm")
    b, n, _ = x.shape
    hd = d // heads
    offsets = [[j - i for j in range(n)] for i in range(n)]
    buckets = torch.tensor(
        [[_bucket(o, arch["num_buckets"], arch["max_distance"]) for o in row] for row in offsets]
    )
    table = state["encoder.layers.0.self_attn.relative_attention_bias.weight"]
    bias = table[buckets].permute(2, 0, 1)  # (H, N, N)
    alpha = (2 * arch["encoder_layers"]) ** 0.25 if arch["deep_norm"] else 1.0
    for i in range(arch["encoder_layers"]):
        pre = f"encoder.layers.{i}."

        def lin(t: Tensor, name: str, pre: str = pre) -> Tensor:
            return F.linear(t, state[f"{pre}{name}.weight"], state[f"{pre}{name}.bias"])

        def attention(t: Tensor, pre: str = pre) -> Tensor:
            q_raw = lin(t, "self_attn.q_proj").view(b, n, heads, hd).transpose(1, 2)
            k_ = lin(t, "self_attn.k_proj").view(b, n, heads, hd).transpose(1, 2)
            v = lin(t, "self_attn.v_proj").view(b, n, heads, hd).transpose(1, 2)
            logits = (q_raw * hd**-0.5 / 32) @ k_.transpose(-1, -2)
            logits = (logits - logits.amax(-1, keepdim=True)) * 32
            if arch["relative_position_embedding"]:
                rel = bias[None]
                if arch["gru_rel_pos"]:
                    g = lin(q_raw, "self_attn.grep_linear").view(b, heads, n, 2, 4).sum(-1)
                    g = torch.sigmoid(g)
                    grep_a = state[f"{pre}self_attn.grep_a"]
                    rel = (g[..., :1] * (g[..., 1:] * grep_a - 1.0) + 2.0) * rel
                logits = logits + rel
            out = logits.softmax(-1) @ v
            return lin(out.transpose(1, 2).reshape(b, n, d), "self_attn.out_proj")

        def ffn(t: Tensor) -> Tensor:
            return lin(F.gelu(lin(t, "fc1")), "fc2")

        if arch["layer_norm_first"]:
            x = x + attention(ln(x, f"{pre}self_attn_layer_norm"))
            x = x + ffn(ln(x, f"{pre}final_layer_norm"))
        else:
            x = ln(x * alpha + attention(x), f"{pre}self_attn_layer_norm")
            x = ln(x * alpha + ffn(x), f"{pre}final_layer_norm")
    if arch["layer_norm_first"]:
        x = ln(x, "encoder.layer_norm")
    return x


def _loaded(arch: dict[str, Any], state: dict[str, Tensor]) -> BEATsEncoder:
    model = BEATsEncoder(**arch).eval()
    mapped = beats_key_map(arch, finetuned=False)({"cfg": arch, "model": state})
    missing, unexpected = model.load_state_dict(mapped, strict=True)
    assert not missing and not unexpected
    return model


def _time_major_to_grid(tokens: Tensor, f: int, t: int) -> Tensor:
    b, _, d = tokens.shape
    return tokens.view(b, t, f, d).transpose(1, 2).reshape(b, f * t, d)


def test_buckets_by_hand() -> None:
    got = relative_position_buckets(1, 1001, num_buckets=320, max_distance=800)[0]
    # key - query offsets: 0, +1, +79, +80, +200 (80 + int(log(2.5) / log(10) * 80) = 111),
    # +800 and beyond (clamped to 159)
    offsets = (0, 1, 79, 80, 200, 800, 1000)
    assert [int(got[o]) for o in offsets] == [0, 161, 239, 240, 271, 319, 319]
    back = relative_position_buckets(1001, 1, num_buckets=320, max_distance=800)[:, 0]
    assert [int(back[o]) for o in (1, 79, 80, 200, 1000)] == [1, 79, 80, 111, 159]
    n = 90
    table = relative_position_buckets(n, n, num_buckets=32, max_distance=40)
    expected = [[_bucket(j - i, 32, 40) for j in range(n)] for i in range(n)]
    assert table.tolist() == expected


@pytest.mark.parametrize(
    "variant",
    [
        {},  # iter3: post-LN, DeepNorm, gated relative bias
        {"deep_norm": False, "layer_norm_first": True},  # pre-LN, closing layer norm
        {"gru_rel_pos": False, "deep_norm": False},  # ungated bias, plain post-LN
    ],
)
def test_forward_equals_reference(variant: dict[str, Any]) -> None:
    arch = {**SMALL, **variant}
    state = upstream_state(arch, seed=1)
    if not arch["gru_rel_pos"]:
        state = {k: v for k, v in state.items() if ".grep_" not in k}
    model = _loaded(arch, state)
    fbank = torch.randn(2, 330, 128)  # (B, T, F) as BEATs holds it: 20 x 8 patches, 10 frames cut
    with torch.no_grad():
        tokens, grid = model.forward_tokens(fbank.transpose(1, 2)[:, None])  # ours: (B, 1, F, T)
        expected = reference_forward(state, arch, fbank)
    assert grid.shape == (8, 20) and grid.axes == ("f", "t")
    torch.testing.assert_close(tokens, _time_major_to_grid(expected, 8, 20), rtol=1e-4, atol=1e-4)
    assert model(fbank.transpose(1, 2)[:, None]).shape == (2, 48)


def test_backbone_protocol_and_intermediates() -> None:
    model = _loaded(SMALL, upstream_state(SMALL, seed=2))
    assert isinstance(model, Backbone) and model.num_prefix_tokens == 0
    x = torch.randn(1, 1, 128, 64)
    with torch.no_grad():
        maps = model.forward_intermediates(x, indices=[0, 1])
        tokens, _ = model.forward_tokens(x)
        kept, _ = model.forward_tokens(x, keep_idx=torch.tensor([[3, 0]]))
    assert [tuple(m.shape) for m in maps] == [(1, 48, 8, 4), (1, 48, 8, 4)]
    torch.testing.assert_close(maps[-1].flatten(2).transpose(1, 2), tokens)
    torch.testing.assert_close(kept, tokens[:, [3, 0]])
    with pytest.raises(ValueError, match="smaller than one"):
        model.forward_tokens(torch.randn(1, 1, 128, 8))


def test_never_built_from_defaults() -> None:
    with pytest.raises(TypeError, match="max_distance"):
        BEATsEncoder(**{k: v for k, v in SMALL.items() if k != "max_distance"})
    with pytest.raises(ValueError, match="activation_fn"):
        BEATsEncoder(**{**SMALL, "activation_fn": "relu"})
