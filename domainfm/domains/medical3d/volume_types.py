"""The types shared by the NIfTI and DICOM readers: a loaded :class:`Volume`, the header-only
:class:`VolumeHeader`, the :class:`VolumeSkippedWarning` of datasets that leave a volume out,
the :data:`Geometry` choice for NIfTI files whose qform and sform disagree, and
:func:`voxel_spacing` (voxel size from an affine).

Conventions (see :mod:`domainfm.domains.medical3d.io`): the spatial axes are the file's voxel
axes (no reorientation, no resampling) and ``affine`` maps voxel indices ``(i, j, k, 1)`` to
**RAS world millimetres**.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

Modality = Literal["ct", "mri"]
VolumeKind = Literal["nifti", "dicom"]
Geometry = Literal["strict", "sform", "qform"]
"""Which NIfTI transform places the voxels when the qform and the sform disagree:
``"strict"`` refuses such a file, ``"sform"`` / ``"qform"`` assume that one is right (see
:mod:`domainfm.domains.medical3d.nifti`)."""
GEOMETRIES: tuple[Geometry, ...] = ("strict", "sform", "qform")


class VolumeSkippedWarning(UserWarning):
    """A volume failed validation or loading and was left out of a dataset."""


@dataclass(frozen=True, eq=False)
class VolumeHeader:
    """The geometry of a volume, read from headers only (no voxel data).

    Attributes:
        path: the NIfTI file or DICOM series folder.
        kind: ``"nifti"`` or ``"dicom"``.
        shape: spatial shape ``(D, H, W)`` (the file's voxel axes).
        affine: ``(4, 4)`` float64, voxel indices → RAS world mm.
        spacing: voxel size along the three axes, mm (lengths of the affine's columns).
        modality: ``"ct"`` / ``"mri"`` from the DICOM ``Modality`` tag; ``None`` for NIfTI
            (its heuristic needs the voxel values, see
            :func:`~domainfm.domains.medical3d.io.load_volume`).
    """

    path: Path
    kind: VolumeKind
    shape: tuple[int, int, int]
    affine: np.ndarray
    spacing: tuple[float, float, float]
    modality: Modality | None


@dataclass(frozen=True, eq=False)
class Volume:
    """One loaded, validated volume.

    Attributes:
        array: ``(C, D, H, W)`` float32, ``C = 1``; the spatial axes are the file's voxel
            axes (see :mod:`domainfm.domains.medical3d.io`), C-contiguous.
        affine: ``(4, 4)`` float64, voxel indices ``(i, j, k, 1)`` → RAS world mm.
        spacing: voxel size in mm along ``(D, H, W)``.
        modality: hint ``"ct"`` / ``"mri"`` / ``None`` (see
            :mod:`domainfm.domains.medical3d.io`).
        path: the NIfTI file or DICOM series folder it was read from.
    """

    array: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    modality: Modality | None
    path: Path

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape ``(D, H, W)``."""
        d, h, w = self.array.shape[1:]
        return (int(d), int(h), int(w))

    def to_metatensor(self) -> Any:
        """A MONAI ``MetaTensor`` ``(C, D, H, W)`` carrying the affine, as ``LoadImage``
        (``ensure_channel_first=True``) would give: the input of
        ``volume_transform(..., load=False)``. Shares memory with :attr:`array`."""
        import torch
        from monai.data import MetaTensor

        affine = torch.as_tensor(self.affine, dtype=torch.float64)
        meta = {
            "filename_or_obj": str(self.path),
            "original_affine": self.affine.copy(),
            "spatial_shape": np.asarray(self.shape),
            "space": "RAS",
            "original_channel_dim": float("nan"),
        }
        return MetaTensor(torch.from_numpy(self.array), affine=affine, meta=meta)


def check_geometry_choice(geometry: str) -> Geometry:
    """``geometry`` when it is one of :data:`GEOMETRIES`, else a ``ValueError``."""
    for choice in GEOMETRIES:
        if geometry == choice:
            return choice
    raise ValueError(f"geometry must be one of {', '.join(GEOMETRIES)}, got {geometry!r}")


def voxel_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size along the three axes, mm: the lengths of the affine's first three columns."""
    sx, sy, sz = np.linalg.norm(affine[:3, :3], axis=0)
    return (float(sx), float(sy), float(sz))
