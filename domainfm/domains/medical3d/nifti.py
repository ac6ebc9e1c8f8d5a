"""Reading a NIfTI file (``.nii`` / ``.nii.gz``, nibabel) with clear errors.

The voxels are read with the header's scaling applied, on the file's voxel axes, with the
image's affine (sform, else qform). A truncated or corrupt file, a 2D image or a 4D image
(unless the 4th axis has size 1) is a ``ValueError`` naming the file.

**Modality hint**: NIfTI has no modality field, so a heuristic (:func:`nifti_modality`):
integer-valued data (an integer on-disk type with integer scaling) with at least
:data:`CT_AIR_FRACTION` of the voxels below :data:`CT_AIR_THRESHOLD` (air in Hounsfield units;
MRI has no negative values, or a few from interpolation) → ``"ct"``; otherwise ``None`` (MRI
cannot be told apart from other images by value).

:func:`~domainfm.domains.medical3d.io.load_volume` and
:func:`~domainfm.domains.medical3d.io.read_header` dispatch here for NIfTI paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from domainfm.domains.medical3d.volume_types import Modality, VolumeHeader, voxel_spacing

CT_AIR_THRESHOLD = -500.0
"""NIfTI modality heuristic: integer data with at least :data:`CT_AIR_FRACTION` of its voxels
below this value (air, in Hounsfield units) is CT."""
CT_AIR_FRACTION = 0.01

_NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: Path) -> bool:
    """Whether ``path`` is named like a NIfTI file (``.nii`` or ``.nii.gz``)."""
    return path.name.lower().endswith(_NIFTI_SUFFIXES)


def open_nifti(source: Path) -> Any:
    """The nibabel image of ``source`` (header read, voxels not yet)."""
    import nibabel as nib

    try:
        return nib.load(str(source))
    except Exception as err:  # nibabel raises several types for unreadable files
        raise ValueError(
            f"could not read {source} as NIfTI: {type(err).__name__}: {err} "
            "(the file is truncated, corrupt or not NIfTI)"
        ) from err


def nifti_header(source: Path, image: Any) -> VolumeHeader:
    """The geometry of ``image`` (opened from ``source``), after checking it is one 3D
    volume and, for an uncompressed file, that the file holds all of its voxels."""
    shape = tuple(int(n) for n in image.shape)
    _check_spatial_shape(source, shape)
    if source.name.lower().endswith(".nii"):  # uncompressed: a cut-off file is visible here
        need = int(image.header.get_data_offset()) + int(
            np.prod(shape) * image.header.get_data_dtype().itemsize
        )
        size = source.stat().st_size
        if size < need:
            raise ValueError(
                f"could not read {source} as NIfTI: the file has {size} bytes, its header "
                f"needs {need} (the file is truncated)"
            )
    _check_geometry(source, image)
    affine = np.asarray(image.affine, dtype=np.float64)
    return VolumeHeader(
        path=source,
        kind="nifti",
        shape=(shape[0], shape[1], shape[2]),
        affine=affine,
        spacing=voxel_spacing(affine),
        modality=None,
    )


def read_nifti_voxels(source: Path, image: Any, shape: tuple[int, int, int]) -> np.ndarray:
    """The voxels of ``image`` as a C-contiguous float32 ``shape`` array (scaling applied;
    a 4th axis of size 1 dropped)."""
    try:
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as err:  # EOFError, zlib.error, OSError, ... for truncated files
        raise ValueError(
            f"could not read {source} as NIfTI: {type(err).__name__}: {err} "
            "(the file is truncated or corrupt)"
        ) from err
    return np.ascontiguousarray(data.reshape(shape))


def nifti_modality(image: Any, array: np.ndarray, vmin: float) -> Modality | None:
    """The modality hint of the module docstring: ``"ct"`` for integer-valued data with
    enough air, else ``None``; ``vmin`` is ``array.min()``."""
    return "ct" if _integer_valued(image) and _has_air(array, vmin) else None


def _check_spatial_shape(source: Path, shape: Sequence[int]) -> None:
    if len(shape) > 3 and any(n != 1 for n in shape[3:]):
        raise ValueError(
            f"{source} has shape {tuple(shape)}: a {len(shape)}D image (e.g. fMRI or several "
            "channels); a single 3D volume is needed (a 4th axis of size 1 is allowed)"
        )
    if len(shape) < 3 or min(shape[:3]) < 2:
        raise ValueError(
            f"{source} has shape {tuple(shape)}: a 2D image; a 3D volume is needed "
            "(at least 2 voxels along each of 3 axes)"
        )


def _check_geometry(source: Path, image: Any) -> None:
    """Refuse geometry nibabel would otherwise invent or repair silently: voxel sizes
    (``pixdim[1:4]``, when no sform defines the grid) that are zero, negative or not finite
    (nibabel sets them to 1 or their absolute value on load), an affine that is not finite or
    is singular, and voxel types that are not real numbers."""
    dtype = np.dtype(image.get_data_dtype())
    if dtype.kind not in "biuf":
        what = "complex" if dtype.kind == "c" else f"{dtype} (not real numbers)"
        raise ValueError(
            f"{source}: voxel type {what} is not supported; a real-valued volume is needed"
        )
    from nibabel.openers import ImageOpener

    with ImageOpener(str(source)) as handle:  # the header as written, before nibabel's fixes
        raw = type(image.header).from_fileobj(handle, check=False)
    sform_code = int(raw["sform_code"])
    sizes = np.asarray(raw["pixdim"][1:4], dtype=np.float64)
    if sform_code == 0 and not (np.all(np.isfinite(sizes)) and np.all(sizes > 0)):
        raise ValueError(
            f"{source}: pixdim[1:4] = {sizes.tolist()}: voxel sizes must be finite and positive "
            "(no sform gives the grid instead); the geometry is not guessed"
        )
    affine = np.asarray(raw.get_best_affine() if sform_code else image.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)):
        raise ValueError(f"{source}: the affine (sform/qform) has non-finite values")
    if abs(float(np.linalg.det(affine[:3, :3]))) < 1e-12:
        raise ValueError(
            f"{source}: the affine (sform/qform) is singular: {affine[:3, :3].tolist()}"
        )


def _integer_valued(image: Any) -> bool:
    """Integer on-disk type with integer (or no) scaling: the values are integers."""
    if not np.issubdtype(image.get_data_dtype(), np.integer):
        return False
    slope, inter = image.header.get_slope_inter()
    return all(v is None or float(v).is_integer() for v in (slope, inter))


def _has_air(array: np.ndarray, vmin: float) -> bool:
    """Whether at least :data:`CT_AIR_FRACTION` of the voxels are below the air threshold."""
    if vmin >= CT_AIR_THRESHOLD:
        return False
    return float(np.count_nonzero(array < CT_AIR_THRESHOLD)) >= CT_AIR_FRACTION * array.size
