"""TimmViT: the Backbone protocol over timm's VisionTransformer (keys are timm's, masked
encoding equals encoding the kept tokens, intermediates and pooling as timm)."""

from __future__ import annotations

import timm
import torch

from domainfm.core.backbone import Backbone
from domainfm.domains.geospatial.timm_vit import TimmViT

KW = {"img_size": 56, "patch_size": 14, "embed_dim": 32, "depth": 2, "num_heads": 4}


def test_protocol_and_timm_equality() -> None:
    torch.manual_seed(0)
    vit = TimmViT(in_chans=5, init_values=1e-5, **KW).eval()
    assert isinstance(vit, Backbone) and vit.patch_size == (14, 14)
    ref = timm.create_model("vit_small_patch14_dinov2", in_chans=5, num_classes=0, **KW).eval()
    ref.load_state_dict(vit.state_dict())
    x = torch.randn(2, 5, 56, 84)  # another grid than the table's: resampled by timm
    with torch.no_grad():
        tokens, grid = vit.forward_tokens(x)
        assert grid.shape == (4, 6) and tokens.shape == (2, 25, 32)
        keep = torch.tensor([[0, 9, 23], [4, 5, 6]])
        kept = vit.forward_tokens(x, keep)[0]
        assert kept.shape == (2, 4, 32)
        maps = vit.forward_intermediates(x, [0, 1], norm=True)
        assert [tuple(m.shape) for m in maps] == [(2, 32, 4, 6)] * 2
        torch.testing.assert_close(maps[-1].flatten(2).transpose(1, 2), tokens[:, 1:])
        x56 = x[..., :56]
        torch.testing.assert_close(vit(x56), ref(x56))
