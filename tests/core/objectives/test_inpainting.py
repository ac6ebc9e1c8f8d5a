"""Inpainting against a plain L1 of an unpatchified linear head, plus behaviour."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from domainfm.core.batch_features import BatchFeatures
from domainfm.core.grid import TokenGrid
from domainfm.core.objectives.base import BatchObjective, ParallelMode
from domainfm.core.objectives.inpainting import Inpainting
from domainfm.core.objectives.registry import OBJECTIVES
from domainfm.core.patching import patchify
from domainfm.core.vit import VisionTransformerND


def reference_unpatchify(pixels: Tensor, grid: TokenGrid, channels: int) -> Tensor:
    """Token ``n`` at grid position ``g`` (C order) predicts, in entry
    ``(((p0 * P1) + p1) * P2 + p2) * C + c``, the voxel ``g * P + p`` of channel ``c``."""
    b = pixels.shape[0]
    out = torch.zeros(b, channels, *grid.input_shape, dtype=pixels.dtype)
    for n, g in enumerate(torch.cartesian_prod(*(torch.arange(s) for s in grid.shape))):
        g = g.reshape(-1)
        patch = pixels[:, n].reshape(b, *grid.patch_size, channels)
        patch = patch.movedim(-1, 1)  # (B, C, *P)
        region = tuple(
            slice(int(i) * p, (int(i) + 1) * p) for i, p in zip(g, grid.patch_size, strict=True)
        )
        out[(slice(None), slice(None), *region)] = patch
    return out


def _vit(spatial_dims: int, in_chans: int) -> VisionTransformerND:
    return VisionTransformerND(
        in_chans=in_chans,
        spatial_dims=spatial_dims,
        patch_size=8,
        embed_dim=32,
        depth=2,
        num_heads=4,
    )


def _batch(shape: tuple[int, ...], seed: int = 0) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    target1, target2 = torch.rand(shape, generator=g), torch.rand(shape, generator=g)
    return {
        "view1": target1 + 0.5 * torch.randn(shape, generator=g),
        "view2": target2 + 0.5 * torch.randn(shape, generator=g),
        "target1": target1,
        "target2": target2,
    }


@pytest.mark.parametrize(
    ("spatial", "channels"), [((16, 16, 16), 1), ((16, 24), 2), ((32,), 3)], ids=["3d", "2d", "1d"]
)
def test_matches_l1_of_unpatchified_linear_head(spatial: tuple[int, ...], channels: int) -> None:
    torch.manual_seed(0)
    vit = _vit(len(spatial), channels)
    inpaint = Inpainting(embed_dim=32, in_chans=channels, patch_size=(8,) * len(spatial))
    batch = _batch((3, channels, *spatial))
    out = inpaint.forward_batch(BatchFeatures(vit, batch))

    w, bias = inpaint.head.weight, inpaint.head.bias
    per_view = []
    for view, target in (("view1", "target1"), ("view2", "target2")):
        tokens, grid = vit.forward_tokens(batch[view])
        pixels = tokens[:, 1:] @ w.T + bias  # class token dropped
        recon = reference_unpatchify(pixels, grid, channels)
        per_view.append((recon - batch[target]).abs().mean())
    expected = torch.stack(per_view).mean()
    torch.testing.assert_close(out.loss, expected)
    params = [w, bias, vit.patch_embed.proj.weight]
    for got, want in zip(
        torch.autograd.grad(out.loss, params), torch.autograd.grad(expected, params), strict=True
    ):
        torch.testing.assert_close(got, want)


class _PixelTokens(nn.Module):
    """A backbone whose tokens are the input's patches (D = prod(patch) * C)."""

    def __init__(self, patch_size: tuple[int, ...]) -> None:
        super().__init__()
        self.patch_size = patch_size

    def forward_tokens(self, x: Tensor, keep_idx: Tensor | None = None) -> tuple[Tensor, TokenGrid]:
        grid = TokenGrid.from_input(x.shape[2:], self.patch_size)
        return patchify(x, grid), grid


