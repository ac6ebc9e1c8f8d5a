from __future__ import annotations

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from domainfm.core.backbone import BACKBONES, Backbone
from domainfm.core.masking import RandomMasking, keep_indices
from domainfm.core.vit import VisionTransformerND


def tiny(spatial_dims: int, **kw: object) -> VisionTransformerND:
    args: dict = dict(
        in_chans=2, spatial_dims=spatial_dims, patch_size=8, embed_dim=32, depth=2, num_heads=4
    )
    args.update(kw)
    return VisionTransformerND(**args).eval()


CASES = {
    "2d": (2, (32, 32), None),
    "3d": (3, (16, 16, 16), None),
    "spectrogram_fxt": (2, (16, 32), ("f", "t")),
    "1d": (1, (64,), None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_forward_tokens_with_dropped_tokens(name: str) -> None:
    dims, spatial, axes = CASES[name]
    vit = tiny(dims, axes=axes)
    assert isinstance(vit, Backbone)
    x = torch.randn(3, 2, *spatial)
    grid = vit.token_grid(spatial)
    if axes:
        assert grid.axes == axes
    mask = RandomMasking(ratio=0.75)(grid, 3, generator=torch.Generator().manual_seed(0))
    keep = keep_indices(mask)
    tokens, out_grid = vit.forward_tokens(x, keep)
    assert out_grid == grid
    assert tokens.shape == (3, 1 + keep.shape[1], 32)

    # pixels of dropped patches cannot influence the encoding of the kept ones
    x2 = x.clone()
    hidden = mask.view(3, *grid.shape)
    for b in range(3):
        for pos in hidden[b].nonzero():
            region = tuple(slice(int(p) * 8, int(p) * 8 + 8) for p in pos)
            x2[(b, slice(None), *region)] = 100.0
    tokens2, _ = vit.forward_tokens(x2, keep)
    torch.testing.assert_close(tokens2, tokens)
    # ... while changing a kept patch does
    x3 = x.clone()
    x3[..., :8] += 1.0
    tokens3, _ = vit.forward_tokens(x3, torch.arange(grid.num_tokens).expand(3, -1))
    assert not torch.allclose(tokens3, vit.forward_tokens(x)[0])


def test_keep_all_equals_no_dropping_and_order_equivariance() -> None:
    vit = tiny(3)
    x = torch.randn(2, 2, 16, 16, 16)
    full, grid = vit.forward_tokens(x)
    all_idx = torch.arange(grid.num_tokens).expand(2, -1)
    torch.testing.assert_close(vit.forward_tokens(x, all_idx)[0], full)
    perm = torch.tensor([[3, 0, 7], [5, 1, 2]])
    out, _ = vit.forward_tokens(x, perm)
    out_sorted, _ = vit.forward_tokens(x, perm.sort(dim=1).values)
    order = perm.argsort(dim=1).argsort(dim=1)  # position of each perm entry in sorted order
    for b in range(2):
        torch.testing.assert_close(out[b, 1:], out_sorted[b, 1:][order[b]])


def test_forward_intermediates_and_pooling() -> None:
    vit = tiny(3)
    x = torch.randn(2, 2, 16, 24, 16)
    maps = vit.forward_intermediates(x, indices=[0, 1], norm=True)
    assert [m.shape for m in maps] == [(2, 32, 2, 3, 2)] * 2
    tokens, _ = vit.forward_tokens(x)
    last = tokens[:, 1:].transpose(1, 2).reshape(2, 32, 2, 3, 2)
    torch.testing.assert_close(maps[-1], last)
    torch.testing.assert_close(vit(x), tokens[:, 0])
    avg = tiny(3, global_pool="avg", class_token=False)
    assert avg.num_prefix_tokens == 0
    assert avg(x).shape == (2, 32)
    with pytest.raises(ValueError, match="out of range"):
        vit.forward_intermediates(x, indices=[5])


def test_matches_timm_vit_with_same_weights() -> None:
    """2D with learned positions is exactly timm's ViT: its weights load and outputs agree."""
    ref = VisionTransformer(
        img_size=32, patch_size=16, in_chans=3, embed_dim=32, depth=2, num_heads=4, num_classes=0
    ).eval()
    ours = VisionTransformerND(
        in_chans=3,
        spatial_dims=2,
        patch_size=16,
        embed_dim=32,
        depth=2,
        num_heads=4,
        pos_embed="learned",
        grid_size=2,
    ).eval()
    result = ours.load_state_dict(ref.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(ours.forward_tokens(x)[0], ref.forward_features(x))
    # on a larger image both resample the table the same way (timm with dynamic_img_size)
    ref_dyn = VisionTransformer(
        img_size=32,
        patch_size=16,
        in_chans=3,
        embed_dim=32,
        depth=2,
        num_heads=4,
        num_classes=0,
        dynamic_img_size=True,
    ).eval()
    ref_dyn.load_state_dict(ref.state_dict())
    x = torch.randn(1, 3, 48, 64)
    torch.testing.assert_close(ours.forward_tokens(x)[0], ref_dyn.forward_features(x))


def test_learned_3d_positions_resample_to_new_grid() -> None:
    vit = tiny(3, pos_embed="learned", grid_size=2)
    assert vit.pos_embed is not None and vit.pos_embed.shape == (1, 1 + 8, 32)
    tokens, grid = vit.forward_tokens(torch.randn(1, 2, 32, 16, 24))
    assert grid.shape == (4, 2, 3)
    assert tokens.shape == (1, 1 + 24, 32)


def test_bad_arguments_raise_value_error() -> None:
    vit = tiny(3)
    with pytest.raises(ValueError, match=r"3 spatial dims.*\(2, 2, 16, 16\)"):
        vit.forward_tokens(torch.randn(2, 2, 16, 16))
    with pytest.raises(
        ValueError, match=r"patch_size \(8, 8, 8\) does not divide .*\(16, 12, 16\)"
    ):
        vit.forward_tokens(torch.randn(1, 2, 16, 12, 16))
    with pytest.raises(ValueError, match="3 channels, model has in_chans=2"):
        vit.forward_tokens(torch.randn(1, 3, 16, 16, 16))
    with pytest.raises(ValueError, match="spatial_dims must be 1, 2 or 3, got 4"):
        VisionTransformerND(in_chans=1, spatial_dims=4)
    with pytest.raises(ValueError, match=r"patch_size must have 2 values.*\(8, 8, 8\)"):
        VisionTransformerND(in_chans=1, spatial_dims=2, patch_size=(8, 8, 8))
    with pytest.raises(ValueError, match="grid_size"):
        VisionTransformerND(in_chans=1, spatial_dims=2, pos_embed="learned")
    with pytest.raises(ValueError, match=r"keep_idx must be \(B=1, K\)"):
        vit.forward_tokens(torch.randn(1, 2, 16, 16, 16), torch.zeros(2, 3, dtype=torch.long))


def test_registered_and_grad_checkpointing_same_grads() -> None:
    assert BACKBONES.get("vit_nd") is VisionTransformerND
    torch.manual_seed(0)
    vit = tiny(2).train()
    x = torch.randn(2, 2, 16, 16)
    vit(x).sum().backward()
    grads = [p.grad.clone() for p in vit.parameters() if p.grad is not None]
    vit.zero_grad()
    vit.set_grad_checkpointing(True)
    vit(x).sum().backward()
    grads_ckpt = [p.grad for p in vit.parameters() if p.grad is not None]
    for a, b in zip(grads, grads_ckpt, strict=True):
        torch.testing.assert_close(a, b)
