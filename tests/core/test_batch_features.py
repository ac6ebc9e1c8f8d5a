from __future__ import annotations

import torch

from domainfm.core.batch_features import BatchFeatures
from domainfm.core.vit import VisionTransformerND


class _Counting(VisionTransformerND):
    calls = 0

    def forward_tokens(self, x, keep_idx=None):  # type: ignore[no-untyped-def]
        _Counting.calls += 1
        return super().forward_tokens(x, keep_idx)


def test_leading_axes_and_memoization() -> None:
    torch.manual_seed(0)
    vit = _Counting(in_chans=1, spatial_dims=3, patch_size=8, embed_dim=32, depth=2, num_heads=4)
    vit.eval()
    crops = torch.randn(2, 3, 1, 16, 16, 16)  # (B, K, C, D, H, W)
    features = BatchFeatures(vit, {"crops": crops})
    tokens, grid = features.tokens("crops")
    assert tokens.shape == (2, 3, 8, 32) and grid.shape == (2, 2, 2)
    pooled = features.pooled("crops")  # reuses the token pass
    assert _Counting.calls == 1
    assert pooled.shape == (2, 3, 32)
    expected = vit(crops[1, 2][None])[0]
    torch.testing.assert_close(pooled[1, 2], expected, rtol=1e-5, atol=1e-5)
    features.tokens("crops")
    assert _Counting.calls == 2  # vit(...) above ran once more; tokens were not recomputed
    other = BatchFeatures(vit, {"crops": crops})
    other.pooled("crops")  # pooled first: the token pass serves both
    other.tokens("crops")
    assert _Counting.calls == 3


def test_missing_key_is_named() -> None:
    vit = VisionTransformerND(
        in_chans=1, spatial_dims=2, patch_size=8, embed_dim=32, depth=1, num_heads=4
    )
    features = BatchFeatures(vit, {"input": torch.randn(1, 1, 16, 16)})
    try:
        features.pooled("view1")
    except KeyError as err:
        assert "view1" in str(err) and "input" in str(err)
    else:
        raise AssertionError("expected KeyError")
