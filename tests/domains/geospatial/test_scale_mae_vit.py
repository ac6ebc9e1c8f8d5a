"""ScaleMAEViT: positions computed per grid and scaled by the GSD ratio."""

from __future__ import annotations

import torch

from domainfm.domains.geospatial.scale_mae_vit import ScaleMAEViT, gsd_sincos_pos_embed


def test_gsd_scaled_positions() -> None:
    table = gsd_sincos_pos_embed((2, 3), 8, 0.5)
    assert table.shape == (6, 8)
    # column codes first: the patch at (0, 2) has column 2 * 0.5 = 1.0
    torch.testing.assert_close(table[2, :4], gsd_sincos_pos_embed((1, 3), 8, 1.0)[1, :4])
    vit = ScaleMAEViT(in_chans=3, embed_dim=32, depth=1, num_heads=4, img_size=32)
    assert vit.pos_embed is None and "pos_embed" not in vit.state_dict()
    assert vit(torch.randn(1, 3, 48, 32)).shape == (1, 32)
