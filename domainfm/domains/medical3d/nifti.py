"""Reading a NIfTI file (``.nii`` / ``.nii.gz``, nibabel) with clear errors.

The voxels are read with the header's scaling applied, on the file's voxel axes, with the
image's affine (sform, else qform). A truncated or corrupt file, a 2D image or a 4D image
(unless the 4th axis has size 1) is a ``ValueError`` naming the file.

**Geometry is validated, never invented** (:func:`nifti_header`): voxel sizes that are zero,
negative or not finite, an affine that is singular or not finite, and voxel types that are
not real numbers are refused. So is a file whose **qform and sform disagree**: both codes
set (> 0) and the two transforms placing the corners of the voxel grid more than
:data:`QFORM_SFORM_ATOL_MM` mm apart (plus the float32 rounding of the header's numbers: 4
units in the last place of the largest corner coordinate). Tools differ on which one wins
(nibabel and MONAI take the sform; ITK takes the qform unless the sform is rigid and nearly
the same, within 1e-4), so the same file would lie in different places depending on the
reader. To proceed anyway, state which one is right with ``geometry="sform"`` or
``geometry="qform"`` (``domainfm segment --assume-geometry``); a file with only one of them
set uses that one in every mode.

**Memory**: the voxels are decoded slab by slab (:data:`READ_SLAB_BYTES`) straight into the
float32 volume, so reading never holds a float64 (or on-disk type) copy of the whole volume;
the scaling of one slab is computed in float64, as nibabel does, so the values are the same.

**Integrity**: a ``.nii.gz`` is decoded by Python's ``gzip`` (whatever nibabel would use) and
read to the end of the stream after the last slab (in :data:`READ_SLAB_BYTES` pieces, at most
:data:`MAX_TRAILING_BYTES` after the voxels), so its CRC-32 and length trailer are checked:
a damaged stream is an error naming the file ("damaged gzip stream: CRC check failed"), never
silently wrong voxels. Reading the header alone (:func:`nifti_header`) does not decode the
voxels, so it cannot see such damage; everything that loads voxels does.

**Quiet**: nibabel logs the header fixes it makes on load (``pixdim[1,2,3] should be
non-zero; setting 0 dims to 1``) and numpy warns about non-finite header arithmetic; both are
silenced for our reads (:func:`quiet_nibabel`), because the checks here refuse such a file
with one error naming it instead.

**Modality hint**: NIfTI has no modality field, so a heuristic (:func:`nifti_modality`):
integer-valued data (an integer on-disk type with integer scaling) with at least
:data:`CT_AIR_FRACTION` of the voxels below :data:`CT_AIR_THRESHOLD` (air in Hounsfield units;
MRI has no negative values, or a few from interpolation) → ``"ct"``; otherwise ``None`` (MRI
cannot be told apart from other images by value).

:func:`~domainfm.domains.medical3d.io.load_volume` and
:func:`~domainfm.domains.medical3d.io.read_header` dispatch here for NIfTI paths.
"""

from __future__ import annotations

import gzip
import io
import logging
import threading
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from domainfm.domains.medical3d.volume_types import (
    Geometry,
    Modality,
    VolumeHeader,
    check_geometry_choice,
    voxel_spacing,
)

CT_AIR_THRESHOLD = -500.0
"""NIfTI modality heuristic: integer data with at least :data:`CT_AIR_FRACTION` of its voxels
below this value (air, in Hounsfield units) is CT."""
CT_AIR_FRACTION = 0.01

QFORM_SFORM_ATOL_MM = 1e-3
"""Largest distance (mm) between where the qform and the sform put the voxel grid's corners,
beyond the float32 rounding of the header (see the module docstring)."""
READ_SLAB_BYTES = 32 * 1024**2
"""Bytes of one decoded slab as float64 (its scaling), i.e. ``READ_SLAB_BYTES / 8`` voxels
decoded at a time (at least one plane of the last axis)."""

MAX_TRAILING_BYTES = 64 * 1024**2
"""Most decompressed bytes a ``.nii.gz`` may hold after its voxels (read only to reach and
check the gzip trailer); more is refused (a stream padded to decompress for ever)."""

_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_F32_ULPS = 4 * float(np.finfo(np.float32).eps)


def is_nifti(path: Path) -> bool:
    """Whether ``path`` is named like a NIfTI file (``.nii`` or ``.nii.gz``)."""
    return path.name.lower().endswith(_NIFTI_SUFFIXES)


class _Quiet(threading.local):
    """Per thread: how many :func:`quiet_nibabel` blocks are open."""

    depth = 0


_QUIET = _Quiet()


def _loud(record: logging.LogRecord) -> bool:
    """The filter on nibabel's logger: drop records inside :func:`quiet_nibabel`."""
    return _QUIET.depth == 0


