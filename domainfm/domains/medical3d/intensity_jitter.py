"""The intensity-only augmentation of a view, and its keyword arguments, declared once.

A view's intensities are scaled by ``1 + U(-a, a)`` and shifted by ``U(-b, b)`` (``a =
intensity_scale``, ``b = intensity_shift``), optionally with Gaussian noise ``N(0, sigma^2)``
(``sigma = noise_std``). The view makers that augment intensities take these settings as
``**jitter: Unpack[IntensityJitterArgs]`` (or :class:`IntensityNoiseArgs` with the noise;
configs spell them flat: ``intensity_scale: 0.2``), build one :class:`IntensityJitter` and
apply it: as MONAI's ``RandScaleIntensity`` + ``RandShiftIntensity``
(:meth:`IntensityJitter.monai_transforms`, in
:class:`~domainfm.domains.medical3d.augment.AugmentedViews`), or drawn from the sample's own
generator (:meth:`IntensityJitter.__call__`, in
:class:`~domainfm.domains.medical3d.partition_views.PartitionViews`, whose two views of one
crop must keep their voxel positions).

Example::

    >>> jitter = IntensityJitter.from_keywords({"intensity_scale": 0.2}, IntensityJitterArgs)
    >>> jitter.intensity_shift
    0.1
    >>> view = jitter(crop, torch.Generator().manual_seed(0))  # a new tensor, crop's shape
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self, TypedDict

import torch
from torch import Tensor


class IntensityJitterArgs(TypedDict, total=False):
    """The intensity keywords of a view maker (each optional; defaults in
    :class:`IntensityJitter`).

    Keys:
        intensity_scale: intensities are multiplied by ``1 + U(-a, a)``.
        intensity_shift: and shifted by ``U(-b, b)``.
    """

    intensity_scale: float
    intensity_shift: float


class IntensityNoiseArgs(IntensityJitterArgs, total=False):
    """The intensity keywords with Gaussian noise.

    Keys:
        noise_std: standard deviation of the Gaussian noise added (0: none).
    """

    noise_std: float


@dataclass(frozen=True, kw_only=True)
class IntensityJitter:
    """Random intensity scale, shift and noise of a view (see the module docstring); the
    view maker checks the ranges it accepts."""

    intensity_scale: float = 0.1
    intensity_shift: float = 0.1
    noise_std: float = 0.0

    def __post_init__(self) -> None:
        for name in ("intensity_scale", "intensity_shift", "noise_std"):
            object.__setattr__(self, name, float(getattr(self, name)))

    @classmethod
    def from_keywords(cls, keywords: Mapping[str, Any], accepted: type) -> Self:
        """The settings ``keywords`` names, the others at their defaults; ``accepted`` is the
        TypedDict the view maker declared them with.

        Raises:
            TypeError: for a keyword ``accepted`` does not hold (as for any unknown argument).
        """
        unknown = set(keywords) - set(accepted.__annotations__)
        if unknown:
            raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(unknown))}")
        return cls(**keywords)

    def monai_transforms(self) -> list[Any]:
        """MONAI's ``RandScaleIntensity`` and ``RandShiftIntensity`` of these ranges (always
        applied; seeded by the caller's ``set_random_state``); no noise."""
        from monai import transforms as mt

        return [
            mt.RandScaleIntensity(factors=self.intensity_scale, prob=1.0),
            mt.RandShiftIntensity(offsets=self.intensity_shift, prob=1.0),
        ]

    def __call__(self, crop: Tensor, generator: torch.Generator | None) -> Tensor:
        """``crop * (1 + U(-a, a)) + U(-b, b) (+ N(0, sigma^2))``, a new tensor, every draw
        from ``generator``."""
        scale, shift = (2.0 * torch.rand(2, generator=generator) - 1.0).tolist()
        view = crop * (1.0 + self.intensity_scale * scale) + self.intensity_shift * shift
        if self.noise_std > 0:
            noise = torch.randn(crop.shape, generator=generator, dtype=torch.float32)
            view = view + self.noise_std * noise.to(crop.dtype)
        return view
