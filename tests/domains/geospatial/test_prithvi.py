"""PrithviViT: the Backbone contract over (B, C, T, H, W), Prithvi's own position table for any
grid, upstream's LayerNorm epsilon, and the optional temporal / location embeddings (checked,
added to patch tokens only, consistent between full and MAE-style kept-token encoding)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from domainfm.core.backbone import Backbone, build_backbone
from domainfm.domains.geospatial.prithvi import CoordinateEmbed, PrithviViT, prithvi_pos_embed

SMALL = {"in_chans": 6, "embed_dim": 64, "depth": 2, "num_heads": 4}
TL = {"coords_encoding": ("time", "location"), "coords_scale_learn": True}


def _sincos(dim: int, pos: np.ndarray) -> np.ndarray:
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = pos.reshape(-1, 1) * omega[None]
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


@pytest.mark.parametrize(
    ("grid", "dim"), [((3, 14, 14), 768), ((1, 16, 16), 64), ((4, 2, 5), 1280)]
)
def test_position_table_follows_prithvi(grid: tuple[int, int, int], dim: int) -> None:
    """Channels ``(w: 6/16, h: 6/16, t: 4/16)``; token ``(t, h, w)`` in C order."""
    table = prithvi_pos_embed(grid, dim)[0].numpy()
    assert table.shape == (int(np.prod(grid)), dim)
    _, h, w = grid
    spatial = dim // 16 * 6
    count = int(np.prod(grid))
    for index in sorted({0, 1, w, h * w % count, count - 1}):
        ti, hi, wi = np.unravel_index(index, grid)
        expected = np.concatenate(
            [
                _sincos(spatial, np.array([wi]))[0],
                _sincos(spatial, np.array([hi]))[0],
                _sincos(dim - 2 * spatial, np.array([ti]))[0],
            ]
        )
        np.testing.assert_allclose(table[index], expected, atol=1e-6)
    with pytest.raises(ValueError, match="divisible by 16"):
        prithvi_pos_embed(grid, 72)


def test_backbone_contract_and_shapes() -> None:
    vit = PrithviViT(**SMALL).eval()
    assert isinstance(vit, Backbone)
    assert vit.patch_size == (1, 16, 16) and vit.axes == ("t", "h", "w")
    assert vit.num_prefix_tokens == 1 and vit.embed_dim == 64
    x = torch.randn(2, 6, 2, 48, 32)
    grid = vit.token_grid(x.shape[2:])
    assert grid.shape == (2, 3, 2) and grid.axes == ("t", "h", "w")
    tokens, _ = vit.forward_tokens(x)
    assert tokens.shape == (2, 1 + 12, 64)
    maps = vit.forward_intermediates(x, indices=[0, 1], norm=True)
    assert [tuple(m.shape) for m in maps] == [(2, 64, 2, 3, 2)] * 2
    torch.testing.assert_close(maps[-1].flatten(2).transpose(1, 2), tokens[:, 1:])
    assert vit(x).shape == (2, 64)
    torch.testing.assert_close(vit.pool_tokens(tokens), vit(x))
    assert PrithviViT(**SMALL, global_pool="avg")(x).shape == (2, 64)
    with pytest.raises(ValueError, match="does not divide"):
        vit.forward_tokens(torch.randn(1, 6, 1, 40, 40))


def test_built_by_name_with_upstream_conventions() -> None:
    vit = build_backbone("prithvi_vit", {**SMALL, "patch_size": 14})
    assert isinstance(vit, PrithviViT) and vit.patch_size == (1, 14, 14)  # int p: (1, p, p)
    weight = vit.state_dict()["patch_embed.proj.weight"]
    assert tuple(weight.shape) == (64, 6, 1, 14, 14)
    norms = [m for m in vit.modules() if isinstance(m, nn.LayerNorm)]
    assert len(norms) == 2 * 2 + 1 and all(m.eps == 1e-5 for m in norms)  # nn.LayerNorm's
    assert not any("pos_embed" in k for k in vit.state_dict())  # recomputed per grid
    assert PrithviViT(**SMALL, patch_size=(2, 8, 8)).patch_size == (2, 8, 8)


def test_constructor_refusals() -> None:
    with pytest.raises(ValueError, match="multiple of 16"):
        PrithviViT(**{**SMALL, "embed_dim": 72, "num_heads": 4})
    with pytest.raises(ValueError, match="unknown"):
        PrithviViT(**SMALL, coords_encoding=("season",))
    with pytest.raises(ValueError, match="tubelet of 1 frame"):
        PrithviViT(**SMALL, patch_size=(2, 16, 16), coords_encoding=("time",))


def test_coordinate_scales_are_parameters_or_buffers() -> None:
    learned = PrithviViT(**SMALL, **TL)
    fixed = PrithviViT(**SMALL, coords_encoding=("time", "location"))
    for model, value, trainable in ((learned, 0.1, True), (fixed, 1.0, False)):
        state = model.state_dict()
        assert set(k for k in state if "embed_enc" in k) == {
            "temporal_embed_enc.scale",
            "location_embed_enc.scale",
        }
        assert float(state["temporal_embed_enc.scale"]) == pytest.approx(value)
        names = {n for n, _ in model.named_parameters()}
        assert ("temporal_embed_enc.scale" in names) == trainable


def _coords(batch: int, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    years = torch.full((batch, frames), 2021.0)
    days = torch.linspace(30.0, 300.0, frames).expand(batch, frames)
    return torch.stack([years, days], dim=-1), torch.tensor([[52.5, 13.4], [-33.9, 18.4]])[:batch]


def test_coordinates_go_to_patch_tokens_of_their_frame() -> None:
    """The temporal embedding of frame t is added to the tokens of frame t, the location one
    to every patch token, neither to the class token (checked on the embedded input)."""
    vit = PrithviViT(**SMALL, **TL).eval()
    x = torch.randn(2, 6, 3, 32, 32)
    grid = vit.token_grid(x.shape[2:])
    temporal, location = _coords(2, 3)
    plain = vit._embed(x, grid, None)
    with vit._coords(temporal, location):
        embedded = vit._embed(x, grid, None)
    torch.testing.assert_close(embedded[:, 0], plain[:, 0])
    assert vit.temporal_embed_enc is not None and vit.location_embed_enc is not None
    per_frame = vit.temporal_embed_enc(temporal)  # (B, T, D)
    added = (embedded - plain)[:, 1:].reshape(2, 3, 4, 64)
    expected = per_frame[:, :, None] + vit.location_embed_enc(location)[:, None, None]
    torch.testing.assert_close(added, expected.expand(-1, -1, 4, -1))


def test_kept_tokens_match_the_full_embedding() -> None:
    """MAE-style encoding of kept tokens sees the same embedded tokens as the full path."""
    vit = PrithviViT(**SMALL, **TL).eval()
    x = torch.randn(2, 6, 3, 32, 32)
    grid = vit.token_grid(x.shape[2:])
    temporal, location = _coords(2, 3)
    keep = torch.stack([torch.randperm(12)[:5] for _ in range(2)])
    with vit._coords(temporal, location):
        full = vit._embed(x, grid, None)
        kept = vit._embed(x, grid, keep)
    gathered = torch.gather(full[:, 1:], 1, keep[..., None].expand(-1, -1, 64))
    torch.testing.assert_close(kept[:, 1:], gathered)
    with torch.no_grad():
        tokens, _ = vit.forward_tokens(x, keep, temporal_coords=temporal, location_coords=location)
    assert tokens.shape == (2, 6, 64)
    assert vit._call_coords == (None, None)  # nothing left behind after the call


def test_coordinates_change_the_output_and_are_checked() -> None:
    vit = PrithviViT(**SMALL, **TL).eval()
    x = torch.randn(2, 6, 2, 32, 32)
    temporal, location = _coords(2, 2)
    with torch.no_grad():
        plain = vit(x)
        when = vit(x, temporal_coords=temporal)
        both = vit(x, temporal_coords=temporal, location_coords=location)
        maps = vit.forward_intermediates(x, temporal_coords=temporal, location_coords=location)
    assert not torch.allclose(plain, when) and not torch.allclose(when, both)
    torch.testing.assert_close(maps[0].mean(dim=(2, 3, 4)).shape, torch.Size([2, 64]))
    with pytest.raises(ValueError, match=r"temporal_coords must be \(B=2, T=2, 2\)"):
        vit(x, temporal_coords=temporal[:, :1])
    with pytest.raises(ValueError, match=r"location_coords must be \(B=2, 2\)"):
        vit(x, location_coords=location[:, :1])
    with pytest.raises(ValueError, match="no temporal embedding"):
        PrithviViT(**SMALL)(x, temporal_coords=temporal)
    with pytest.raises(ValueError, match="no location embedding"):
        PrithviViT(**SMALL, coords_encoding=("time",))(x, location_coords=location)


def test_coordinate_embed_halves() -> None:
    """First half: the first coordinate's sin-cos; second half: the second's; times scale."""
    embed = CoordinateEmbed(32, learn_scale=False)
    out = embed(torch.tensor([[2020.0, 123.0]]))
    np.testing.assert_allclose(out[0, :16].numpy(), _sincos(16, np.array([2020.0]))[0], atol=2e-4)
    np.testing.assert_allclose(out[0, 16:].numpy(), _sincos(16, np.array([123.0]))[0], atol=1e-5)


def test_any_grid_size_and_gradient_checkpointing() -> None:
    vit = PrithviViT(**SMALL)
    vit.set_grad_checkpointing(True)
    for shape in ((1, 256, 256), (5, 32, 64)):
        x = torch.randn(1, 6, *shape, requires_grad=True)
        vit(x).sum().backward()
        assert x.grad is not None and x.grad.shape == x.shape
