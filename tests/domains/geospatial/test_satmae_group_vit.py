"""GroupChannelViT: group-major token grid, kept tokens equal the full embedding's, maps per
group, the stored position table resampled for other grids, bad groups refused."""

from __future__ import annotations

import pytest
import torch

from domainfm.domains.geospatial.satmae_group_vit import GroupChannelViT

GROUPS = ((0, 1, 2, 6), (3, 4, 5, 7), (8, 9))
SMALL = {"channel_groups": GROUPS, "patch_size": 8, "grid_size": 4, "embed_dim": 32}
SMALL.update({"channel_embed": 8, "depth": 2, "num_heads": 4})


def test_grid_tokens_and_maps() -> None:
    torch.manual_seed(0)
    vit = GroupChannelViT(**SMALL).eval()
    x = torch.randn(2, 10, 32, 48)  # another grid than the table's 4 x 4: resampled
    grid = vit.token_grid(x.shape[2:])
    assert grid.shape == (3, 4, 6) and grid.patch_size == (1, 8, 8)
    with torch.no_grad():
        full = vit._embed(x, grid, None)
        keep = torch.tensor([[0, 30, 71], [5, 24, 48]])  # one token per group each
        kept = vit._embed(x, grid, keep)
    torch.testing.assert_close(
        kept[:, 1:], torch.gather(full[:, 1:], 1, keep[..., None].expand(-1, -1, 32))
    )
    tokens, _ = vit.forward_tokens(x)
    assert tokens.shape == (2, 1 + 72, 32)
    [fmap] = vit.forward_intermediates(x)
    assert fmap.shape == (2, 32, 3, 4, 6)
    assert vit(x).shape == (2, 32)


def test_a_group_sees_only_its_bands() -> None:
    torch.manual_seed(0)
    vit = GroupChannelViT(**SMALL).eval()
    x = torch.randn(1, 10, 32, 32)
    y = x.clone()
    y[:, [8, 9]] += 1.0  # the SWIR group's bands
    grid = vit.token_grid((32, 32))
    with torch.no_grad():
        a, b = vit._embed(x, grid, None), vit._embed(y, grid, None)
    torch.testing.assert_close(a[:, : 1 + 32], b[:, : 1 + 32])  # groups 0 and 1 unchanged
    assert not torch.allclose(a[:, 1 + 32 :], b[:, 1 + 32 :])


def test_channel_cls_embed_and_bad_arguments() -> None:
    vit = GroupChannelViT(**SMALL, channel_cls_embed=True)
    assert vit.state_dict()["channel_cls_embed"].shape == (1, 1, 8)
    with pytest.raises(ValueError, match="exactly once"):
        GroupChannelViT(**{**SMALL, "channel_groups": ((0, 1), (1, 2))})
    with pytest.raises(ValueError, match="channel_embed"):
        GroupChannelViT(**{**SMALL, "channel_embed": 30})
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        GroupChannelViT(**SMALL).token_grid((32, 32, 32))
