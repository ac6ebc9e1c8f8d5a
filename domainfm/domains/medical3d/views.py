"""How training samples are cut from a preprocessed volume: the view makers.

A view maker takes one preprocessed volume ``(C, D, H, W)`` (RAS, target spacing,
normalized) and a seeded generator and returns the tensors of one sample. The dataset
(:class:`~domainfm.domains.medical3d.volumes.VolumeCropDataset`) owns loading, caching and
padding; each pretraining recipe owns a view maker: plain random crops for MAE, overlapping
crop pairs for contrastive objectives, VoCo's base/random crops, the Swin UNETR SSL views.

Every view maker returns at least ``"input"`` (one crop, ``(C, *crop_size)``), which the
label-free monitors and ``predict`` read.

**Foreground-aware crops.** The dataset passes ``foreground``: voxel coordinates
``(M, 3)`` inside the body/brain (normalized intensity above a threshold). With probability
``foreground_prob`` a crop is centred on one of them (then clamped into the volume), so
crops rarely land in air; otherwise its position is uniform.

Example::

    >>> views = OverlappingCropPair(crop_size=64, max_shift=0.5)
    >>> sample = views(volume, generator=torch.Generator().manual_seed(0), foreground=None)
    >>> sorted(sample)
    ['input', 'origin1', 'origin2', 'view1', 'view2']
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import Tensor

from domainfm.core.grid import to_ntuple


def crop_start(
    shape: Sequence[int],
    crop: Sequence[int],
    *,
    generator: torch.Generator | None,
    foreground: Tensor | None = None,
    foreground_prob: float = 0.0,
) -> list[int]:
    """Start corner of a ``crop`` inside a volume of spatial ``shape`` (``shape >= crop``).

    With probability ``foreground_prob`` (and a non-empty ``foreground`` ``(M, 3)``) the crop
    is centred on a random foreground voxel and clamped into the volume; otherwise uniform.
    """
    limits = [size - c for size, c in zip(shape, crop, strict=True)]
    if min(limits) < 0:
        raise ValueError(f"crop {tuple(crop)} is larger than the volume {tuple(shape)}")
    use_fg = foreground is not None and len(foreground) > 0 and foreground_prob > 0
    if use_fg and float(torch.rand((), generator=generator)) < foreground_prob:
        assert foreground is not None
        centre = foreground[int(torch.randint(0, len(foreground), (), generator=generator))]
        return [
            min(max(int(p) - c // 2, 0), hi)
            for p, c, hi in zip(centre.tolist(), crop, limits, strict=True)
        ]
    return [int(torch.randint(0, hi + 1, (), generator=generator)) for hi in limits]


def take_crop(volume: Tensor, start: Sequence[int], crop: Sequence[int]) -> Tensor:
    """``volume[:, start : start + crop]`` as a new tensor ``(C, *crop)``."""
    region = tuple(slice(s, s + c) for s, c in zip(start, crop, strict=True))
    return volume[(slice(None), *region)].clone()


class VolumeViews(ABC):
    """A view maker: one preprocessed volume → the tensors of one training sample.

    Args:
        crop_size: crop size in voxels (int or 3 values).
        foreground_prob: probability of centring a crop on a foreground voxel.
    """

    def __init__(self, *, crop_size: int | Sequence[int] = 64, foreground_prob: float = 0.0):
        if not 0.0 <= foreground_prob <= 1.0:
            raise ValueError(f"foreground_prob must be in [0, 1], got {foreground_prob}")
        self.crop_size = to_ntuple(crop_size, 3, name="crop_size")
        self.foreground_prob = foreground_prob

    @property
    def min_size(self) -> tuple[int, ...]:
        """Volumes are padded to at least this spatial size before views are cut."""
        return self.crop_size

    def start(
        self, shape: Sequence[int], *, generator: torch.Generator | None, foreground: Tensor | None
    ) -> list[int]:
        """A crop start corner (foreground-aware with ``foreground_prob``)."""
        return crop_start(
            shape,
            self.crop_size,
            generator=generator,
            foreground=foreground,
            foreground_prob=self.foreground_prob,
        )

    @abstractmethod
    def __call__(
        self, volume: Tensor, *, generator: torch.Generator | None, foreground: Tensor | None
    ) -> dict[str, Tensor]:
        """The sample cut from ``volume`` ``(C, D, H, W)``; must contain ``"input"``."""


class RandomCrop(VolumeViews):
    """One random crop: ``{"input": (C, *crop_size), "origin": (3,)}`` (for MAE)."""

    def __call__(
        self, volume: Tensor, *, generator: torch.Generator | None, foreground: Tensor | None
    ) -> dict[str, Tensor]:
        start = self.start(volume.shape[1:], generator=generator, foreground=foreground)
        return {"input": take_crop(volume, start, self.crop_size), "origin": torch.tensor(start)}


class OverlappingCropPair(VolumeViews):
    """A positive pair of overlapping crops of the same volume (for contrastive objectives).

    The second crop is shifted by up to ``max_shift`` of the crop size per axis; each view gets
    its own random intensity scale and shift (factors in [0.9, 1.1]). Returns ``"input"`` (the
    first crop, unjittered), ``"view1"``, ``"view2"`` and their voxel origins
    ``"origin1"``/``"origin2"``.

    Args:
        crop_size: crop size in voxels.
        max_shift: largest offset of the second view, as a fraction of the crop size.
        foreground_prob: probability of centring the first crop on foreground.
    """

    def __init__(
        self,
        *,
        crop_size: int | Sequence[int] = 64,
        max_shift: float = 0.5,
        foreground_prob: float = 0.0,
    ) -> None:
        super().__init__(crop_size=crop_size, foreground_prob=foreground_prob)
        if not 0.0 <= max_shift <= 1.0:
            raise ValueError(f"max_shift must be in [0, 1], got max_shift={max_shift}")
        self.max_shift = max_shift

    def __call__(
        self, volume: Tensor, *, generator: torch.Generator | None, foreground: Tensor | None
    ) -> dict[str, Tensor]:
        sizes = volume.shape[1:]
        starts = self.start(sizes, generator=generator, foreground=foreground)
        first = take_crop(volume, starts, self.crop_size)
        shifted = []
        for start, size, crop in zip(starts, sizes, self.crop_size, strict=True):
            reach = int(self.max_shift * crop)
            lo, hi = max(0, start - reach), min(size - crop, start + reach)
            shifted.append(int(torch.randint(lo, hi + 1, (), generator=generator)))
        # per view: an intensity scale and a shift, each a factor in [0.9, 1.1]
        jitter = 1.0 + 0.2 * (torch.rand(2, 2, generator=generator) - 0.5)
        views = (first, take_crop(volume, shifted, self.crop_size))
        v1, v2 = (v * j[0] + (j[1] - 1.0) for v, j in zip(views, jitter, strict=True))
        return {
            "input": first,
            "view1": v1,
            "view2": v2,
            "origin1": torch.tensor(starts),
            "origin2": torch.tensor(shifted),
        }
