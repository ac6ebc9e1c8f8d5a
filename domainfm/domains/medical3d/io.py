"""Reading one CT/MRI volume, with clear errors: a NIfTI file or a DICOM series folder.

:func:`load_volume` returns a :class:`Volume`: a float32 array ``(C, D, H, W)`` (``C = 1``)
whose axes **follow the file's voxel axes** (no reorientation, no resampling) and the
``affine`` that maps voxel indices ``(i, j, k, 1)`` to **RAS world millimetres** (the
convention of nibabel and MONAI). So ``array[0, i, j, k]`` lies at ``affine @ (i, j, k, 1)``.
This module dispatches on the path and checks what both formats share (the voxel values, a
label map against its image); the formats themselves are read by:

* **NIfTI** (``.nii`` / ``.nii.gz``, :mod:`~domainfm.domains.medical3d.nifti`): values with
  the header's scaling applied, the image's affine (sform, else qform).
* **DICOM series folder** (:mod:`~domainfm.domains.medical3d.dicom`): every DICOM file
  directly inside the folder is one slice, sorted by position along the slice normal,
  ``RescaleSlope``/``RescaleIntercept`` applied, spacing from ``PixelSpacing`` and the slice
  positions, DICOM's LPS world flipped to RAS.

Everything that is wrong with an input is a ``ValueError`` (``FileNotFoundError`` when it does
not exist) whose message names the file and the problem: truncated or corrupt NIfTI, a DICOM
folder mixing several series, slices without ``PixelSpacing`` / ``ImagePositionPatient``,
uneven slice gaps (missing slices), a 2D image, a 4D image (unless the 4th axis has size 1),
a constant (e.g. all-zero) volume, NaN or infinite values; a NIfTI file whose qform and sform
disagree (unless ``geometry`` says which one is right, see
:mod:`~domainfm.domains.medical3d.nifti`).

**Size guard**: before any voxel is decoded, the float32 volume the header asks for is
checked against the per-allocation limit
(:func:`~domainfm.core.size_guard.check_allocation`, ``--max-alloc-gb``), so a small gzip
file that decodes to tens of GiB is refused up front with the estimate.

**Modality hint** (``Volume.modality``): DICOM ``Modality`` ``CT`` → ``"ct"``, ``MR`` →
``"mri"``, else ``None``. NIfTI has no modality field, so a heuristic: integer-valued data
(an integer on-disk type with integer scaling) with at least 1 % of the voxels below −500
(air in Hounsfield units; MRI has no negative values, or a few from interpolation) →
``"ct"``; otherwise ``None`` (MRI cannot be told apart from other images by value).

Example::

    >>> vol = load_volume("ct.nii.gz")
    >>> vol.array.shape, vol.array.dtype, vol.spacing, vol.modality
    ((1, 122, 101, 112), dtype('float32'), (3.0, 3.0, 3.0), 'ct')
    >>> vol = load_volume("series_folder/")   # DICOM slices, sorted by position
    >>> vol.array.shape                        # (1, columns, rows, slices)
    (1, 512, 512, 20)
    >>> check_label_pair("ct.nii.gz", "ct_seg.nii.gz")   # raises ValueError on a mismatch
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import numpy as np

from domainfm.core.size_guard import check_allocation
from domainfm.domains.medical3d.dicom import is_dicom_file, read_dicom_series, stack_slices
from domainfm.domains.medical3d.nifti import (
    is_nifti,
    nifti_header,
    nifti_modality,
    open_nifti,
    read_nifti_voxels,
)
from domainfm.domains.medical3d.volume_types import (
    Geometry,
    Modality,
    Volume,
    VolumeHeader,
    VolumeSkippedWarning,
    check_geometry_choice,
)

__all__ = [
    "LABEL_GRID_ATOL_MM",
    "Geometry",
    "Volume",
    "VolumeHeader",
    "VolumeSkippedWarning",
    "check_label_pair",
    "load_volume",
    "read_header",
]

LABEL_GRID_ATOL_MM = 1e-3
"""Largest world distance (mm) between the corners of an image grid and its label's grid."""


def read_header(path: str | Path, *, geometry: Geometry = "strict") -> VolumeHeader:
    """The geometry of a NIfTI file or DICOM series folder from its headers only (NIfTI
    header / DICOM tags with ``stop_before_pixels``), with the same shape and geometry checks
    as :func:`load_volume` (not the value checks, which need the voxels, nor the size
    guard); ``geometry`` as in :func:`load_volume`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unreadable, 2D, 4D, or a DICOM series with broken geometry.
    """
    source = _existing(path)
    check_geometry_choice(geometry)
    if source.is_dir():
        return read_dicom_series(source, pixels=False)[0]
    if is_nifti(source):
        return nifti_header(source, open_nifti(source), geometry)
    _not_a_volume(source)


