"""Prithvi releases: files with the real key layouts (names and shapes written from the upstream
classes: Prithvi-100M ``MaskedAutoencoderViT``, terratorch ``PrithviMAE``) load strictly, the
decoder and fixed tables dropped by name; shrunk files give the numbers of an independent
forward written from the upstream code (Conv3d tubelets, Prithvi's 3D sin-cos, timm blocks with
``nn.LayerNorm``, the -TL coordinate embeddings); files of another layout fail loudly.

terratorch does not install here (it needs torchgeo 0.9), so the reference forward is written
in this file from the upstream description, not imported.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from runpy import run_path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from timm.models.vision_transformer import Block
from torch import Tensor, nn

import domainfm.domains.geospatial  # noqa: F401 - registers the releases
from domainfm.domains.geospatial.contract import RasterContract
from domainfm.domains.geospatial.prithvi import PrithviViT
from domainfm.domains.geospatial.released.prithvi import (
    PRITHVI_V1_MEAN,
    PRITHVI_V1_STD,
    PRITHVI_V2_MEAN,
    PRITHVI_V2_STD,
)
from domainfm.pretrained.registry import RELEASED, load_released, mapped_release_state
from domainfm.pretrained.report import CheckpointMismatchError, compare_state_dict

released_files = SimpleNamespace(**run_path(str(Path(__file__).parents[3] / "released_files.py")))

V1 = "prithvi-eo-1.0-100m"
V2 = (
    "prithvi-eo-2.0-300m",
    "prithvi-eo-2.0-300m-tl",
    "prithvi-eo-2.0-600m",
    "prithvi-eo-2.0-600m-tl",
)
NAMES = (V1, *V2)

# upstream sizes of each release (terratorch prithvi_cfgs, Prithvi_100M_config.yaml)
FULL: dict[str, dict[str, Any]] = {
    V1: {"dim": 768, "depth": 12, "p": 16, "frames": 3, "tl": False},
    V2[0]: {"dim": 1024, "depth": 24, "p": 16, "frames": 4, "tl": False},
    V2[1]: {"dim": 1024, "depth": 24, "p": 16, "frames": 4, "tl": True},
    V2[2]: {"dim": 1280, "depth": 32, "p": 14, "frames": 4, "tl": False},
    V2[3]: {"dim": 1280, "depth": 32, "p": 14, "frames": 4, "tl": True},
}
DECODER = {"dim": 512, "depth": 8}
SMALL_MODEL = {"embed_dim": 64, "depth": 2, "num_heads": 4}


def upstream_shapes(
    name: str, *, dim: int, depth: int, dec_dim: int, dec_depth: int, img: int = 224
) -> dict[str, tuple[int, ...]]:
    """Key → shape of the release file ``name`` at these sizes, in its own nesting."""
    cfg = FULL[name]
    p, frames, tl = cfg["p"], cfg["frames"], cfg["tl"]
    tokens = frames * (img // p) ** 2
    enc = released_files.vit_encoder_shapes(dim, depth, 1 + tokens, (6, 1, p, p))
    dec = released_files.mae_decoder_shapes(dim, dec_dim, 1 + tokens, p * p * 6)
    for i in range(dec_depth):
        dec.update(released_files.timm_block_shapes(f"decoder_blocks.{i}.", dec_dim))
    if tl:
        enc.update({"temporal_embed_enc.scale": (1,), "location_embed_enc.scale": (1,)})
        dec.update({"temporal_embed_dec.scale": (1,), "location_embed_dec.scale": (1,)})
    if name == V1:
        return {**enc, **dec}
    return {
        **{f"encoder.{k}": v for k, v in enc.items()},
        **{f"decoder.{k}": v for k, v in dec.items()},
    }


def _full_file(name: str) -> Callable[[str], tuple[Any, str]]:
    def build(device: str) -> tuple[Any, str]:
        cfg = FULL[name]
        shapes = upstream_shapes(
            name,
            dim=cfg["dim"],
            depth=cfg["depth"],
            dec_dim=DECODER["dim"],
            dec_depth=DECODER["depth"],
        )
        return {k: torch.zeros(s, device=device) for k, s in shapes.items()}, ".pt"

    return build


LAYOUT_FILES: dict[str, Callable[[str], tuple[Any, str]]] = {n: _full_file(n) for n in NAMES}
"""Each release's file content (flat state dict, real shapes) and suffix."""


