"""CT/MRI volumes with object boxes for 3D detection fine-tuning: box-aware crops for training,
whole volumes for validation.

Each case is an image (one file, or co-registered files stacked as channels) and its objects
as **world boxes** (RAS mm, from a label map's connected regions or a MONAI detection JSON,
:mod:`~domainfm.domains.medical3d.boxes3d`). The image is preprocessed once exactly as every
other volume task preprocesses it (RAS, target spacing, intensity; padded to the crop size);
the boxes are put on that preprocessed grid with **its own affine** (the one MONAI's
transforms carried through reorientation, resampling and padding), clipped to the volume.

Training crops are box-aware: with probability ``positive_fraction`` a crop is centred on a
random voxel inside a random box (then clamped into the volume), otherwise uniform — as
MONAI's ``RandCropBoxByPosNegLabeld`` — and every box is shifted into the crop and clipped
to it; boxes left without volume are dropped (MONAI's ``ClipBoxToImaged(remove_empty)``).
Every choice follows the sample's seed.

Shapes (voxel-edge ``xyzxyz`` boxes over the array's axes, 0-based object classes)::

    ds[i] (train)   {"input": (C, *crop_size), "boxes": (n, 6) float32, "labels": (n,) int64}
    ds[i] (whole)   {"input": (C, D, H, W), "boxes": (N, 6), "labels": (N,)}

Whole volumes are padded to the crop size like the training volumes (MONAI's symmetric
``SpatialPad``), so a volume no larger than the window sits in it exactly as in training —
which matters to a backbone with absolute position embeddings; ``domainfm detect`` pads the
same way.

:func:`collate_boxes` stacks the inputs and keeps each sample's boxes and labels in lists.

Example::

    >>> targets = [label_map_boxes("seg.nii.gz", objects={1: 0, 2: 0, 3: 0, 4: 0})]
    >>> ds = BoxedVolumeDataset(images=["flair.nii.gz"], targets=targets, modality="mri",
    ...                         spacing=4.0, crop_size=32)
    >>> sorted(ds[0])
    ['boxes', 'input', 'labels']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Unpack

import numpy as np
import torch
from torch import Tensor

from domainfm.core.grid import to_ntuple
from domainfm.domains.medical3d.boxes3d import world_to_voxel
from domainfm.domains.medical3d.io import load_volume
from domainfm.domains.medical3d.preprocess import check_crop
from domainfm.domains.medical3d.views import take_crop
from domainfm.domains.medical3d.volume_cases import (
    CaseVolumeArgs,
    CaseVolumes,
    ImageSpec,
    preprocess_channels,
    require_files,
)

WorldTargets = tuple[np.ndarray, np.ndarray]
"""One case's objects: world boxes ``(N, 6)`` (RAS mm ``xyzxyz``) and classes ``(N,)``."""


def grid_boxes(
    targets: WorldTargets, affine: np.ndarray, shape: Sequence[int]
) -> tuple[Tensor, Tensor]:
    """World boxes → voxel-edge boxes on the grid of ``affine`` and ``shape``, clipped to it;
    boxes left without volume are dropped."""
    world, classes = targets
    boxes = torch.from_numpy(world_to_voxel(world, affine)).float()
    return clip_boxes(boxes, torch.as_tensor(classes, dtype=torch.long), (0, 0, 0), shape)


def clip_boxes(
    boxes: Tensor, labels: Tensor, start: Sequence[int], size: Sequence[int]
) -> tuple[Tensor, Tensor]:
    """Boxes ``(N, 6)`` shifted to a window at ``start`` of ``size`` voxels and clipped to it;
    boxes without volume inside are dropped."""
    origin = torch.tensor([*start, *start], dtype=boxes.dtype)
    limit = torch.tensor([*size, *size], dtype=boxes.dtype)
    shifted = torch.minimum((boxes - origin).clamp(min=0), limit)
    keep = (shifted[:, 3:] > shifted[:, :3]).all(dim=1)
    return shifted[keep], labels[keep]


