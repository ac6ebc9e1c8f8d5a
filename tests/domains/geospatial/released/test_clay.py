"""Clay releases: the full-size Lightning ``state_dict`` layouts of ``clay-v1-base.ckpt`` and
``clay-v1.5.ckpt`` (key names and shapes written from Clay's model code, teacher from timm,
meta device) map strictly with decoder, teacher and projection dropped by name; a shrunk
checkpoint in the release nesting loads through the registry and gives the tokens of an
independent forward written from Clay's code (wavelength codes, generated conv kernel, GSD
position table, metadata, vit-pytorch blocks by hand); other layouts fail naming the keys."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from runpy import run_path
from types import SimpleNamespace
from typing import Any

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import domainfm.domains.geospatial  # noqa: F401 - registers the releases
from domainfm.core.backbone import build_backbone
from domainfm.domains.geospatial.released.clay import CLAY_S2_WAVELENGTHS_UM, CLAY_V1_BASE
from domainfm.pretrained.registry import RELEASED, load_released
from domainfm.pretrained.report import CheckpointMismatchError

released_files = SimpleNamespace(**run_path(str(Path(__file__).parents[3] / "released_files.py")))

V1, V15 = "clay-v1-base", "clay-v1.5-large"
# (encoder dim, depth, heads; decoder dim, depth, heads; teacher) per release (Clay's code)
SIZES: dict[str, tuple[int, int, int, int, int, int, str]] = {
    V1: (768, 12, 12, 512, 6, 6, "vit_base_patch16_224"),
    V15: (1024, 24, 16, 512, 4, 4, "vit_large_patch14_reg4_dinov2"),
}
WAVES = [0.665, 0.56, 0.493]
SMALL = {"wavelengths_um": WAVES, "gsd_m": 10.0, "patch_size": 4, "embed_dim": 64}
SMALL.update({"depth": 2, "num_heads": 4, "dim_head": 16})


def _transformer(prefix: str, dim: int, depth: int, heads: int) -> dict[str, tuple[int, ...]]:
    """vit-pytorch ``simple_vit.Transformer`` keys (dim_head 64, mlp_ratio 4 unless shrunk)."""
    inner, head = heads * (dim // heads if dim // heads < 64 else 64), dim * 4
    shapes: dict[str, tuple[int, ...]] = {f"{prefix}.norm.weight": (dim,)}
    shapes[f"{prefix}.norm.bias"] = (dim,)
    for i in range(depth):
        at, ff = f"{prefix}.layers.{i}.0", f"{prefix}.layers.{i}.1.net"
        shapes.update({f"{at}.norm.weight": (dim,), f"{at}.norm.bias": (dim,)})
        shapes.update(
            {f"{at}.to_qkv.weight": (3 * inner, dim), f"{at}.to_out.weight": (dim, inner)}
        )
        shapes.update({f"{ff}.0.weight": (dim,), f"{ff}.0.bias": (dim,)})
        shapes.update({f"{ff}.1.weight": (head, dim), f"{ff}.1.bias": (head,)})
        shapes.update({f"{ff}.3.weight": (dim, head), f"{ff}.3.bias": (dim,)})
    return shapes


def _dynamic_embedding(prefix: str, out_dim: int, dim: int | None) -> dict[str, tuple[int, ...]]:
    """``DynamicEmbedding`` keys (``dim`` None: the decoder variant without ``fc_bias``)."""
    with torch.device("meta"):
        layer = nn.TransformerEncoderLayer(128, 4, activation="gelu", dropout=0.0)
    gen = f"{prefix}.weight_generator"
    shapes = {f"{gen}.encoder.layers.0.{k}": tuple(v.shape) for k, v in layer.state_dict().items()}
    shapes.update({f"{gen}.weight_tokens": (128, 128), f"{gen}.bias_token": (1, 128)})
    shapes.update({f"{gen}.fc_weight.weight": (out_dim, 128), f"{gen}.fc_weight.bias": (out_dim,)})
    if dim is not None:
        shapes.update({f"{gen}.fc_bias.weight": (dim, 128), f"{gen}.fc_bias.bias": (dim,)})
    for lin in ("l1", "l2"):
        shapes.update({f"{prefix}.fclayer.{lin}.weight": (128, 128)})
        shapes.update({f"{prefix}.fclayer.{lin}.bias": (128,)})
    return shapes


def _clay_state(name: str, device: str, enc: dict[str, Any] | None = None) -> dict[str, Tensor]:
    """``ClayMAEModule.state_dict()``: encoder (full size, or ``enc`` shrunk), decoder,
    teacher and projection, random values."""
    dim, depth, heads, ddim, ddepth, dheads, teacher = SIZES[name]
    p = 8
    if enc is not None:
        dim, depth, heads, p = enc["embed_dim"], enc["depth"], enc["num_heads"], enc["patch_size"]
        ddim, ddepth, dheads, teacher = 32, 1, 2, ""
    shapes: dict[str, tuple[int, ...]] = {"model.encoder.cls_token": (1, 1, dim)}
    shapes.update(_dynamic_embedding("model.encoder.patch_embedding", p * p * dim, dim))
    shapes.update(_transformer("model.encoder.transformer", dim, depth, heads))
    shapes.update({"model.decoder.enc_to_dec.weight": (ddim, dim)})
    shapes.update({"model.decoder.enc_to_dec.bias": (ddim,), "model.decoder.mask_patch": (ddim,)})
    shapes.update(_transformer("model.decoder.transformer", ddim, ddepth, dheads))
    shapes.update(_dynamic_embedding("model.decoder.embed_to_pixels", p * p * ddim, None))
    with torch.device("meta"):
        ref = timm.create_model(teacher, pretrained=False, num_classes=0) if teacher else None
    width = ref.num_features if ref is not None else 48
    if ref is not None:
        shapes.update({f"model.teacher.{k}": tuple(v.shape) for k, v in ref.state_dict().items()})
    shapes.update({"model.proj.weight": (width, dim), "model.proj.bias": (width,)})
    with torch.device(device):
        return {k: torch.randn(s) * 0.05 for k, s in shapes.items()}


def _ckpt(state: dict[str, Tensor]) -> dict[str, Any]:
    """A Lightning checkpoint's nesting."""
    hparams = {"model_size": "base", "patch_size": 8, "metadata_path": "configs/metadata.yaml"}
    return {"epoch": 0, "global_step": 1, "state_dict": state, "hyper_parameters": hparams}


