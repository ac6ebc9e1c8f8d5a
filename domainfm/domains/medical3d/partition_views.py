"""Partition-position views for the global + local contrast of Chaitanya et al.

Chaitanya, Erdil, Karani & Konukoglu 2020, "Contrastive learning of global and local features
for medical image segmentation with limited annotations", NeurIPS 2020, arXiv:2006.10511,
Sec. 3.1 (strategy G_D): each volume is split into ``S`` partitions along its slice axis and
images of the same partition of different volumes are positives of each other
(:class:`~domainfm.core.objectives.global_local.GlobalPartitionContrast`); two augmented views
of one image are compared position by position by the local loss
(:class:`~domainfm.core.objectives.global_local.LocalContrast`).

For 3D sub-volumes a *partition* is a range of crop positions along ``axis``: the
``L - c + 1`` start positions of a crop of side ``c`` in a volume of side ``L`` are split into
``S`` consecutive bins of (nearly) equal size, bin ``s`` holding the starts
``[floor(s n / S), floor((s + 1) n / S))`` with ``n = L - c + 1``; so partition ``s`` is the
crop's relative position (``s / S`` to ``(s + 1) / S`` of the way) along the axis, whatever
the volume's length. Volumes are padded to at least ``c + S - 1`` along ``axis`` (``min_size``)
so that every bin is non-empty.

Each sample draws its partition ``s`` uniformly, its start along ``axis`` uniformly inside bin
``s`` and its position along the other axes uniformly — or, with probability
``foreground_prob``, centred on a foreground voxel of the partition's slab (the voxels whose
coordinate along ``axis`` is a crop centre of bin ``s``). The crop is cut once; the two views
are the same crop with independent intensity-only augmentations (positions must correspond
for the local loss): ``view = crop * (1 + U(-a, a)) + U(-b, b) + N(0, sigma^2)`` with
``a = intensity_scale``, ``b = intensity_shift``, ``sigma = noise_std``.

Axes: volumes are ``(C, D, H, W)`` in RAS (spatial axes x: R, y: A, z: S); the default
``axis=2`` partitions along z, the axial slice axis, as the paper partitions its stacks of
axial (or short-axis) slices.

Returned sample::

    "input"      (C, *crop_size)   the crop, unaugmented (for monitors and predict)
    "view1"      (C, *crop_size)   first intensity-augmented view
    "view2"      (C, *crop_size)   second one
    "partition"  () int64          the partition index in [0, S)
    "origin"     (3,) int64        the crop's start corner (voxels)

Example::

    >>> views = PartitionViews(crop_size=(32, 32, 16), num_partitions=4)
    >>> views.min_size
    (32, 32, 19)
    >>> sample = views(volume, generator=torch.Generator().manual_seed(0), foreground=None)
    >>> int(sample["partition"]) in range(4), sample["view1"].shape
    (True, torch.Size([1, 32, 32, 16]))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Unpack

import torch
from torch import Tensor

from domainfm.core.objectives.base import require_at_least
from domainfm.core.objectives.global_local import PARTITION_KEY
from domainfm.domains.medical3d.intensity_jitter import IntensityJitter, IntensityNoiseArgs
from domainfm.domains.medical3d.views import VolumeViews, crop_start, take_crop


def partition_bins(length: int, crop: int, num_partitions: int) -> list[tuple[int, int]]:
    """The crop starts ``[lo, hi)`` of each partition along an axis of ``length`` voxels.

    Raises:
        ValueError: if there are fewer start positions than partitions.
    """
    n = length - crop + 1
    if n < num_partitions:
        raise ValueError(
            f"an axis of {length} voxels has {max(n, 0)} positions for a crop of {crop}, "
            f"fewer than num_partitions={num_partitions}"
        )
    return [(s * n // num_partitions, (s + 1) * n // num_partitions) for s in range(num_partitions)]


class PartitionViews(VolumeViews):
    """One crop from a random partition along ``axis``, two intensity-augmented views of it
    and its partition index (see the module docstring).

    Args:
        crop_size: crop size in voxels (int or 3 values).
        num_partitions: partitions ``S`` per volume along ``axis`` (paper: 3 to 6).
        axis: the spatial axis (0-based, of ``(D, H, W)``) the volume is partitioned along.
        foreground_prob: probability of centring the crop on a foreground voxel of the
            partition's slab.
        **jitter: ``intensity_scale`` (largest relative intensity scale ``a`` of a view, in
            ``[0, 1)``), ``intensity_shift`` (largest intensity shift ``b``, >= 0),
            ``noise_std`` (standard deviation of the Gaussian noise added, >= 0): see
            :class:`~domainfm.domains.medical3d.intensity_jitter.IntensityNoiseArgs`.

    Attributes:
        jitter: those settings (:class:`IntensityJitter`), applied to each view.
    """

    def __init__(
        self,
        *,
        crop_size: int | Sequence[int] = 64,
        num_partitions: int = 4,
        axis: int = 2,
        foreground_prob: float = 0.0,
        **jitter: Unpack[IntensityNoiseArgs],
    ) -> None:
        super().__init__(crop_size=crop_size, foreground_prob=foreground_prob)
        require_at_least(1, num_partitions=num_partitions)
        self.jitter = IntensityJitter.from_keywords(jitter, IntensityNoiseArgs)
        scale = self.jitter.intensity_scale
        require_at_least(
            0,
            intensity_scale=scale,
            intensity_shift=self.jitter.intensity_shift,
            noise_std=self.jitter.noise_std,
        )
        if axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2, got axis={axis}")
        if scale >= 1:
            raise ValueError(
                f"intensity_scale must be < 1 (a view's scale stays positive), got "
                f"intensity_scale={scale}"
            )
        self.num_partitions = int(num_partitions)
        self.axis = int(axis)

    @property
    def min_size(self) -> tuple[int, ...]:
        """The crop size, ``num_partitions - 1`` longer along ``axis`` (one start per bin)."""
        size = list(self.crop_size)
        size[self.axis] += self.num_partitions - 1
        return tuple(size)

    def _start(
        self,
        shape: Sequence[int],
        partition: int,
        *,
        generator: torch.Generator | None,
        foreground: Tensor | None,
    ) -> list[int]:
        """The crop's start corner: along ``axis`` uniform in the partition's bin; along the
        other axes uniform or centred on a foreground voxel of the partition's slab."""
        crop = self.crop_size[self.axis]
        lo, hi = partition_bins(shape[self.axis], crop, self.num_partitions)[partition]
        slab = foreground
        if foreground is not None and len(foreground) > 0:
            coord = foreground[:, self.axis]
            inside = (coord >= lo + crop // 2) & (coord < hi + crop // 2)
            slab = foreground[inside]
        start = crop_start(
            shape,
            self.crop_size,
            generator=generator,
            foreground=slab,
            foreground_prob=self.foreground_prob,
        )
        start[self.axis] = int(torch.randint(lo, hi, (), generator=generator))
        return start

    def __call__(
        self, volume: Tensor, *, generator: torch.Generator | None, foreground: Tensor | None
    ) -> dict[str, Tensor]:
        partition = int(torch.randint(0, self.num_partitions, (), generator=generator))
        start = self._start(volume.shape[1:], partition, generator=generator, foreground=foreground)
        crop = take_crop(volume, start, self.crop_size)  # (C, *crop_size)
        return {
            "input": crop,
            "view1": self.jitter(crop, generator),
            "view2": self.jitter(crop, generator),
            PARTITION_KEY: torch.tensor(partition, dtype=torch.int64),
            "origin": torch.tensor(start, dtype=torch.int64),
        }
