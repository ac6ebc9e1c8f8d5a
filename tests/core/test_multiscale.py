from __future__ import annotations

import pytest
import torch
from torch import Tensor

from domainfm.core.backbone import Backbone
from domainfm.core.multiscale import MultiScaleBackbone, select_levels


def test_select_levels() -> None:
    assert list(select_levels(None, 4)) == [0, 1, 2, 3]
    assert list(select_levels(2, 4)) == [2, 3]
    assert list(select_levels([0, -1], 4)) == [0, -1]
    for bad in (0, 5, [4], [-5]):
        with pytest.raises(ValueError, match="indices"):
            select_levels(bad, 4)


class _Pyramid(MultiScaleBackbone):
    """Two average-pooled maps of the input: strides 2 and 4."""

    spatial_dims = 2

    def __init__(self) -> None:
        super().__init__()
        self.feature_channels = (3, 3)
        self.feature_strides = (2, 4)
        self.embed_dim = 3
        self.patch_size = (4, 4)

    def stage_maps(self, x: Tensor, norm: bool) -> list[Tensor]:
        return [torch.nn.functional.avg_pool2d(x, s) for s in self.feature_strides]


def test_the_base_gives_the_backbone_contract() -> None:
    net = _Pyramid()
    assert isinstance(net, Backbone) and net.num_prefix_tokens == 0
    x = torch.randn(2, 3, 8, 12)
    maps = net.forward_intermediates(x)
    assert [m.shape[2:] for m in maps] == [(4, 6), (2, 3)]
    tokens, grid = net.forward_tokens(x)
    assert grid.shape == (2, 3) and tokens.shape == (2, 6, 3)
    torch.testing.assert_close(net(x), maps[1].mean(dim=(2, 3)))
    with pytest.raises(ValueError, match="_Pyramid cannot drop tokens"):
        net.forward_tokens(x, keep_idx=torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="takes 2 spatial dims"):
        net.token_grid((8, 8, 8))