@contextmanager
def quiet_nibabel() -> Iterator[None]:
    """Silence nibabel's log of the header fixes it makes and numpy's floating-point
    warnings (e.g. ``invalid value encountered in dot`` for an infinite pixdim) in this
    thread for the block: our own checks report the problem, naming the file."""
    from nibabel import imageglobals

    logger = imageglobals.logger
    if _loud not in logger.filters:
        logger.addFilter(_loud)
    _QUIET.depth += 1
    try:
        with np.errstate(all="ignore"):
            yield
    finally:
        _QUIET.depth -= 1


def open_nifti(source: Path) -> Any:
    """The nibabel image of ``source`` (header read, voxels not yet)."""
    import nibabel as nib

    try:
        with quiet_nibabel():
            return nib.load(str(source))
    except Exception as err:  # nibabel raises several types for unreadable files
        raise ValueError(
            f"could not read {source} as NIfTI: {type(err).__name__}: {err} "
            "(the file is truncated, corrupt or not NIfTI)"
        ) from err


def nifti_header(source: Path, image: Any, geometry: Geometry = "strict") -> VolumeHeader:
    """The geometry of ``image`` (opened from ``source``), after checking it is one 3D
    volume, its geometry (module docstring; ``geometry`` says which transform wins when the
    qform and sform disagree) and, for an uncompressed file, that the file holds all of its
    voxels."""
    with quiet_nibabel():
        return _nifti_header(source, image, geometry)


