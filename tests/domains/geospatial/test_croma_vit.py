"""CROMAEncoder: ALiBi bias for any grid, masked encoding equals the bias gathered at the kept
tokens."""

from __future__ import annotations

import pytest
import torch

from domainfm.core.backbone import Backbone
from domainfm.domains.geospatial.croma_vit import CROMAEncoder, alibi_2d_bias


def test_alibi_and_masked_encoding() -> None:
    bias = alibi_2d_bias((2, 3), 16)
    assert bias.shape == (16, 6, 6)
    assert float(bias[0, 0, 4]) == pytest.approx(-(2**-0.5) * 2**0.5)  # slope 2^-0.5, dist √2
    torch.manual_seed(0)
    enc = CROMAEncoder(in_chans=2, embed_dim=32, depth=2, num_heads=16).eval()
    assert isinstance(enc, Backbone)
    x = torch.randn(2, 2, 16, 24)
    with torch.no_grad():
        tokens, grid = enc.forward_tokens(x)
        assert grid.shape == (2, 3) and tokens.shape == (2, 6, 32)
        keep = torch.arange(6)[None].expand(2, -1)
        torch.testing.assert_close(enc.forward_tokens(x, keep)[0], tokens)
        maps = enc.forward_intermediates(x, 1, norm=True)
        torch.testing.assert_close(maps[0].flatten(2).transpose(1, 2), tokens)
