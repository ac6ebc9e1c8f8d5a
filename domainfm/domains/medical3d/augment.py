"""MONAI random augmentations (flips, intensity, affine) on the views of a view maker.

:class:`AugmentedViews` wraps any :class:`~domainfm.domains.medical3d.views.VolumeViews` and
applies, independently to each listed view, MONAI's ``RandFlip`` on every axis,
``RandScaleIntensity``, ``RandShiftIntensity`` and (optionally) ``RandAffine`` (rotation and
scaling). Every random choice is seeded from the sample's generator, so a sample is
reproducible and an interrupted run resumes on the same augmentations.

Apply geometric augmentations only to views whose targets do not depend on position: the
two views of a contrastive pair, not VoCo's crops (their overlap labels are positions) nor
an inpainting view and its target separately.

Example (YAML)::

    views:
      class_path: domainfm.domains.medical3d.augment.AugmentedViews
      init_args:
        views: {class_path: domainfm.domains.medical3d.views.OverlappingCropPair,
                init_args: {crop_size: 64}}
        keys: [view1, view2]
        rotate_deg: 15.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Unpack

import torch
from torch import Tensor

from domainfm.domains.medical3d.intensity_jitter import IntensityJitter, IntensityJitterArgs
from domainfm.domains.medical3d.views import VolumeViews


class AugmentedViews(VolumeViews):
    """A view maker whose ``keys`` views get MONAI random augmentations.

    Args:
        views: the view maker whose samples are augmented.
        keys: the sample's image tensors ``(C, D, H, W)`` to augment, each independently.
        flip_prob: probability of flipping each spatial axis.
        rotate_deg: largest rotation about each axis, degrees (0: no affine).
        scale: largest relative zoom per axis (0: none).
        affine_prob: probability of the affine transform when ``rotate_deg`` or ``scale``.
        **jitter: ``intensity_scale`` (intensities are multiplied by ``1 + U(-s, s)``) and
            ``intensity_shift`` (and shifted by ``U(-o, o)``): see
            :class:`~domainfm.domains.medical3d.intensity_jitter.IntensityJitterArgs`.
    """

    def __init__(
        self,
        *,
        views: VolumeViews,
        keys: Sequence[str] = ("view1", "view2"),
        flip_prob: float = 0.5,
        rotate_deg: float = 0.0,
        scale: float = 0.0,
        affine_prob: float = 0.5,
        **jitter: Unpack[IntensityJitterArgs],
    ) -> None:
        from monai import transforms as mt

        for name, value in (("flip_prob", flip_prob), ("affine_prob", affine_prob)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {name}={value}")
        if not keys:
            raise ValueError("keys is empty: name the views to augment")
        intensity = IntensityJitter.from_keywords(jitter, IntensityJitterArgs)
        self.views = views
        self.keys = tuple(keys)
        self.crop_size = views.crop_size
        self.foreground_prob = views.foreground_prob
        steps: list[Any] = [mt.RandFlip(prob=flip_prob, spatial_axis=axis) for axis in range(3)]
        steps += intensity.monai_transforms()
        if rotate_deg > 0 or scale > 0:
            steps.append(
                mt.RandAffine(
                    prob=affine_prob,
                    rotate_range=(math.radians(rotate_deg),) * 3,
                    scale_range=(scale,) * 3,
                    padding_mode="zeros",
                    mode="bilinear",
                )
            )
        self.transform = mt.Compose(steps)

    @property
    def min_size(self) -> tuple[int, ...]:
        return self.views.min_size

    def __call__(
        self, volume: Tensor, *, generator: torch.Generator | None, foreground: Tensor | None
    ) -> dict[str, Tensor]:
        sample = self.views(volume, generator=generator, foreground=foreground)
        missing = [k for k in self.keys if k not in sample]
        if missing:
            raise KeyError(
                f"AugmentedViews keys {missing} are not produced by {type(self.views).__name__} "
                f"(it returns {sorted(sample)})"
            )
        for key in self.keys:
            seed = int(torch.randint(0, 2**31 - 1, (), generator=generator))
            self.transform.set_random_state(seed=seed)
            out = self.transform(sample[key])  # (C, D, H, W), MetaTensor
            sample[key] = torch.as_tensor(out).as_subclass(Tensor).float().contiguous()
        return sample
