"""IntensityJitter: the intensity settings of the view makers declared once — defaults, the
keywords a view maker accepts, MONAI's transforms of those ranges and the seeded tensor
version (scale, shift, noise)."""

from __future__ import annotations

import pytest
import torch

from domainfm.domains.medical3d.augment import AugmentedViews
from domainfm.domains.medical3d.intensity_jitter import (
    IntensityJitter,
    IntensityJitterArgs,
    IntensityNoiseArgs,
)
from domainfm.domains.medical3d.partition_views import PartitionViews
from domainfm.domains.medical3d.views import OverlappingCropPair


def test_defaults_and_accepted_keywords() -> None:
    jitter = IntensityJitter.from_keywords({"intensity_scale": 0}, IntensityJitterArgs)
    assert (jitter.intensity_scale, jitter.intensity_shift, jitter.noise_std) == (0.0, 0.1, 0.0)
    assert isinstance(jitter.intensity_scale, float)
    assert IntensityJitter.from_keywords({"noise_std": 0.2}, IntensityNoiseArgs).noise_std == 0.2
    with pytest.raises(TypeError, match="noise_std"):
        IntensityJitter.from_keywords({"noise_std": 0.2}, IntensityJitterArgs)


def test_view_makers_take_the_same_settings() -> None:
    views = PartitionViews(crop_size=16, intensity_scale=0.2, noise_std=0.01)
    assert views.jitter == IntensityJitter(intensity_scale=0.2, noise_std=0.01)
    with pytest.raises(TypeError, match="noise_std"):  # MONAI's augmentation adds no noise
        AugmentedViews(views=OverlappingCropPair(crop_size=16), noise_std=0.1)  # type: ignore[call-arg]


def test_monai_transforms_have_the_ranges() -> None:
    scale, shift = IntensityJitter(intensity_scale=0.3, intensity_shift=0.2).monai_transforms()
    assert type(scale).__name__ == "RandScaleIntensity" and scale.factors == (-0.3, 0.3)
    assert type(shift).__name__ == "RandShiftIntensity" and shift.offsets == (-0.2, 0.2)


def test_seeded_view_is_an_affine_map_of_the_crop() -> None:
    crop = torch.linspace(-1.0, 1.0, 64).reshape(1, 4, 4, 4)
    jitter = IntensityJitter(intensity_scale=0.5, intensity_shift=0.5)
    a = jitter(crop, torch.Generator().manual_seed(3))
    b = jitter(crop, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == crop.shape
    scale = (a[0, 3, 3, 3] - a[0, 0, 0, 0]) / (crop[0, 3, 3, 3] - crop[0, 0, 0, 0])
    assert 0.5 <= float(scale) <= 1.5
    torch.testing.assert_close(a, crop * scale + (a[0, 0, 0, 0] - crop[0, 0, 0, 0] * scale))
    noisy = IntensityJitter(intensity_scale=0.0, intensity_shift=0.0, noise_std=0.1)
    assert not torch.equal(noisy(crop, torch.Generator().manual_seed(0)), crop)
