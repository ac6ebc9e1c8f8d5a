"""Labeled CT/MRI volumes for segmentation fine-tuning: random crops for training, whole
volumes for validation.

An image (one file, or several co-registered files stacked as channels, e.g. BRATS FLAIR +
T1c) and its label map are preprocessed once, exactly as pretraining preprocesses volumes
(RAS, target spacing, CT HU window / MRI percentile scaling, per channel), the label with
nearest-neighbour resampling onto the same grid; label values are remapped to class ids with
``label_map`` (values not in it become background 0).

Training crops are foreground-aware: with probability ``positive_fraction`` a crop is
centred on a labeled (non-zero class) voxel — as MONAI's ``RandCropByPosNegLabel`` does —
otherwise uniform; every choice follows the sample's seed.

Shapes::

    ds[i] (train)   {"input": (C, *crop_size), "label": (1, *crop_size) int64}
    ds[i] (whole)   {"input": (C, D, H, W), "label": (1, D, H, W) int64}

Example::

    >>> ds = LabeledVolumeDataset(
    ...     images=[["flair.nii.gz", "t1c.nii.gz"]], labels=["seg.nii.gz"], modality="mri",
    ...     spacing=2.0, crop_size=64, label_map={1: 1, 2: 1, 3: 1, 4: 1})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal, Unpack

import numpy as np
import torch
from torch import Tensor

from domainfm.core.grid import to_ntuple
from domainfm.domains.medical3d.io import check_label_pair, load_volume
from domainfm.domains.medical3d.preprocess import (
    RAS_LABELS,
    check_crop,
    check_resample,
    failure_naming,
)
from domainfm.domains.medical3d.views import take_crop
from domainfm.domains.medical3d.volume_cases import (
    CaseVolumeArgs,
    CaseVolumes,
    ImageSpec,
    preprocess_channels,
    require_files,
)
from domainfm.domains.medical3d.volume_types import Geometry


def remap_labels(label: Tensor, label_map: Mapping[int, int] | None) -> Tensor:
    """Integer label map → class ids (``label_map[value]``; unlisted values → 0)."""
    values = torch.round(label).long()
    if label_map is None:
        return values
    if not values.numel():
        return values
    lookup = torch.zeros(int(values.max()) + 1, dtype=torch.long)
    for raw, cls in label_map.items():
        if 0 <= int(raw) < len(lookup):
            lookup[int(raw)] = int(cls)
    return lookup[values.clamp(min=0)]


class LabeledVolumeDataset(CaseVolumes):
    """Image/label volume pairs, preprocessed once; random crops or whole volumes.

    Args:
        images: per case, one file or a list of co-registered files (channels).
        labels: per case, the label-map file (same grid and affine as the image).
        crop_size: training crop size in voxels; ``None`` gives whole volumes (validation).
        label_map: raw label value → class id (others → 0); ``None`` keeps raw values.
        **settings: ``spacing`` (target voxel spacing in mm), ``modality`` (``"ct"`` or
            ``"mri"``: intensity normalization per channel), ``hu_window`` (HU range mapped
            to [0, 1] for CT), ``geometry`` (which transform places the voxels of a NIfTI
            file whose qform and sform disagree: ``"strict"``, the default, refuses such a
            file, ``"sform"`` / ``"qform"`` assume that one; see
            :func:`~domainfm.domains.medical3d.io.load_volume`), ``samples_per_volume``
            (crops per case per epoch, training) and ``positive_fraction`` (probability that
            a crop is centred on a labeled voxel): see
            :class:`~domainfm.domains.medical3d.volume_cases.CaseVolumeArgs`.
    """

    targets_name = "labels"
    target_kind = "label map"

    def __init__(
        self,
        *,
        images: Sequence[ImageSpec],
        labels: Sequence[str | Path],
        crop_size: int | Sequence[int] | None = 64,
        label_map: Mapping[int, int] | None = None,
        **settings: Unpack[CaseVolumeArgs],
    ) -> None:
        super().__init__(images, labels, whole=crop_size is None, **settings)
        self.crop_size = None if crop_size is None else to_ntuple(crop_size, 3, name="crop_size")
        if self.crop_size is not None:  # absurd whatever the volume: before any file is read
            check_crop(self.crop_size)
        self.cases = [(img, Path(lab)) for img, lab in zip(self.channel_files, labels, strict=True)]
        require_files(p for img, lab in self.cases for p in (*img, lab))
        self.labels: list[Tensor] = []
        for channel_files, label_file in self.cases:
            image, label = _preprocess_pair(
                channel_files, label_file, min_size=self.crop_size, **self.preprocessing.as_kwargs()
            )
            self.volumes.append(image)
            self.labels.append(remap_labels(label, label_map))
        self.foreground = [(lab[0] > 0).nonzero() for lab in self.labels]  # (M, 3) each

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Tensor]:
        """A crop (or the whole case) ``{"input", "label"}``; ``key`` is an index or
        ``(index, seed)`` from :class:`~domainfm.data.sampling.SeededSampler`."""
        case, generator = self.locate(key)
        image, label = self.volumes[case], self.labels[case]
        if self.crop_size is None:
            return {"input": image, "label": label}
        start = self.crop_start(
            case, self.crop_size, generator=generator, foreground=self.foreground[case]
        )
        return {
            "input": take_crop(image, start, self.crop_size),
            "label": take_crop(label, start, self.crop_size),
        }


def _preprocess_pair(
    channel_files: Sequence[Path],
    label_file: Path,
    *,
    spacing: Sequence[float],
    modality: Literal["ct", "mri"],
    hu_window: tuple[float, float],
    min_size: Sequence[int] | None,
    geometry: Geometry = "strict",
) -> tuple[Tensor, Tensor]:
    """``(C, D, H, W)`` float image and ``(1, D, H, W)`` label on the same RAS grid.

    Every file is read and validated by :func:`load_volume` (with ``geometry``); the label
    must lie on the first channel's grid (:func:`check_label_pair`) and the channels must
    share it (:func:`~domainfm.domains.medical3d.volume_cases.preprocess_channels`), else
    ``ValueError`` naming the files. The resampling is size-guarded and MONAI's errors name
    the file (:func:`~domainfm.domains.medical3d.preprocess.apply_volume_transform`).
    """
    from monai import transforms as mt

    channels = [load_volume(p, geometry=geometry) for p in channel_files]
    first = channels[0]
    label = load_volume(label_file, allow_constant=True, geometry=geometry)
    check_label_pair(first, label)
    image, _ = preprocess_channels(
        channels, spacing=spacing, modality=modality, hu_window=hu_window, min_size=min_size
    )
    steps = [
        mt.Orientation(axcodes="RAS", labels=RAS_LABELS),
        mt.Spacing(pixdim=tuple(spacing), mode="nearest", dtype=np.float32),
    ]
    if min_size is not None:
        steps.append(mt.SpatialPad(spatial_size=tuple(min_size)))
    check_resample(label_file, label.shape, label.affine, spacing, channels=1, min_size=min_size)
    try:
        target = mt.Compose(steps)(label.to_metatensor())  # (1, D, H, W) on the image's grid
    except Exception as err:  # MONAI's RuntimeError("applying transform <repr>"), ...
        raise failure_naming(label_file, "preprocessing (RAS, resampling)", err) from err
    if tuple(target.shape[1:]) != tuple(image.shape[1:]):
        raise ValueError(
            f"label map {label_file} has shape {tuple(target.shape)} after preprocessing, image "
            f"{first.path} has {tuple(image.shape)}: they are not on the same grid"
        )
    return image, target.as_tensor().to(torch.float32).contiguous()  # plain tensors