def _identity_inpainting(patch: tuple[int, ...], channels: int, **kw: object) -> Inpainting:
    dim = math.prod(patch) * channels
    inpaint = Inpainting(embed_dim=dim, in_chans=channels, patch_size=patch, **kw)  # type: ignore[arg-type]
    with torch.no_grad():
        inpaint.head.weight.copy_(torch.eye(dim))
        inpaint.head.bias.zero_()
    return inpaint


def test_loss_covers_the_whole_volume() -> None:
    """With the identity head the reconstruction is the corrupted view itself, so the loss is
    the mean distance between view and clean target over *every* voxel (not masked ones)."""
    patch = (4, 4)
    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 2, 8, 12, generator=g)
    view = target.clone()
    view[:, :, 2:5, 3:9] += 1.0  # a corrupted box
    batch = {"view1": view, "view2": target, "target1": target, "target2": target}
    features = BatchFeatures(_PixelTokens(patch), batch)
    out = _identity_inpainting(patch, 2).forward_batch(features)
    box_fraction = (3 * 6) / (8 * 12)
    torch.testing.assert_close(out.loss, torch.tensor(0.5 * box_fraction))  # view2 is clean
    out_l2 = _identity_inpainting(patch, 2, loss="l2").forward_batch(features)
    torch.testing.assert_close(out_l2.loss, torch.tensor(0.5 * box_fraction))
    preview = _identity_inpainting(patch, 2).preview(features)
    torch.testing.assert_close(preview["reconstruction"], view)
    torch.testing.assert_close(preview["input"], target)
    torch.testing.assert_close(preview["masked"], view)


def test_patch_size_must_match_the_grid() -> None:
    vit = _vit(3, 1)  # patch 8
    inpaint = Inpainting(embed_dim=32, in_chans=1, patch_size=(16, 16, 16))
    with pytest.raises(ValueError, match=r"patch_size \(16, 16, 16\).*\(8, 8, 8\)"):
        inpaint.forward_batch(BatchFeatures(vit, _batch((2, 1, 16, 16, 16))))


def test_protocol_registry_and_bad_arguments() -> None:
    inpaint = Inpainting(embed_dim=32, in_chans=1, patch_size=(8, 8, 8))
    assert isinstance(inpaint, BatchObjective)
    assert Inpainting.parallel_mode is ParallelMode.LOCAL
    assert OBJECTIVES.get("inpainting") is Inpainting
    with pytest.raises(ValueError, match="loss='l3'"):
        Inpainting(embed_dim=8, in_chans=1, patch_size=(8,), loss="l3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same length"):
        Inpainting(embed_dim=8, in_chans=1, patch_size=(8,), targets=("target1",))
    with pytest.raises(ValueError, match="patch_size"):
        Inpainting(embed_dim=8, in_chans=1, patch_size=(8, 8, 8, 8))
    batch = _batch((2, 1, 16, 16, 16))
    batch["target2"] = batch["target2"][:, :, :8]
    with pytest.raises(ValueError, match="target2"):
        inpaint.forward_batch(BatchFeatures(_vit(3, 1), batch))


def test_sizes_from_the_backbone() -> None:
    vit = _vit(3, 2)  # patch 8, embed 32, 2 channels
    inpaint = Inpainting()
    with pytest.raises(RuntimeError, match="bind_backbone"):
        inpaint.forward_batch(BatchFeatures(vit, _batch((2, 2, 16, 16, 16))))
    inpaint.bind_backbone(vit)
    assert (inpaint.head.in_features, inpaint.head.out_features) == (32, 2 * 8**3)
    assert inpaint.forward_batch(BatchFeatures(vit, _batch((2, 2, 16, 16, 16)))).loss.ndim == 0
    with pytest.raises(ValueError, match=r"Inpainting in_chans 1 differs from the backbone's 2"):
        Inpainting(in_chans=1).bind_backbone(vit)
