"""Random 3D crops from CT/MRI volumes, for self-supervised pretraining.

Volumes are read with MONAI (a NIfTI file via nibabel, or a DICOM series folder via pydicom:
slices sorted by position, spacing from the headers), made channel-first, reoriented to RAS,
resampled to a target spacing and intensity-normalized once (CT: a HU window scaled to
[0, 1]; MRI: 0.5–99.5 percentile scaling), then kept in memory; each item is a random crop.

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

from domainfm.core.grid import to_ntuple
from domainfm.domains.medical3d.preprocess import volume_transform


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
    """Random fixed-size crops from a list of volumes, ``samples_per_volume`` per volume.

    Args:
        files: NIfTI files or DICOM series folders (one channel each).
        crop_size: crop size in voxels (int or 3 values).
        spacing: target voxel spacing in mm.
        modality: ``"ct"`` (HU window) or ``"mri"`` (percentile scaling).
        hu_window: HU range mapped to [0, 1] for CT.
        samples_per_volume: dataset items per volume (one epoch).
        views: 1 for a single crop; 2 adds a positive pair ``"view1"``/``"view2"``: the first
            crop and a second crop of the same volume shifted by up to ``max_shift`` of the
            crop size per axis, each with its own random intensity scale/shift (±10 %);
            ``"origin1"``/``"origin2"`` give their voxel origins in the volume.
        max_shift: largest offset of the second view, as a fraction of the crop size.
    """

    def __init__(
        self,
        *,
        files: Sequence[str | Path],
        crop_size: int | Sequence[int] = 64,
        spacing: float | Sequence[float] = 3.0,
        modality: Literal["ct", "mri"] = "ct",
        hu_window: tuple[float, float] = (-1000.0, 1000.0),
        samples_per_volume: int = 8,
        views: Literal[1, 2] = 1,
        max_shift: float = 0.5,
    ) -> None:
        if not files:
            raise ValueError("files is empty: pass at least one volume")
        if modality not in ("ct", "mri"):
            raise ValueError(f"modality must be 'ct' or 'mri', got {modality!r}")
        if views not in (1, 2):
            raise ValueError(f"views must be 1 or 2, got views={views}")
        if not 0.0 <= max_shift <= 1.0:
            raise ValueError(f"max_shift must be in [0, 1], got max_shift={max_shift}")
        self.crop_size = to_ntuple(crop_size, 3, name="crop_size")
        pixdim = (float(spacing),) * 3 if isinstance(spacing, int | float) else tuple(spacing)
        self.files = [Path(f) for f in files]
        missing = [str(f) for f in self.files if not f.exists()]
        if missing:
            raise FileNotFoundError(f"volume files not found: {', '.join(missing)}")
        self.volumes = [
            _preprocess(
                f, spacing=pixdim, modality=modality, hu_window=hu_window, min_size=self.crop_size
            )
            for f in self.files
        ]
        self.samples_per_volume = samples_per_volume
        self.views = views
        self.max_shift = max_shift

    def __len__(self) -> int:
        return len(self.volumes) * self.samples_per_volume

    def _crop(self, volume: Tensor, starts: Sequence[int]) -> Tensor:
        region = tuple(slice(s, s + c) for s, c in zip(starts, self.crop_size, strict=True))
        return volume[(slice(None), *region)].clone()  # (C, *crop_size)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Tensor]:
        """A random crop ``{"input": (C, *crop_size)}`` (plus ``"view1"``/``"view2"`` with
        ``views=2``); ``key`` is an index or ``(index, seed)`` from
        :class:`~domainfm.core.sampling.SeededSampler` (then every random choice follows from
        the seed and ``"seed"`` is returned too)."""
        index, seed = key if isinstance(key, tuple) else (key, None)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        volume = self.volumes[index // self.samples_per_volume]
        sizes = volume.shape[1:]
        starts = [
            int(torch.randint(0, size - crop + 1, (1,), generator=generator))
            for size, crop in zip(sizes, self.crop_size, strict=True)
        ]
        sample = {"input": self._crop(volume, starts)}
        if self.views == 2:
            shifted = []
            for start, size, crop in zip(starts, sizes, self.crop_size, strict=True):
                reach = int(self.max_shift * crop)
                lo, hi = max(0, start - reach), min(size - crop, start + reach)
                shifted.append(int(torch.randint(lo, hi + 1, (1,), generator=generator)))
            # per view: an intensity scale and a shift, each a factor in [0.9, 1.1]
            jitter = 1.0 + 0.2 * (torch.rand(2, 2, generator=generator) - 0.5)
            views = (sample["input"], self._crop(volume, shifted))
            sample["origin1"], sample["origin2"] = torch.tensor(starts), torch.tensor(shifted)
            sample["view1"], sample["view2"] = (
                v * j[0] + (j[1] - 1.0) for v, j in zip(views, jitter, strict=True)
            )
        if seed is not None:
            sample["seed"] = torch.tensor(seed)
        return sample
