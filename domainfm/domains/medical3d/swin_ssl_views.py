"""The views of Swin UNETR's self-supervised pretraining: rotated, cutout-corrupted crops.

Tang et al. 2022, "Self-Supervised Pre-Training of Swin Transformers for 3D Medical Image
Analysis", arXiv:2111.14791. Each sample is one random crop ``x``; as in the official code
(Project-MONAI/research-contributions, ``SwinUNETR/Pretrain/main.py`` and
``utils/ops.py``) two views are made from it:

* ``x1, rot1 = rot_rand(x)`` and ``x2, rot2 = rot_rand(x)``: independent rotations by
  ``k * 90°``, ``k ∈ {0, 1, 2, 3}`` (4 classes), in one plane — ``rot90(k, (2, 3))`` on a
  ``(C, H, W, Z)`` sample, i.e. the last two spatial axes; here ``rotation_axes=(1, 2)``
  (0-based spatial axes of a ``(C, D, H, W)`` RAS crop, the same axes as the official
  RAS-oriented MONAI tensors), so torch dims ``(2, 3)`` of the sample.
* ``aug_rand``: ``patch_rand_drop`` cuts random boxes out of each rotated view: a budget of
  ``U(0, max_drop) * voxels`` (``max_drop=0.3``), boxes with start ``U{0, s - t - 1}`` and
  side ``U{t, m - 1}`` per axis of size ``s`` (``t = int(0.05 s)``, ``m = int(0.25 s)``),
  drawn until the summed box volumes reach the budget; each box is filled with Gaussian noise
  min-max scaled to [0, 1]. Then a second ``patch_rand_drop`` pass copies the same boxes
  from another sample of the batch (with probability ``(n - 1) / n`` for ``n`` crops per
  batch: the official ``randint(0, n) != i``).

The reconstruction targets are the rotated *clean* views (``target1 = x1``, ``target2 =
x2``); the encoder sees the corrupted ones (``view1``, ``view2``).

Deliberate deviations:

* A view maker sees one sample, not the batch, so the second cutout pass copies its boxes
  from another random crop of the *same volume* (with probability ``donor_prob``, 0.75 =
  the official 3/4 for its 4 crops per batch) instead of from another batch sample.
* Box sides are at least 1 voxel (``t = max(int(0.05 s), 1)`` and ``m > t``), so crops
  under 20 voxels cannot draw empty boxes; a one-voxel noise box (min = max) is 0.
* The official ``ops.py`` has no local-pixel-shuffle (that transform is Models Genesis',
  Zhou et al. 2019, arXiv:1908.06912); none is applied here either.

All randomness comes from ``generator`` (same seed → identical sample).

Returns ``"input"`` ``(C, *crop_size)`` (the unrotated crop), ``"view1"``, ``"view2"``,
``"target1"``, ``"target2"`` (each ``(C, *crop_size)``) and ``"rot1"``, ``"rot2"`` (int64
scalars in ``[0, 4)``).

Example::

    >>> views = SwinSSLViews(crop_size=64)
    >>> sample = views(volume, generator=torch.Generator().manual_seed(0), foreground=None)
    >>> k = int(sample["rot1"])
    >>> torch.equal(torch.rot90(sample["input"], k, views.rotation_dims), sample["target1"])
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from domainfm.domains.medical3d.views import VolumeViews, take_crop

NUM_ROTATIONS = 4


class SwinSSLViews(VolumeViews):
    """Two independently rotated, cutout-corrupted views of one crop + clean targets.

    Args:
        crop_size: crop size in voxels (the two rotated axes must be equal); 96 in Swin UNETR.
        foreground_prob: probability of centring the crop on a foreground voxel.
        rotation_axes: the two spatial axes (0-based, of ``(D, H, W)``) spanning the
            rotation plane.
        max_drop: largest fraction of the crop's voxels a cutout pass covers (summed boxes).
        max_block_size: largest box side, as a fraction of the crop side.
        min_block_size: smallest box side (and end margin of box starts), fraction of the side.
        donor_prob: probability of the second cutout pass, which copies its boxes from another
            random crop of the same volume.
    """

    def __init__(
        self,
        *,
        crop_size: int | Sequence[int] = 96,
        foreground_prob: float = 0.0,
        rotation_axes: Sequence[int] = (1, 2),
        max_drop: float = 0.3,
        max_block_size: float = 0.25,
        min_block_size: float = 0.05,
        donor_prob: float = 0.75,
    ) -> None:
        super().__init__(crop_size=crop_size, foreground_prob=foreground_prob)
        axes = tuple(int(a) for a in rotation_axes)
        if len(axes) != 2 or len(set(axes)) != 2 or not all(0 <= a < 3 for a in axes):
            raise ValueError(
                f"rotation_axes must be two different axes in 0..2, got rotation_axes={axes}"
            )
        a, b = axes
        if self.crop_size[a] != self.crop_size[b]:
            raise ValueError(
                f"crop_size {self.crop_size} must be equal along rotation_axes {axes} "
                "(90° rotations swap them)"
            )
        if not 0.0 <= max_drop <= 1.0:
            raise ValueError(f"max_drop must be in [0, 1], got max_drop={max_drop}")
        if not 0.0 < max_block_size <= 1.0:
            raise ValueError(
                f"max_block_size must be in (0, 1], got max_block_size={max_block_size}"
            )
        if not 0.0 <= min_block_size <= max_block_size:
            raise ValueError(
                f"min_block_size must be in [0, max_block_size={max_block_size}], got "
                f"min_block_size={min_block_size}"
            )
        if not 0.0 <= donor_prob <= 1.0:
            raise ValueError(f"donor_prob must be in [0, 1], got donor_prob={donor_prob}")
        self.rotation_axes = axes
        self.max_drop = max_drop
        self.max_block_size = max_block_size
        self.min_block_size = min_block_size
        self.donor_prob = donor_prob

    @property
    def rotation_dims(self) -> tuple[int, int]:
        """The rotation plane as dims of a ``(C, D, H, W)`` sample (for ``torch.rot90``)."""
        a, b = self.rotation_axes
        return a + 1, b + 1

    def rotate(self, x: Tensor, *, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """``x`` ``(C, D, H, W)`` rotated by ``k * 90°`` in the rotation plane, and ``k``
        (int64 scalar, uniform in ``[0, 4)``) — the official ``rot_rand`` for one sample."""
        k = torch.randint(0, NUM_ROTATIONS, (), generator=generator)
        return torch.rot90(x, int(k), self.rotation_dims).contiguous(), k.to(torch.int64)

    def _box(self, spatial: Sequence[int], generator: torch.Generator | None) -> list[slice]:
        """One cutout box: per axis a start and a side as in ``patch_rand_drop``."""
        margins = [int(self.min_block_size * s) for s in spatial]
        starts = [
            int(torch.randint(0, max(s - t, 1), (), generator=generator))
            for s, t in zip(spatial, margins, strict=True)
        ]
        box = []
        for start, size, margin in zip(starts, spatial, margins, strict=True):
            low = max(margin, 1)
            high = max(int(self.max_block_size * size), low + 1)
            side = int(torch.randint(low, high, (), generator=generator))
            box.append(slice(start, min(start + side, size)))
        return box

    def cutout(
        self, x: Tensor, *, generator: torch.Generator | None, fill: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """One ``patch_rand_drop`` pass over ``x`` ``(C, *spatial)``.

        Boxes are drawn until their summed volumes reach ``U(0, max_drop) * voxels``; each is
        filled with Gaussian noise min-max scaled to [0, 1], or, with ``fill`` (same shape as
        ``x``), with ``fill``'s voxels in the same box.

        Returns:
            the corrupted copy of ``x`` and the boolean box mask ``(*spatial)``.
        """
        if fill is not None and fill.shape != x.shape:
            raise ValueError(f"fill has shape {tuple(fill.shape)}, x {tuple(x.shape)}")
        out = x.clone()
        spatial = tuple(x.shape[1:])
        mask = torch.zeros(spatial, dtype=torch.bool, device=x.device)
        budget = float(torch.rand((), generator=generator)) * self.max_drop * math.prod(spatial)
        covered = 0
        while covered < budget:
            box = (slice(None), *self._box(spatial, generator))
            if fill is None:
                shape = out[box].shape
                noise = torch.randn(shape, generator=generator, dtype=torch.float32)
                span = (noise.max() - noise.min()).clamp_min(torch.finfo(noise.dtype).tiny)
                out[box] = ((noise - noise.min()) / span).to(out.dtype)
            else:
                out[box] = fill[box]
            mask[box[1:]] = True
            covered += math.prod(s.stop - s.start for s in box[1:])
        return out, mask

    def corrupt(
        self,
        x: Tensor,
        volume: Tensor,
        *,
        generator: torch.Generator | None,
        foreground: Tensor | None,
    ) -> Tensor:
        """The official ``aug_rand`` for one view: a noise cutout pass, then with probability
        ``donor_prob`` a pass copying boxes from another random crop of ``volume``."""
        out, _ = self.cutout(x, generator=generator)
        if float(torch.rand((), generator=generator)) < self.donor_prob:
            start = self.start(volume.shape[1:], generator=generator, foreground=foreground)
            donor = take_crop(volume, start, self.crop_size)
            out, _ = self.cutout(out, generator=generator, fill=donor)
        return out

    def __call__(
        self, volume: Tensor, *, generator: torch.Generator | None, foreground: Tensor | None
    ) -> dict[str, Tensor]:
        start = self.start(volume.shape[1:], generator=generator, foreground=foreground)
        x = take_crop(volume, start, self.crop_size)  # (C, *crop_size)
        x1, rot1 = self.rotate(x, generator=generator)
        x2, rot2 = self.rotate(x, generator=generator)
        view1 = self.corrupt(x1, volume, generator=generator, foreground=foreground)
        view2 = self.corrupt(x2, volume, generator=generator, foreground=foreground)
        return {
            "input": x,
            "view1": view1,
            "view2": view2,
            "target1": x1,
            "target2": x2,
            "rot1": rot1,
            "rot2": rot2,
        }