# -- an independent forward, written from the upstream code -------------------------------
def _np_sincos(dim: int, pos: np.ndarray) -> np.ndarray:
    omega = np.arange(dim // 2, dtype=np.float32) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def upstream_pos_embed(dim: int, grid: tuple[int, int, int]) -> np.ndarray:
    """``get_3d_sincos_pos_embed(dim, grid, cls_token=True)`` as upstream computes it."""
    t, h, w = grid
    wd, td = dim // 16 * 6, dim // 16 * 4
    w_part = np.tile(_np_sincos(wd, np.arange(w)), (t * h, 1))
    h_part = np.tile(np.repeat(_np_sincos(wd, np.arange(h)), w, axis=0), (t, 1))
    t_part = np.repeat(_np_sincos(td, np.arange(t)), h * w, axis=0)
    table = np.concatenate([w_part, h_part, t_part], axis=1)
    return np.concatenate([np.zeros([1, dim]), table], axis=0)


def _torch_sincos(dim: int, pos: Tensor) -> Tensor:
    omega = torch.arange(dim // 2, dtype=pos.dtype) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    out = torch.einsum("m,d->md", pos.reshape(-1), omega)
    return torch.cat([out.sin(), out.cos()], dim=1)


class UpstreamEncoder(nn.Module):
    """The Prithvi encoder forward (``PrithviViT.forward`` with ``ids_keep`` masking)."""

    def __init__(self, *, dim: int, depth: int, heads: int, p: int, tl: bool) -> None:
        super().__init__()
        self.dim = dim
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv3d(6, dim, kernel_size=(1, p, p), stride=(1, p, p))
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.blocks = nn.ModuleList(
            Block(dim, heads, 4.0, qkv_bias=True, norm_layer=nn.LayerNorm) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        if tl:
            self.temporal_embed_enc = nn.Module()
            self.temporal_embed_enc.scale = nn.Parameter(torch.tensor([0.37]))
            self.location_embed_enc = nn.Module()
            self.location_embed_enc.scale = nn.Parameter(torch.tensor([0.21]))

    def forward(
        self,
        x: Tensor,
        ids_keep: Tensor | None = None,
        temporal: Tensor | None = None,
        location: Tensor | None = None,
    ) -> Tensor:
        b, _, t = x.shape[:3]
        tokens = self.patch_embed.proj(x)
        grid = tuple(tokens.shape[2:])
        tokens = tokens.flatten(2).transpose(1, 2)
        pos = torch.from_numpy(upstream_pos_embed(self.dim, grid)).float()[None]
        tokens = tokens + pos[:, 1:]
        if temporal is not None:
            half = self.dim // 2
            year = _torch_sincos(half, temporal[:, :, 0].flatten()).reshape(b, t, -1)
            day = _torch_sincos(self.dim - half, temporal[:, :, 1].flatten()).reshape(b, t, -1)
            emb = self.temporal_embed_enc.scale * torch.cat([year, day], dim=-1)
            tokens = tokens + torch.repeat_interleave(emb, tokens.shape[1] // t, dim=1)
        if location is not None:
            half = self.dim // 2
            lat = _torch_sincos(half, location[:, 0].flatten()).reshape(b, 1, -1)
            lon = _torch_sincos(self.dim - half, location[:, 1].flatten()).reshape(b, 1, -1)
            tokens = tokens + self.location_embed_enc.scale * torch.cat([lat, lon], dim=-1)
        if ids_keep is not None:
            index = ids_keep[..., None].repeat(1, 1, self.dim)
            tokens = torch.gather(tokens, 1, index)
        cls = (self.cls_token + pos[:, :1]).expand(b, -1, -1)
        tokens = torch.cat([cls, tokens], dim=1)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)


def _reference(name: str) -> UpstreamEncoder:
    torch.manual_seed(0)
    cfg = FULL[name]
    return UpstreamEncoder(dim=64, depth=2, heads=4, p=cfg["p"], tl=cfg["tl"]).eval()


def _small_file(name: str, ref: UpstreamEncoder) -> dict[str, Tensor]:
    """The release's file at shrunk sizes: the reference encoder, a random decoder, the
    fixed tables for the pretraining grid."""
    cfg = FULL[name]
    shapes = upstream_shapes(name, dim=64, depth=2, dec_dim=32, dec_depth=1)
    own = dict(ref.state_dict())
    own["pos_embed"] = torch.from_numpy(
        upstream_pos_embed(64, (cfg["frames"], 224 // cfg["p"], 224 // cfg["p"]))
    ).float()[None]
    prefix = "" if name == V1 else "encoder."
    state = {prefix + k: v for k, v in own.items()}
    for key, shape in shapes.items():
        if key not in state:
            state[key] = torch.randn(shape)
    assert {k: tuple(v.shape) for k, v in state.items()} == shapes  # the reference's own layout
    return state


def _expected_dropped(name: str, keys: list[str]) -> list[str]:
    if name == V1:
        return sorted(
            k for k in keys if k in ("pos_embed", "mask_token") or k.startswith("decoder_")
        )
    # dropped after the map: encoder.pos_embed is reported under its mapped name
    return sorted(["pos_embed", *(k for k in keys if k.startswith("decoder."))])


def _coords(batch: int, frames: int) -> tuple[Tensor, Tensor]:
    years = torch.tensor([2018.0, 2020.0, 2023.0])[:batch, None].expand(batch, frames)
    days = torch.linspace(12.0, 340.0, frames)[None].expand(batch, frames)
    temporal = torch.stack([years, days], dim=-1)
    location = torch.tensor([[38.9, -77.0], [-3.4, 120.2], [64.1, 10.5]])[:batch]
    return temporal, location


# -- full-size layouts --------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_full_size_layout_loads_strictly(name: str) -> None:
    """The real key names and shapes map onto the full-size model with nothing missing or
    unexpected; the decoder and the fixed tables are dropped by name."""
    content, suffix = LAYOUT_FILES[name]("meta")
    assert suffix == ".pt"
    entry = RELEASED.get(name)
    state, dropped = mapped_release_state(entry, content, path=f"{name}.pt")
    with torch.device("meta"):
        model = PrithviViT(**entry.kwargs)
    report = compare_state_dict(model, state, source=name)
    assert report.ok and not report.unexpected, str(report)
    assert len(report.loaded) == len(model.state_dict())
    assert dropped == _expected_dropped(name, list(content))
    cfg = FULL[name]
    weight = model.state_dict()["patch_embed.proj.weight"]
    assert tuple(weight.shape) == (cfg["dim"], 6, 1, cfg["p"], cfg["p"])
    assert len(model.blocks) == cfg["depth"] and entry.pretext is None


def test_full_size_parameter_counts() -> None:
    """The encoders have the advertised sizes (~100M, ~300M, ~600M parameters)."""
    for name, millions in ((V1, 86), (V2[0], 304), (V2[2], 631)):
        with torch.device("meta"):
            model = PrithviViT(**RELEASED.get(name).kwargs)
        assert round(sum(p.numel() for p in model.parameters()) / 1e6) == millions, name


# -- numbers ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_shrunk_release_gives_the_upstream_numbers(name: str, tmp_path: Path) -> None:
    ref = _reference(name)
    state = _small_file(name, ref)
    path = tmp_path / f"{name}.pt"
    torch.save(state, path)
    model, report = load_released(name, path, model_kwargs=SMALL_MODEL)
    assert report.ok and not report.unexpected and not report.resampled
    assert len(report.loaded) == len(model.state_dict())
    assert report.dropped == _expected_dropped(name, list(state))
    model.eval()
    p = FULL[name]["p"]
    tl = FULL[name]["tl"]
    # the pretraining grid's frames at a small size, and a single frame of another size
    for frames, side in ((3, 2 * p), (1, 3 * p)):
        torch.manual_seed(frames)
        x = torch.randn(2, 6, frames, side, side)
        temporal, location = _coords(2, frames) if tl else (None, None)
        coords = {"temporal_coords": temporal, "location_coords": location} if tl else {}
        n = frames * (side // p) ** 2
        keep = torch.stack([torch.randperm(n)[: n // 2] for _ in range(2)])
        with torch.no_grad():
            tokens, grid = model.forward_tokens(x, **coords)
            torch.testing.assert_close(tokens, ref(x, None, temporal, location))
            kept, _ = model.forward_tokens(x, keep, **coords)
            torch.testing.assert_close(kept, ref(x, keep, temporal, location))
        assert grid.shape == (frames, side // p, side // p)
    if tl:  # without coordinates the embedding is left out, as upstream
        with torch.no_grad():
            torch.testing.assert_close(model.forward_tokens(x)[0], ref(x))


def test_stored_position_table_is_what_the_model_recomputes() -> None:
    """Dropping ``pos_embed`` loses nothing: on the pretraining grid the recomputed table is
    the stored one (here upstream's formula for 3 x 14 x 14 at width 768)."""
    model = PrithviViT(**{**RELEASED.get(V1).kwargs, "depth": 1})
    grid = model.token_grid((3, 224, 224))
    ours = model._patch_pos_embed(grid, torch.zeros(1))
    stored = torch.from_numpy(upstream_pos_embed(768, (3, 14, 14))).float()[None]
    torch.testing.assert_close(ours, stored[:, 1:], atol=1e-6, rtol=0)
    assert not stored[:, 0].any()  # the class token's row is zero: cls_token alone


# -- wrong layouts ------------------------------------------------------------------------
def _save(tmp_path: Path, name: str, state: dict[str, Tensor]) -> Path:
    path = tmp_path / f"{name}.pt"
    torch.save(state, path)
    return path


def test_other_layouts_are_refused(tmp_path: Path) -> None:
    v1 = _save(tmp_path, V1, _small_file(V1, _reference(V1)))
    v2 = _save(tmp_path, V2[0], _small_file(V2[0], _reference(V2[0])))
    tl = _save(tmp_path, V2[1], _small_file(V2[1], _reference(V2[1])))
    for name in V2:  # a flat 1.0 file under a 2.0 name, and the reverse
        with pytest.raises(ValueError, match=r"does not have the key layout.*encoder\.\*"):
            load_released(name, v1, model_kwargs=SMALL_MODEL)
    with pytest.raises(ValueError, match=rf"{v2.name} does not have the key layout of '{V1}'"):
        load_released(V1, v2, model_kwargs=SMALL_MODEL)
    with pytest.raises(CheckpointMismatchError, match=r"unexpected +temporal_embed_enc\.scale"):
        load_released(V2[0], tl, model_kwargs=SMALL_MODEL)  # a -TL file under the plain name
    with pytest.raises(CheckpointMismatchError, match=r"missing +location_embed_enc\.scale"):
        load_released(V2[1], v2, model_kwargs=SMALL_MODEL)
    with pytest.raises(CheckpointMismatchError, match=r"mismatched +patch_embed\.proj\.weight"):
        load_released(V2[2], v2, model_kwargs=SMALL_MODEL)  # patch 16 under the patch-14 name


def test_renamed_or_stray_key_is_named(tmp_path: Path) -> None:
    state = _small_file(V2[0], _reference(V2[0]))
    state["encoder.fc_norm.weight"] = state.pop("encoder.norm.weight")
    path = _save(tmp_path, "renamed", state)
    with pytest.raises(CheckpointMismatchError) as err:
        load_released(V2[0], path, model_kwargs=SMALL_MODEL)
    assert err.value.report.missing == ["norm.weight"]
    assert err.value.report.unexpected == ["fc_norm.weight"]
    state = _small_file(V1, _reference(V1))
    state["head.weight"] = torch.zeros(3, 64)  # not part of the release: not dropped silently
    with pytest.raises(CheckpointMismatchError, match=r"unexpected +head\.weight"):
        load_released(V1, _save(tmp_path, "stray", state), model_kwargs=SMALL_MODEL)


# -- contracts ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_contract_is_the_releases_own(name: str) -> None:
    entry = RELEASED.get(name)
    contract = entry.contract
    assert isinstance(contract, RasterContract)
    assert contract.bands == ["BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2"]
    assert contract.gsd_m == 30.0 and contract.nodata == -9999.0
    assert contract.wavelengths_um == [0.482, 0.561, 0.655, 0.865, 1.609, 2.201]
    mean, std = (
        (PRITHVI_V1_MEAN, PRITHVI_V1_STD) if name == V1 else (PRITHVI_V2_MEAN, PRITHVI_V2_STD)
    )
    assert contract.normalization == {"type": "mean_std", "scale": 1.0, "mean": mean, "std": std}
    moments = contract.moments()
    np.testing.assert_allclose(moments[0], mean, rtol=1e-6)
    np.testing.assert_allclose(moments[1], std, rtol=1e-6)
    assert entry.input["frames"] == FULL[name]["frames"]
    assert ("coords" in entry.input) == FULL[name]["tl"]
    assert (
        entry.license.startswith("Apache-2.0")
        and "huggingface.co/ibm-nasa-geospatial" in entry.reference
    )
    assert entry.architecture == "prithvi_vit" and entry.pretext is None


def test_release_statistics_are_the_published_numbers() -> None:
    """1.0: ``Prithvi_100M_config.yaml`` (terratorch rounds them to integers); 2.0: the
    ``config.json`` of the 2.0 repositories (terratorch ``PRITHVI_V2_MEAN`` / ``_STD``)."""
    assert [round(v) for v in PRITHVI_V1_MEAN] == [775, 1081, 1229, 2497, 2204, 1611]
    assert [round(v) for v in PRITHVI_V1_STD] == [1282, 1270, 1399, 1368, 1292, 1155]
    assert PRITHVI_V1_MEAN[0] == 775.2290211032589 and PRITHVI_V1_STD[-1] == 1154.505683480695
    assert PRITHVI_V2_MEAN == [1087.0, 1342.0, 1433.0, 2734.0, 1958.0, 1363.0]
    assert PRITHVI_V2_STD == [2248.0, 2179.0, 2178.0, 1850.0, 1242.0, 1049.0]


def test_bands_map_by_name(tmp_path: Path) -> None:
    """HLS band names map a release into a model with other bands; Sentinel-2 names (whose
    ``B05``-``B07`` are red-edge bands) never match them by accident."""
    state = _small_file(V1, _reference(V1))
    path = _save(tmp_path, "v1", state)
    channels = ["RED", "NIR_NARROW", "NDVI"]
    model, report = load_released(V1, path, model_kwargs=SMALL_MODEL, channels=channels)
    [(key, detail)] = report.adapted
    assert key == "patch_embed.proj.weight" and "new NDVI (zeros)" in detail
    weight = model.state_dict()["patch_embed.proj.weight"]
    torch.testing.assert_close(weight[:, :2], state["patch_embed.proj.weight"][:, [2, 3]])
    assert report.ok and not weight[:, 2].any()