def load_volume(
    path: str | Path, *, allow_constant: bool = False, geometry: Geometry = "strict"
) -> Volume:
    """Load and validate a 3D volume: a NIfTI file or a DICOM series folder.

    Args:
        path: a ``.nii`` / ``.nii.gz`` file, or a folder holding one DICOM series.
        allow_constant: accept a volume whose voxels all have the same value (e.g. an empty
            label map); by default that is an error (a blank scan).
        geometry: which transform of a NIfTI file places its voxels when its qform and
            sform disagree: ``"strict"`` (default) refuses such a file, ``"sform"`` assumes
            the sform is right (nibabel's and MONAI's choice), ``"qform"`` the qform (ITK's
            for a sform that is not rigid). A file with only one of them uses that one; DICOM
            series have neither.

    Returns:
        A :class:`Volume`: ``array`` ``(1, D, H, W)`` float32 on the file's voxel axes,
        ``affine`` voxel → RAS mm, ``spacing`` in mm, ``modality`` hint, ``path``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the message names the file and the problem (see the module docstring);
            :class:`~domainfm.core.size_guard.AllocationTooLarge` for a volume above the
            per-allocation limit.
    """
    source = _existing(path)
    check_geometry_choice(geometry)
    if source.is_dir():
        header, slices = read_dicom_series(source, pixels=True)
        _check_size(header)
        array = stack_slices(source, header, slices)
        _check_values(source, array, allow_constant=allow_constant)
        modality: Modality | None = header.modality
    elif is_nifti(source):
        image = open_nifti(source)
        header = nifti_header(source, image, geometry)
        _check_size(header)
        array = read_nifti_voxels(source, image, header.shape)
        vmin = _check_values(source, array, allow_constant=allow_constant)
        modality = nifti_modality(image, array, vmin)
    else:
        _not_a_volume(source)
    return Volume(
        array=array[None],  # (1, D, H, W)
        affine=header.affine,
        spacing=header.spacing,
        modality=modality,
        path=source,
    )


def check_label_pair(
    image: Volume | VolumeHeader | str | Path,
    label: Volume | str | Path,
    *,
    geometry: Geometry = "strict",
) -> None:
    """Check that ``label`` is a label map of ``image``: the same voxel grid and integer
    values ``>= 0``.

    The grids are compared after reorienting both to the closest RAS axes (so a label map
    stored with flipped or permuted axes, which lies on the same voxels, passes): equal
    shape, and the grid corners within :data:`LABEL_GRID_ATOL_MM` mm of each other. Paths
    are read with :func:`read_header` (image) and :func:`load_volume` (label, which may be
    all background), with ``geometry`` (see :func:`load_volume`).

    Raises:
        ValueError: naming both files, on a shape or affine mismatch or non-integer or
            negative label values.

    Example::

        >>> check_label_pair("ct.nii.gz", "ct_seg.nii.gz")
    """
    if isinstance(image, Volume | VolumeHeader):
        img = image
    else:
        img = read_header(image, geometry=geometry)
    if isinstance(label, Volume):
        lab = label
    else:
        lab = load_volume(label, allow_constant=True, geometry=geometry)
    names = f"label {lab.path} and image {img.path}"
    img_shape, img_affine = _ras_grid(img.shape, img.affine)
    lab_shape, lab_affine = _ras_grid(lab.shape, lab.affine)
    if img_shape != lab_shape:
        raise ValueError(
            f"{names} have different shapes: {lab.shape} vs {img.shape} "
            f"({lab_shape} vs {img_shape} in RAS order)"
        )
    corners = np.array(np.meshgrid(*[(0, n - 1) for n in img_shape], indexing="ij"))
    corners = np.vstack([corners.reshape(3, -1), np.ones((1, 8))])  # (4, 8) voxel corners
    gap = float(np.abs((lab_affine - img_affine) @ corners).max())
    if gap > LABEL_GRID_ATOL_MM:
        raise ValueError(
            f"{names} have different affines (grid corners up to {gap:.4g} mm apart, "
            f"tolerance {LABEL_GRID_ATOL_MM} mm):\nlabel\n{np.round(lab.affine, 4)}\n"
            f"image\n{np.round(img.affine, 4)}"
        )
    values = lab.array
    frac = values != np.rint(values)
    if frac.any():
        example = float(values[frac].flat[0])
        raise ValueError(
            f"{names}: the label map has {int(frac.sum())} non-integer values "
            f"(e.g. {example:g}); labels must be integer class ids"
        )
    if float(values.min()) < 0:
        raise ValueError(
            f"{names}: the label map has negative values (min {float(values.min()):g}); "
            "labels must be class ids >= 0"
        )


def _check_size(header: VolumeHeader) -> None:
    """Refuse, before decoding, a float32 volume above the per-allocation limit."""
    voxels = float(np.prod([float(n) for n in header.shape]))
    shape = " x ".join(str(n) for n in header.shape)
    check_allocation(4.0 * voxels, what=f"the {shape} float32 volume", source=header.path)


def _check_values(source: Path, array: np.ndarray, *, allow_constant: bool) -> float:
    """The minimum of ``array``, after checking it is finite and (unless allowed) not
    constant."""
    vmin, vmax = float(array.min()), float(array.max())
    if not (np.isfinite(vmin) and np.isfinite(vmax)):  # NaN propagates through min/max
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"{source} has {bad} non-finite voxel values (NaN or ±inf)")
    if vmin == vmax and not allow_constant:
        raise ValueError(
            f"{source} is constant (every voxel is {vmin:g}): an empty or blank volume"
        )
    return vmin


def _existing(path: str | Path) -> Path:
    source = Path(path)
    if not source.exists():
        raise FileNotFoundError(f"volume {source} does not exist")
    return source


def _not_a_volume(source: Path) -> NoReturn:
    if is_dicom_file(source):
        raise ValueError(
            f"{source} is a single DICOM file (one 2D slice); a 3D volume is needed: "
            "pass the folder that holds the whole series"
        )
    raise ValueError(f"{source} is not a NIfTI file (.nii / .nii.gz) or a DICOM series folder")


def _ras_grid(shape: Sequence[int], affine: np.ndarray) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape and affine of the grid reoriented to the closest RAS axes (no resampling)."""
    from nibabel import orientations

    ornt = orientations.io_orientation(affine)  # (3, 2): output axis, flip per input axis
    ras_affine = affine @ orientations.inv_ornt_aff(ornt, tuple(shape))
    ras_shape = [0, 0, 0]
    for axis, (out_axis, _) in enumerate(ornt):
        ras_shape[int(out_axis)] = int(shape[axis])
    return tuple(ras_shape), ras_affine
