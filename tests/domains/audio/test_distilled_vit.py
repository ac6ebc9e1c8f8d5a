"""The distilled ViT: two prefix tokens with positions, registry build, token dropping,
pooling, learned table sized for two prefix rows."""

from __future__ import annotations

import pytest
import torch

from domainfm.core.backbone import Backbone, build_backbone
from domainfm.domains.audio.distilled_vit import DistilledVisionTransformerND

KW = {"in_chans": 1, "spatial_dims": 2, "patch_size": 16, "embed_dim": 32, "depth": 2,
      "num_heads": 2, "grid_size": (2, 4), "axes": ("f", "t")}  # fmt: skip


def test_tokens_prefix_and_pooling() -> None:
    torch.manual_seed(0)
    vit = build_backbone("vit_nd_distilled", KW).eval()
    assert isinstance(vit, DistilledVisionTransformerND) and isinstance(vit, Backbone)
    assert vit.pos_embed is not None and vit.pos_embed.shape == (1, 2 + 8, 32)
    x = torch.randn(2, 1, 32, 64)
    with torch.no_grad():
        tokens, grid = vit.forward_tokens(x)
        assert tokens.shape == (2, 10, 32) and grid.shape == (2, 4)
        torch.testing.assert_close(vit(x), tokens[:, 2:].mean(dim=1))
        vit.global_pool = "token"
        torch.testing.assert_close(vit(x), (tokens[:, 0] + tokens[:, 1]) / 2)
        kept, _ = vit.forward_tokens(x, keep_idx=torch.tensor([[0, 5], [7, 1]]))
        assert kept.shape == (2, 4, 32)
        maps = vit.forward_intermediates(x, indices=2)
        assert [m.shape for m in maps] == [(2, 32, 2, 4)] * 2


def test_sincos_prefix_has_no_position_and_bad_pool_is_refused() -> None:
    vit = DistilledVisionTransformerND(**{**KW, "pos_embed": "sincos"})
    assert vit.pos_embed is None and vit.forward_tokens(torch.randn(1, 1, 32, 64))[0].shape[1] == 10
    with pytest.raises(ValueError, match="global_pool"):
        DistilledVisionTransformerND(**{**KW, "global_pool": "max"})  # type: ignore[arg-type]
