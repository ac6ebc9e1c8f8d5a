from __future__ import annotations

import pytest
import torch

from domainfm.domains.medical3d.swin import SwinViT3D


def _swin() -> SwinViT3D:
    torch.manual_seed(0)
    return SwinViT3D(in_chans=1, feature_size=12).eval()


def test_intermediate_selection() -> None:
    swin = _swin()
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        everything = swin.forward_intermediates(x)
        assert [m.shape[1] for m in everything] == [12, 24, 48, 96, 192]
        last_two = swin.forward_intermediates(x, indices=2)
        assert [m.shape[1] for m in last_two] == [96, 192]
        assert torch.equal(last_two[1], everything[4])
        picked = swin.forward_intermediates(x, indices=[0, -1])
        assert torch.equal(picked[0], everything[0]) and torch.equal(picked[1], everything[4])


def test_intermediate_indices_are_validated() -> None:
    """Out-of-range indices are refused, as by the other multi-scale backbones (the Swin
    adapter used to return a wrong selection for an int and raise IndexError for a list)."""
    swin = _swin()
    x = torch.randn(1, 1, 32, 32, 32)
    for bad in (0, 6, [5], [-6]):
        with pytest.raises(ValueError, match="indices"):
            swin.forward_intermediates(x, indices=bad)
