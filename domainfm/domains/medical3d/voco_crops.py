"""VoCo's crops of a volume: base crops tiling a region, random crops inside it, overlaps.

Wu, Zhuang & Chen 2024, "VoCo: A Simple-yet-Effective Volume Contrastive Learning Framework
for 3D Medical Image Analysis", CVPR 2024, arXiv:2402.17300, Sec. 3.2 (the crops of the
position-prediction task of :class:`~domainfm.core.objectives.voco.VoCo`).

A *region* of ``grid × crop_size`` voxels is placed in the volume (uniformly, or centred on
a foreground voxel with probability ``foreground_prob``, then clamped inside). It is tiled
exactly by ``K = prod(grid)`` non-overlapping *base crops* of ``crop_size``, and ``R =
num_crops`` *random crops* of ``crop_size`` are placed uniformly inside it (integer voxel
positions). The label of random crop ``r`` and base crop ``k`` is the fraction of ``r``'s
voxels lying in ``k`` — the product over axes of the 1D overlap lengths divided by the crop
volume — so each row sums to 1.

Axes: volumes are ``(C, D, H, W)`` in RAS, i.e. spatial axes (x: R, y: A, z: S). The paper
tiles the axial (x–y) plane with 4 × 4 base crops (one crop deep along z); the default
``grid=(2, 2, 1)`` is the same layout at 2 × 2, small enough for CPU runs. The official code
cuts 96³ crops from a volume resized to 384 × 384 × 96 and resizes each crop to 64³, and flips
or rotates crops at random; here crops are cut at the dataset's spacing without resizing or
augmentation.

Returned sample (``n`` = 3 spatial values, all positions voxel indices into ``volume``)::

    "input"             (C, *crop_size)      the first random crop (for monitors, predict)
    "voco_base"         (K, C, *crop_size)   base crops, grid index in C order (last fastest)
    "voco_crops"        (R, C, *crop_size)   random crops
    "voco_overlap"      (R, K) float32       overlap fractions, rows sum to 1
    "voco_base_origin"  (K, 3) int64         start corners of the base crops
    "voco_crop_origin"  (R, 3) int64         start corners of the random crops

Example::

    >>> views = VoCoCrops(crop_size=32, grid=(2, 2, 1), num_crops=4)
    >>> views.min_size
    (64, 64, 32)
    >>> sample = views(volume, generator=torch.Generator().manual_seed(0), foreground=None)
    >>> sample["voco_base"].shape, sample["voco_overlap"].shape
    (torch.Size([4, 1, 32, 32, 32]), torch.Size([4, 4]))
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor

from domainfm.core.grid import to_ntuple
from domainfm.domains.medical3d.views import VolumeViews, crop_start, take_crop


def crop_overlap(crop_origins: Tensor, base_origins: Tensor, crop: Sequence[int]) -> Tensor:
    """Fraction ``(R, K)`` of each crop's volume inside each base crop, for crops of equal
    size ``crop`` at integer start corners ``(R, n)`` and ``(K, n)``."""
    size = torch.tensor(tuple(crop), dtype=torch.int64)
    a, b = crop_origins[:, None, :], base_origins[None, :, :]  # (R, 1, n), (1, K, n)
    lengths = (torch.minimum(a, b) + size - torch.maximum(a, b)).clamp(min=0)  # (R, K, n)
    return lengths.prod(dim=-1).to(torch.float32) / float(size.prod())


class VoCoCrops(VolumeViews):
    """Base crops tiling a region of the volume, random crops inside it and their overlaps.

    Args:
        crop_size: size of every crop in voxels (int or 3 values).
        grid: base crops along each spatial axis (3 values; paper: 4 × 4 × 1).
        num_crops: random crops per sample (official code: 2).
        foreground_prob: probability of centring the region on a foreground voxel.
    """

    def __init__(
        self,
        *,
        crop_size: int | Sequence[int] = 64,
        grid: Sequence[int] = (2, 2, 1),
        num_crops: int = 4,
        foreground_prob: float = 0.0,
    ) -> None:
        super().__init__(crop_size=crop_size, foreground_prob=foreground_prob)
        self.grid = to_ntuple(grid, 3, name="grid")
        if num_crops < 1:
            raise ValueError(f"num_crops must be >= 1, got num_crops={num_crops}")
        self.num_crops = num_crops

    @property
    def num_base(self) -> int:
        """Number of base crops ``K``."""
        return self.grid[0] * self.grid[1] * self.grid[2]

    @property
    def min_size(self) -> tuple[int, ...]:
        """The region size ``grid × crop_size`` (volumes are padded to at least this)."""
        return tuple(g * c for g, c in zip(self.grid, self.crop_size, strict=True))

    def __call__(
        self, volume: Tensor, *, generator: torch.Generator | None, foreground: Tensor | None
    ) -> dict[str, Tensor]:
        region = self.min_size
        start = torch.tensor(
            crop_start(
                volume.shape[1:],
                region,
                generator=generator,
                foreground=foreground,
                foreground_prob=self.foreground_prob,
            )
        )  # (3,)
        size = torch.tensor(self.crop_size)
        cells = torch.tensor(list(itertools.product(*(range(g) for g in self.grid))))  # (K, 3)
        base_origin = start + cells * size  # (K, 3)
        room = [r - c + 1 for r, c in zip(region, self.crop_size, strict=True)]
        offsets = torch.stack(
            [torch.randint(0, hi, (self.num_crops,), generator=generator) for hi in room], dim=1
        )  # (R, 3), uniform inside the region
        crop_origin = start + offsets
        crops = torch.stack([take_crop(volume, o.tolist(), self.crop_size) for o in crop_origin])
        base = torch.stack([take_crop(volume, o.tolist(), self.crop_size) for o in base_origin])
        return {
            "input": crops[0].clone(),
            "voco_base": base,
            "voco_crops": crops,
            "voco_overlap": crop_overlap(crop_origin, base_origin, self.crop_size),
            "voco_base_origin": base_origin,
            "voco_crop_origin": crop_origin,
        }