def collate_boxes(samples: Sequence[Mapping[str, Tensor]]) -> dict[str, Any]:
    """Stack ``input``; keep each sample's ``boxes`` ``(n_i, 6)`` and ``labels`` ``(n_i,)``
    in lists (their counts differ)."""
    return {
        "input": torch.stack([s["input"] for s in samples]),
        "boxes": [s["boxes"].reshape(-1, 6).float() for s in samples],
        "labels": [s["labels"].reshape(-1).long() for s in samples],
    }


class BoxedVolumeDataset(CaseVolumes):
    """Images with world boxes, preprocessed once; box-aware crops or whole volumes.

    Args:
        images: per case, one file or a list of co-registered files (channels).
        targets: per case, its world boxes ``(N, 6)`` (RAS mm) and classes ``(N,)``.
        crop_size: training crop in voxels (volumes are padded to at least this size).
        whole: give whole volumes (validation) instead of crops.
        **settings: ``spacing``, ``modality``, ``hu_window``, ``geometry`` (the
            preprocessing), ``samples_per_volume`` (training crops per case per epoch) and
            ``positive_fraction`` (probability that a crop is centred inside a box): see
            :class:`~domainfm.domains.medical3d.volume_cases.CaseVolumeArgs`.

    Attributes:
        volumes, affines, boxes, labels: per case, the preprocessed image, its grid's affine
            and the boxes (voxel-edge, on that grid) with their classes.
    """

    targets_name = "targets"
    target_kind = "box list"

    def __init__(
        self,
        *,
        images: Sequence[ImageSpec],
        targets: Sequence[WorldTargets],
        crop_size: int | Sequence[int] = 64,
        whole: bool = False,
        **settings: Unpack[CaseVolumeArgs],
    ) -> None:
        super().__init__(images, targets, whole=whole, **settings)
        self.crop_size = to_ntuple(crop_size, 3, name="crop_size")
        self.whole = whole
        check_crop(self.crop_size)
        require_files(p for files in self.channel_files for p in files)
        self.affines: list[np.ndarray] = []
        self.boxes: list[Tensor] = []
        self.labels: list[Tensor] = []
        kwargs = self.preprocessing.as_kwargs()
        geometry = kwargs.pop("geometry")
        for files, target in zip(self.channel_files, targets, strict=True):
            channels = [load_volume(p, geometry=geometry) for p in files]
            image, affine = preprocess_channels(channels, min_size=self.crop_size, **kwargs)
            boxes, labels = grid_boxes(target, affine, image.shape[1:])
            self.volumes.append(image)
            self.affines.append(affine)
            self.boxes.append(boxes)
            self.labels.append(labels)

    def _inside_box(self, case: int, generator: torch.Generator | None) -> Tensor | None:
        """One random voxel ``(1, 3)`` inside a random box of ``case`` (``None``: no box)."""
        boxes = self.boxes[case]
        if not len(boxes):
            return None
        box = boxes[int(torch.randint(0, len(boxes), (), generator=generator))]
        low, high = box[:3].floor().long(), (box[3:].ceil().long() - 1).clamp(min=box[:3].long())
        return torch.stack(
            [
                torch.randint(int(lo), int(hi) + 1, (), generator=generator)
                for lo, hi in zip(low, high, strict=True)
            ]
        )[None]

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Tensor]:
        """A crop (or the whole case) with its boxes; ``key`` is an index or ``(index, seed)``
        from :class:`~domainfm.data.sampling.SeededSampler`."""
        case, generator = self.locate(key)
        image, boxes, labels = self.volumes[case], self.boxes[case], self.labels[case]
        if self.whole:
            return {"input": image, "boxes": boxes, "labels": labels}
        start = self.crop_start(
            case, self.crop_size, generator=generator, foreground=self._inside_box(case, generator)
        )
        boxes, labels = clip_boxes(boxes, labels, start, self.crop_size)
        return {"input": take_crop(image, start, self.crop_size), "boxes": boxes, "labels": labels}
