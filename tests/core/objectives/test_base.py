"""The helpers objectives share: batch keys, hyperparameter checks and the sized-head base."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from domainfm.core.objectives.base import (
    SizedFromBackbone,
    require_at_least,
    require_positive,
    view_keys,
)


def test_view_keys_pairs_one_key_per_view() -> None:
    assert view_keys("a", ["t"], "targets") == (("a",), ("t",))
    with pytest.raises(ValueError, match=r"views \('a', 'b'\) and labels \('r',\) must"):
        view_keys(["a", "b"], "r", "labels")
    with pytest.raises(ValueError, match="labels must name at least one batch key"):
        view_keys("a", [], "labels")


def test_bounds_name_the_value_and_refuse_nan() -> None:
    require_at_least(1, dim=1, hidden=None)
    require_positive(temperature=0.1)
    with pytest.raises(ValueError, match="dim must be >= 1, got dim=0"):
        require_at_least(1, width=3, dim=0)
    with pytest.raises(ValueError, match="weight must be >= 0, got weight=nan"):
        require_at_least(0, weight=math.nan)
    with pytest.raises(ValueError, match=r"eps must be > 0, got eps=0\.0"):
        require_positive(eps=0.0)


class _Head(SizedFromBackbone):
    backbone_sizes = ("embed_dim", "in_chans")
    head: nn.Linear

    def __init__(self, embed_dim: int | None = None, in_chans: int | None = None) -> None:
        super().__init__()
        self.embed_dim, self.in_chans = embed_dim, in_chans
        self.builds = 0
        self.build_heads_if_sized()

    def build_heads(self) -> None:
        assert self.embed_dim is not None and self.in_chans is not None
        self.head = nn.Linear(self.embed_dim, self.in_chans)
        self.builds += 1


class _Backbone(nn.Module):
    embed_dim = 8
    in_chans = 2


def test_sized_heads_are_built_once_when_every_size_is_known() -> None:
    given = _Head(embed_dim=8, in_chans=2)
    assert given.builds == 1
    given.bind_backbone(_Backbone())  # checks only
    assert given.builds == 1
    unbound = _Head(in_chans=2)
    assert unbound.builds == 0
    with pytest.raises(RuntimeError, match="_Head has no embed_dim yet"):
        unbound.ensure_sized()
    unbound.bind_backbone(_Backbone())
    assert unbound.builds == 1 and unbound.embed_dim == 8
    unbound.ensure_sized()
    assert unbound.head(torch.zeros(1, 8)).shape == (1, 2)
    with pytest.raises(ValueError, match="_Head in_chans 3 differs from the backbone's 2"):
        _Head(in_chans=3).bind_backbone(_Backbone())
