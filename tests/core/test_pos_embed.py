from __future__ import annotations

import math

import pytest
import torch
from timm.layers import resample_abs_pos_embed

from domainfm.core.pos_embed import resample_pos_embed, sincos_1d, sincos_pos_embed


def test_sincos_1d_matches_formula() -> None:
    pos = torch.arange(5)
    table = sincos_1d(pos, dim=8)
    for p in range(5):
        for k in range(4):
            omega = 1.0 / 10000 ** (k / 4)
            assert table[p, k].item() == pytest.approx(math.sin(p * omega), abs=1e-6)
            assert table[p, 4 + k].item() == pytest.approx(math.cos(p * omega), abs=1e-6)


def test_sincos_nd_layout_and_padding() -> None:
    table = sincos_pos_embed((2, 3, 4), dim=20)  # 3 axes x 6 channels + 2 zero channels
    assert table.shape == (24, 20)
    assert torch.all(table[:, 18:] == 0)
    idx = (1 * 3 + 2) * 4 + 3  # grid position (1, 2, 3), C order
    expected = torch.cat([sincos_1d(torch.tensor([c]), 6)[0] for c in (1, 2, 3)])
    torch.testing.assert_close(table[idx, :18], expected)


def test_sincos_matches_mae_2d_reference() -> None:
    """MAE's get_2d_sincos_pos_embed puts the w-coordinate first; ours is (h, w) C order."""
    h, w, dim = 3, 4, 16
    table = sincos_pos_embed((h, w), dim=dim).view(h, w, dim)
    # the h-part of the table depends only on the row, the w-part only on the column
    assert torch.allclose(table[:, :1, : dim // 2].expand(h, w, dim // 2), table[..., : dim // 2])
    assert torch.allclose(table[:1, :, dim // 2 :].expand(h, w, dim // 2), table[..., dim // 2 :])


def test_resample_identity_and_2d_uses_timm() -> None:
    pe = torch.randn(1, 1 + 16, 8)
    assert resample_pos_embed(pe, (4, 4), (4, 4), num_prefix_tokens=1) is pe
    ours = resample_pos_embed(pe, (6, 5), (4, 4), num_prefix_tokens=1)
    ref = resample_abs_pos_embed(pe, new_size=[6, 5], old_size=[4, 4], num_prefix_tokens=1)
    torch.testing.assert_close(ours, ref)


@pytest.mark.parametrize("old,new", [((6,), (12,)), ((3, 4, 5), (6, 8, 10))])
def test_resample_roundtrip_smooth_table(old: tuple[int, ...], new: tuple[int, ...]) -> None:
    """Up then down returns a smooth table (a sin-cos table with low frequencies) closely."""
    table = sincos_pos_embed(old, dim=12, temperature=2000.0)[None]
    prefix = torch.randn(1, 1, 12)
    pe = torch.cat([prefix, table], dim=1)
    up = resample_pos_embed(pe, new, old, num_prefix_tokens=1)
    assert up.shape == (1, 1 + math.prod(new), 12)
    torch.testing.assert_close(up[:, :1], prefix)
    back = resample_pos_embed(up, old, new, num_prefix_tokens=1)
    err = (back - pe).abs().max().item()
    assert err < 0.15, err
    # and it is not the identity by accident: a coarser grid loses detail
    coarse = resample_pos_embed(pe, tuple(max(1, s // 2) for s in old), old, num_prefix_tokens=1)
    assert coarse.shape[1] < pe.shape[1]


def test_resample_3d_linear_exact_on_linear_ramp() -> None:
    """Trilinear resampling (align_corners=False) of a ramp in cell centers stays a ramp."""
    old, new = (4, 4, 4), (8, 8, 8)
    centers = [(torch.arange(s) + 0.5) / s for s in old]
    ramp = centers[0][:, None, None] + 0 * centers[1][None, :, None] + 0 * centers[2]
    pe = ramp.reshape(1, -1, 1)
    up = resample_pos_embed(pe, new, old).view(*new)
    expect = (torch.arange(8) + 0.5) / 8
    # interior samples lie on the ramp (edges are clamped)
    torch.testing.assert_close(up[2:6, 0, 0], expect[2:6])