def _nifti_header(source: Path, image: Any, geometry: Geometry) -> VolumeHeader:
    shape = tuple(int(n) for n in image.shape)
    _check_spatial_shape(source, shape)
    if source.name.lower().endswith(".nii"):  # uncompressed: a cut-off file is visible here
        need = int(image.dataobj.offset) + int(
            np.prod(shape) * image.header.get_data_dtype().itemsize
        )
        size = source.stat().st_size
        if size < need:
            raise ValueError(
                f"could not read {source} as NIfTI: the file has {size} bytes, its header "
                f"needs {need} (the file is truncated)"
            )
    affine = _checked_affine(source, image, check_geometry_choice(geometry))
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
    a 4th axis of size 1 dropped), decoded slab by slab (no whole-volume intermediate); a
    ``.nii.gz`` is read to the end of its gzip stream, so its CRC and length are checked.

    Raises:
        ValueError: naming ``source``: truncated or corrupt data, a damaged gzip stream.
    """
    proxy = image.dataobj  # nibabel's ArrayProxy: on-disk type, offset and scaling
    dtype = np.dtype(proxy.dtype)  # with its byte order
    slope, inter = float(proxy.slope), float(proxy.inter)
    nx, ny, nz = shape
    plane = nx * ny  # voxels of one plane of the last axis, the slowest on disk
    step = max(1, READ_SLAB_BYTES // max(1, plane * 8))
    volume = np.empty(shape, dtype=np.float32)
    try:
        with _open_stream(source) as handle:
            handle.seek(int(proxy.offset))
            for k0 in range(0, nz, step):
                k1 = min(nz, k0 + step)
                need = plane * (k1 - k0) * dtype.itemsize
                raw = handle.read(need)
                if len(raw) < need:
                    raise EOFError(f"the voxel data end after {k0} of {nz} planes")
                slab = np.frombuffer(raw, dtype=dtype).reshape((nx, ny, k1 - k0), order="F")
                volume[:, :, k0:k1] = _scaled(slab, slope, inter)
            if isinstance(handle, gzip.GzipFile):
                _drain(handle)
    except gzip.BadGzipFile as err:  # CRC or length mismatch, bad member header
        raise ValueError(
            f"could not read {source} as NIfTI: damaged gzip stream: {err} (the file is corrupt)"
        ) from err
    except (EOFError, OSError, zlib.error) as err:  # truncated or corrupt files
        raise ValueError(
            f"could not read {source} as NIfTI: {type(err).__name__}: {err} "
            "(the file is truncated or corrupt)"
        ) from err
    return volume


def _open_stream(source: Path) -> io.BufferedIOBase:
    """``source`` opened for reading its bytes: through Python's ``gzip`` (which checks the
    CRC and length at the end of the stream) for a gzip file, as is otherwise."""
    with open(source, "rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(filename=str(source), mode="rb")
    return open(source, "rb")


def _drain(handle: gzip.GzipFile) -> None:
    """Read ``handle`` to the end of its stream (so ``gzip`` checks every member's CRC and
    length), refusing more than :data:`MAX_TRAILING_BYTES` after the voxels."""
    trailing = 0
    while chunk := handle.read(READ_SLAB_BYTES):
        trailing += len(chunk)
        if trailing > MAX_TRAILING_BYTES:
            raise EOFError(
                f"the gzip stream goes on for more than {MAX_TRAILING_BYTES} bytes after "
                "the voxel data"
            )


def _scaled(slab: np.ndarray, slope: float, inter: float) -> np.ndarray:
    """``slab * slope + inter`` as nibabel computes it (float64, for one slab), or ``slab``
    when there is no scaling."""
    if (slope, inter) == (1.0, 0.0):
        return slab
    return slab.astype(np.float64) * slope + inter


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


def _checked_affine(source: Path, image: Any, geometry: Geometry) -> np.ndarray:
    """The affine of ``image`` after refusing geometry nibabel would otherwise invent or
    repair silently: voxel sizes (``pixdim[1:4]``, when the grid comes from them: no sform,
    or the qform chosen) that are zero, negative or not finite (nibabel sets them to 1 or
    their absolute value on load), an affine that is not finite or is singular, voxel types
    that are not real numbers, and a qform and sform that disagree (unless ``geometry``
    chooses one)."""
    dtype = np.dtype(image.get_data_dtype())
    if dtype.kind not in "biuf":
        what = "complex" if dtype.kind == "c" else f"{dtype} (not real numbers)"
        raise ValueError(
            f"{source}: voxel type {what} is not supported; a real-valued volume is needed"
        )
    from nibabel.openers import ImageOpener

    with ImageOpener(str(source)) as handle:  # the header as written, before nibabel's fixes
        raw = type(image.header).from_fileobj(handle, check=False)
    qform_code, sform_code = int(raw["qform_code"]), int(raw["sform_code"])
    use_qform = geometry == "qform" and qform_code > 0 and sform_code > 0
    sizes = np.asarray(raw["pixdim"][1:4], dtype=np.float64)
    if (sform_code == 0 or use_qform) and not (np.all(np.isfinite(sizes)) and np.all(sizes > 0)):
        raise ValueError(
            f"{source}: pixdim[1:4] = {sizes.tolist()}: voxel sizes must be finite and positive "
            f"({'the qform is chosen' if use_qform else 'no sform gives the grid instead'}); "
            "the geometry is not guessed"
        )
    if use_qform:
        try:
            affine = np.asarray(raw.get_qform(), dtype=np.float64)
        except Exception as err:  # HeaderDataError
            raise ValueError(f"{source}: the qform is invalid: {err}") from err
    elif sform_code:
        affine = np.asarray(raw.get_sform(), dtype=np.float64)
    else:
        affine = np.asarray(image.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)):
        raise ValueError(f"{source}: the affine (sform/qform) has non-finite values")
    if abs(float(np.linalg.det(affine[:3, :3]))) < 1e-12:
        raise ValueError(
            f"{source}: the affine (sform/qform) is singular: {affine[:3, :3].tolist()}"
        )
    if geometry == "strict" and qform_code > 0 and sform_code > 0:
        _check_qform_matches_sform(source, raw, affine, tuple(int(n) for n in image.shape[:3]))
    if use_qform:
        return affine
    return np.asarray(image.affine, dtype=np.float64)  # nibabel's (the sform, else the qform)


def _check_qform_matches_sform(
    source: Path, raw: Any, sform: np.ndarray, shape: tuple[int, ...]
) -> None:
    """Refuse a qform that puts the grid's corners more than :data:`QFORM_SFORM_ATOL_MM`
    (plus float32 rounding) away from where the ``sform`` puts them."""
    why = ""
    try:
        qform = np.asarray(raw.get_qform(), dtype=np.float64)
    except Exception as err:  # HeaderDataError: e.g. negative pixdim under the qform
        qform, why = None, f"the qform is invalid ({err})"
    if qform is not None and not np.all(np.isfinite(qform)):
        qform, why = None, "the qform has non-finite values"
    corners = np.array(np.meshgrid(*[(0, n - 1) for n in shape], indexing="ij")).reshape(3, -1)
    corners = np.vstack([corners, np.ones((1, corners.shape[1]))])  # (4, 8) voxel corners
    at_sform = sform @ corners
    tolerance = QFORM_SFORM_ATOL_MM + _F32_ULPS * float(np.abs(at_sform[:3]).max())
    if qform is not None:
        gap = float(np.abs(qform @ corners - at_sform).max())
        if gap <= tolerance:
            return
        row, col = np.unravel_index(int(np.argmax(np.abs(qform - sform))), qform.shape)
        why = (
            f"they place the voxel grid's corners up to {gap:.4g} mm apart (tolerance "
            f"{tolerance:.2g} mm); the largest difference is in row {row}, column {col}: qform "
            f"{qform[row, col]:.6g} vs sform {sform[row, col]:.6g}"
        )
    raise ValueError(
        f"{source}: qform (code {int(raw['qform_code'])}) and sform (code "
        f"{int(raw['sform_code'])}) disagree: {why}; readers differ on which one wins, so the "
        "geometry is not guessed: state which one is right with geometry='sform' or 'qform' "
        "(domainfm segment/prepare --assume-geometry sform|qform)"
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