LAYOUT_FILES: dict[str, Callable[[str], tuple[Any, str]]] = {
    name: (lambda device, name=name: (_ckpt(_clay_state(name, device)), ".ckpt")) for name in SIZES
}


@pytest.mark.parametrize("name", list(SIZES))
def test_full_size_layout_maps_strictly(name: str) -> None:
    entry = RELEASED.get(name)
    content, suffix = LAYOUT_FILES[name]("meta")
    _, mapped, dropped, report = released_files.full_size_report(name, content, name + suffix)
    assert report.ok and not report.unexpected and not report.mismatched, report
    assert dropped == sorted(k for k in content["state_dict"] if not k.startswith("model.encoder."))
    assert any(k.startswith("model.teacher.") for k in dropped)
    dim = SIZES[name][0]
    assert mapped["patch_embed.weight_generator.fc_weight.weight"].shape == (64 * dim, 128)
    assert entry.pretext is None


def _reference_tokens(
    state: dict[str, Tensor], x: Tensor, meta: Tensor, kw: dict[str, Any]
) -> Tensor:
    """Clay's encoder forward (no masking), written from src/model.py + factory.py + utils.py."""
    s = {k.removeprefix("model.encoder."): v for k, v in state.items()}
    pe, dim, p = "patch_embedding.", kw["embed_dim"], kw["patch_size"]
    waves = torch.tensor(kw["wavelengths_um"])
    omega = 1.0 / 10000 ** (torch.arange(64) / 63)
    code = torch.cat([(waves[:, None] * omega).sin(), (waves[:, None] * omega).cos()], dim=1)
    hidden = F.gelu(F.linear(code, s[pe + "fclayer.l1.weight"], s[pe + "fclayer.l1.bias"]))
    code = code + F.gelu(F.linear(hidden, s[pe + "fclayer.l2.weight"], s[pe + "fclayer.l2.bias"]))
    gen = pe + "weight_generator."
    layer = nn.TransformerEncoderLayer(128, 4, activation="gelu", dropout=0.0).eval()
    layer.load_state_dict(
        {k.split("layers.0.")[1]: v for k, v in s.items() if "layers.0." in k and k.startswith(gen)}
    )
    seq = torch.cat([s[gen + "weight_tokens"], code, s[gen + "bias_token"]])
    out = layer(seq)
    rows = F.linear(
        out[128:-1] + seq[128:-1], s[gen + "fc_weight.weight"], s[gen + "fc_weight.bias"]
    )
    bias = F.linear(out[-1], s[gen + "fc_bias.weight"], s[gen + "fc_bias.bias"])
    kernel = rows.view(len(waves), dim, p, p).transpose(0, 1) * 0.02  # cin (cout k1 k2)
    tokens = F.conv2d(x, kernel, bias, stride=p).flatten(2).transpose(1, 2)  # (B, L, D)
    side = int(math.sqrt(tokens.shape[1]))
    n = (dim - 8) // 4
    freq = 1.0 / (10000 ** (2 * (torch.arange(n) / (n - 1)) / (dim - 8))) * kw["gsd_m"]
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    ax, ay = xx.flatten()[:, None] * freq, yy.flatten()[:, None] * freq
    pos = torch.cat([ax.sin(), ax.cos(), ay.sin(), ay.cos()], dim=1)
    codes = torch.cat(
        [pos.expand(x.shape[0], -1, -1), meta[:, None].expand(-1, side * side, -1)], -1
    )
    seq = torch.cat([s["cls_token"].expand(x.shape[0], -1, -1), tokens + codes], dim=1)
    heads = kw["num_heads"]
    for i in range(kw["depth"]):
        at, ff = f"transformer.layers.{i}.0.", f"transformer.layers.{i}.1.net."
        h = F.layer_norm(seq, (dim,), s[at + "norm.weight"], s[at + "norm.bias"])
        q, k, v = (
            t.unflatten(-1, (heads, -1)).transpose(1, 2)
            for t in F.linear(h, s[at + "to_qkv.weight"]).chunk(3, -1)
        )
        attn = (q @ k.transpose(-1, -2) * (dim // heads) ** -0.5).softmax(-1) @ v
        seq = seq + F.linear(attn.transpose(1, 2).flatten(2), s[at + "to_out.weight"])
        h = F.layer_norm(seq, (dim,), s[ff + "0.weight"], s[ff + "0.bias"])
        h = F.linear(
            F.gelu(F.linear(h, s[ff + "1.weight"], s[ff + "1.bias"])),
            s[ff + "3.weight"],
            s[ff + "3.bias"],
        )
        seq = seq + h
    return F.layer_norm(seq, (dim,), s["transformer.norm.weight"], s["transformer.norm.bias"])


@pytest.mark.parametrize("with_metadata", [False, True])
def test_shrunk_checkpoint_matches_clays_forward(with_metadata: bool, tmp_path: Path) -> None:
    torch.manual_seed(0)
    state = _clay_state(V1, "cpu", SMALL)
    path = tmp_path / "clay-v1-base.ckpt"
    torch.save(_ckpt(state), path)
    model, report = load_released(V1, path, model_kwargs=SMALL)
    assert report.ok and len(report.loaded) == len(model.state_dict())
    assert report.dropped == sorted(k for k in state if not k.startswith("model.encoder."))
    x = torch.randn(2, 3, 16, 16)
    time, latlon = torch.randn(2, 4), torch.randn(2, 4)
    meta = torch.cat([time, latlon], dim=1) if with_metadata else torch.zeros(2, 8)
    kwargs = {"time": time, "latlon": latlon} if with_metadata else {}
    with torch.no_grad():
        tokens, grid = model.eval().forward_tokens(x, **kwargs)
        expected = _reference_tokens(state, x, meta, SMALL)
    assert grid.shape == (4, 4)
    torch.testing.assert_close(tokens, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model(x, **kwargs), expected[:, 0], rtol=1e-4, atol=1e-5)


def test_wrong_layouts_fail_naming_keys(tmp_path: Path) -> None:
    state = _clay_state(V1, "cpu", SMALL)
    path = tmp_path / "other.ckpt"
    torch.save(state, path)  # a bare state dict, not a Lightning checkpoint
    with pytest.raises(ValueError, match=r"other\.ckpt does not have the key layout.*state_dict"):
        load_released(V1, path, model_kwargs=SMALL)
    torch.save(
        {"state_dict": {k.replace("model.encoder.", "encoder."): v for k, v in state.items()}}, path
    )
    with pytest.raises(ValueError, match=r"no model\.encoder\.\* keys"):
        load_released(V1, path, model_kwargs=SMALL)
    state["model.encoder.transformer.layers.1.0.to_qkv.bias"] = torch.zeros(3 * 64)  # stray
    del state["model.encoder.transformer.norm.weight"]
    torch.save(_ckpt(state), path)
    with pytest.raises(CheckpointMismatchError, match=r"missing +norm\.weight") as err:
        load_released(V1, path, model_kwargs=SMALL)
    assert err.value.report.unexpected == ["blocks.1.attn.qkv.bias"]


def test_contract_and_other_sensors() -> None:
    entry = RELEASED.get(V1)
    assert entry.input["wavelengths_um"] == CLAY_S2_WAVELENGTHS_UM == CLAY_V1_BASE["wavelengths_um"]
    assert entry.input["bands"][7] == "B8A" and entry.input["gsd_m"] == 10.0
    assert entry.input["normalization"]["mean"][0] == 1105.0  # blue
    assert entry.license.startswith("OpenRAIL-M") and RELEASED.get(V15).license.startswith("Apache")
    # the same weights take another band list: nothing in the state depends on it
    landsat = {**SMALL, "wavelengths_um": [0.65, 0.56, 0.48, 0.865, 1.6, 2.2], "gsd_m": 30.0}
    a, b = build_backbone("clay_encoder", SMALL), build_backbone("clay_encoder", landsat)
    assert {k: v.shape for k, v in a.state_dict().items()} == {
        k: v.shape for k, v in b.state_dict().items()
    }
    assert b(torch.randn(1, 6, 16, 16)).shape == (1, 64)
