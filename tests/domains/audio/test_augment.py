"""Spectrogram augmentations against their definitions: SpecAugment bands, BYOL-A's
log-mixup-exp with a memory, random resize crop, reproducible views, batch post-norm."""

from __future__ import annotations

import torch

from domainfm.domains.audio import (
    BYOLAViews,
    MixupBYOLA,
    RandomResizeCrop,
    SpecAugment,
    normalize_batch,
)


def test_specaugment_masks_bands_within_limits() -> None:
    x = torch.randn(1, 64, 96) + 5.0
    out = SpecAugment(freq_mask=8, time_mask=20, num_masks=2, fill=0.0)(
        x, torch.Generator().manual_seed(1)
    )
    masked = out == 0.0
    rows = masked.all(dim=2)[0].nonzero().flatten()  # fully masked frequency bins
    cols = masked.all(dim=1)[0].nonzero().flatten()  # fully masked frames
    assert 0 < len(rows) <= 2 * 7 and 0 < len(cols) <= 2 * 19
    keep = ~masked
    torch.testing.assert_close(out[keep], x[keep])  # everything else untouched
    assert (masked == (masked.all(dim=2, keepdim=True) | masked.all(dim=1, keepdim=True))).all()


def test_mixup_is_log_mixup_exp_with_memory() -> None:
    mix = MixupBYOLA(ratio=0.4, memory=3)
    g = torch.Generator().manual_seed(0)
    first = torch.randn(1, 8, 10)
    torch.testing.assert_close(mix(first, g), first)  # empty memory: unchanged
    second = torch.randn(1, 8, 10)
    state = g.get_state()
    lam = 0.4 * float(torch.rand((), generator=g))
    pick = int(torch.randint(1, (), generator=g))  # the memory holds one item
    assert pick == 0
    expected = torch.log((1 - lam) * second.exp() + lam * first.exp() + torch.finfo().eps)
    g.set_state(state)
    torch.testing.assert_close(mix(second, g), expected)
    for _ in range(5):
        mix(torch.randn(1, 8, 10), g)
    assert len(mix.memory) == 3  # FIFO bounded


def test_resize_crop_identity_and_shape() -> None:
    x = torch.randn(1, 16, 24)
    same = RandomResizeCrop(
        virtual_crop_scale=(1.0, 1.0), freq_scale=(1.0, 1.0), time_scale=(1.0, 1.0)
    )
    torch.testing.assert_close(same(x, torch.Generator().manual_seed(0)), x)
    crop = RandomResizeCrop()
    out = crop(x, torch.Generator().manual_seed(3))
    assert out.shape == x.shape and not torch.equal(out, x)


def test_views_are_reproducible_and_differ() -> None:
    x = torch.randn(1, 64, 96)
    a1, a2 = BYOLAViews()(x, torch.Generator().manual_seed(5))
    b1, b2 = BYOLAViews()(x, torch.Generator().manual_seed(5))
    torch.testing.assert_close(a1, b1)
    torch.testing.assert_close(a2, b2)
    assert not torch.allclose(a1, a2)


def test_normalize_batch_standardizes() -> None:
    x = 3.0 + 2.0 * torch.randn(8, 1, 16, 20)
    y = normalize_batch(x)
    assert abs(float(y.mean())) < 1e-5 and abs(float(y.std()) - 1.0) < 1e-4


def test_frame_aligned_views_keep_time_positions() -> None:
    from domainfm.domains.audio import FrameAlignedViews

    # constant along frequency and cropped inside the input: a frequency-only transform
    # leaves every frame's values as they were
    x = torch.randn(1, 1, 40).expand(1, 32, 40).clone()
    views = FrameAlignedViews(mixup_ratio=0.0, freq_scale=(0.6, 1.0), virtual_freq_scale=1.0)
    for seed in range(3):
        v1, v2 = views(x, torch.Generator().manual_seed(seed))
        torch.testing.assert_close(v1, x, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(v2, x, atol=1e-5, rtol=1e-5)
    # with mixup and the zero canvas, frames still stay at their time: per frame, every
    # frequency row is a function of that frame only (no value from another frame)
    ramp = torch.arange(40.0).expand(1, 32, 40).clone()
    v1, _ = FrameAlignedViews(mixup_ratio=0.0)(ramp, torch.Generator().manual_seed(4))
    nonzero = v1[0].abs().sum(dim=1) > 1
    ratio = v1[0, nonzero] / ramp[0, nonzero].clamp(min=1)
    assert torch.allclose(ratio[:, 1:], ratio[:, 1:2].expand_as(ratio[:, 1:]), atol=1e-4)
    # BYOL-A's views move frames in time: the same input does not survive them
    b1, _ = BYOLAViews(mixup_ratio=0.0)(x, torch.Generator().manual_seed(2))
    assert not torch.allclose(b1, x, atol=1e-3)
