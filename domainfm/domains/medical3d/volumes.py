"""Random 3D crops from CT/MRI volumes, for self-supervised pretraining.

Volumes are read with MONAI (a NIfTI file via nibabel, or a DICOM series folder via pydicom:
slices sorted by position, spacing from the headers), made channel-first, reoriented to RAS,
resampled to a target spacing and intensity-normalized once (CT: a HU window scaled to
[0, 1]; MRI: 0.5–99.5 percentile scaling), then kept in memory; each item is cut by a view
maker (:mod:`domainfm.domains.medical3d.views`): a random crop, a pair of overlapping crops,
VoCo's base/random crops, the Swin UNETR SSL views.

Example::

    >>> ds = VolumeCropDataset(files=["ct.nii.gz"], crop_size=64, modality="ct")
    >>> ds[0]["input"].shape     # (C, D, H, W)
    torch.Size([1, 64, 64, 64])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor
from torch.utils.data import Dataset

from domainfm.domains.medical3d.preprocess import volume_transform
from domainfm.domains.medical3d.views import OverlappingCropPair, RandomCrop, VolumeViews


def _preprocess(
    path: Path,
    *,
    spacing: Sequence[float],
    modality: Literal["ct", "mri"],
    hu_window: tuple[float, float],
    min_size: Sequence[int],
) -> Tensor:
    transform = volume_transform(
        spacing=spacing, modality=modality, hu_window=hu_window, min_size=min_size
    )
    try:
        volume = transform(str(path))
    except Exception as err:  # MONAI wraps reader errors; surface the file and the cause
        raise ValueError(f"could not load volume {path}: {err}") from err
    return torch.as_tensor(volume, dtype=torch.float32).contiguous()  # (C, D, H, W)


class VolumeCropDataset(Dataset[dict[str, Tensor]]):
    """Samples cut from a list of volumes by a view maker, ``samples_per_volume`` per volume.

    Args:
        files: NIfTI files or DICOM series folders (one channel each).
        views: the view maker (:class:`~domainfm.domains.medical3d.views.VolumeViews`), or
            1 for a :class:`RandomCrop`, 2 for an :class:`OverlappingCropPair` of
            ``crop_size`` (with ``max_shift``).
        crop_size: crop size in voxels when ``views`` is 1 or 2.
        spacing: target voxel spacing in mm.
        modality: ``"ct"`` (HU window) or ``"mri"`` (percentile scaling).
        hu_window: HU range mapped to [0, 1] for CT.
        samples_per_volume: dataset items per volume (one epoch).
        max_shift: largest offset of the second view (``views=2``), fraction of the crop.
        foreground_threshold: normalized intensity above which a voxel counts as foreground
            (for foreground-aware crops, see the view maker's ``foreground_prob``).
    """

    def __init__(
        self,
        *,
        files: Sequence[str | Path],
        views: int | VolumeViews = 1,
        crop_size: int | Sequence[int] = 64,
        spacing: float | Sequence[float] = 3.0,
        modality: Literal["ct", "mri"] = "ct",
        hu_window: tuple[float, float] = (-1000.0, 1000.0),
        samples_per_volume: int = 8,
        max_shift: float = 0.5,
        foreground_threshold: float = 0.05,
    ) -> None:
        if not files:
            raise ValueError("files is empty: pass at least one volume")
        if modality not in ("ct", "mri"):
            raise ValueError(f"modality must be 'ct' or 'mri', got {modality!r}")
        self.views = make_views(views, crop_size=crop_size, max_shift=max_shift)
        pixdim = (float(spacing),) * 3 if isinstance(spacing, int | float) else tuple(spacing)
        self.files = [Path(f) for f in files]
        missing = [str(f) for f in self.files if not f.exists()]
        if missing:
            raise FileNotFoundError(f"volume files not found: {', '.join(missing)}")
        self.volumes = [
            _preprocess(
                f,
                spacing=pixdim,
                modality=modality,
                hu_window=hu_window,
                min_size=self.views.min_size,
            )
            for f in self.files
        ]
        self.foreground = [foreground_coords(v, foreground_threshold) for v in self.volumes]
        self.samples_per_volume = samples_per_volume

    def __len__(self) -> int:
        return len(self.volumes) * self.samples_per_volume

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Tensor]:
        """The sample of the view maker (always with ``"input"``); ``key`` is an index or
        ``(index, seed)`` from :class:`~domainfm.core.sampling.SeededSampler` (then every
        random choice follows from the seed and ``"seed"`` is returned too)."""
        index, seed = key if isinstance(key, tuple) else (key, None)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        volume = index // self.samples_per_volume
        sample = self.views(
            self.volumes[volume], generator=generator, foreground=self.foreground[volume]
        )
        if seed is not None:
            sample["seed"] = torch.tensor(seed)
        return sample


def make_views(
    views: int | VolumeViews, *, crop_size: int | Sequence[int], max_shift: float = 0.5
) -> VolumeViews:
    """A view maker from ``views`` (returned as is) or the shorthands 1 and 2."""
    if isinstance(views, VolumeViews):
        return views
    if views == 1:
        return RandomCrop(crop_size=crop_size)
    if views == 2:
        return OverlappingCropPair(crop_size=crop_size, max_shift=max_shift)
    raise ValueError(f"views must be 1, 2 or a VolumeViews view maker, got views={views!r}")


def foreground_coords(volume: Tensor, threshold: float, max_points: int = 20_000) -> Tensor:
    """Voxel coordinates ``(M, 3)`` where any channel exceeds ``threshold`` (an evenly
    strided subset of at most ``max_points``)."""
    coords = (volume > threshold).any(dim=0).nonzero()  # (M, 3)
    step = max(1, len(coords) // max_points)
    return coords[::step].contiguous()
