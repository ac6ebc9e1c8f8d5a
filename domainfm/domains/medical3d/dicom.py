"""Reading a DICOM series folder (pydicom) as one volume, with clear errors.

Every DICOM file directly inside the folder (suffix ``.dcm``, or the ``DICM`` marker at byte
128; :func:`is_dicom_file`) is one slice. Slices are sorted by their position along the slice
normal (``ImageOrientationPatient`` row × column direction), stacked in the direction of
increasing ``InstanceNumber`` (as MONAI's ``PydicomReader`` does, so both give the same
affine), with ``RescaleSlope``/``RescaleIntercept`` applied. Axis 0 runs along the image rows'
direction (columns of the pixel matrix), axis 1 along the columns' direction, axis 2 across
slices; spacing = ``PixelSpacing`` (column, row) and the distance between consecutive
``ImagePositionPatient``; DICOM's LPS world is flipped to RAS. ``Modality`` ``CT`` → ``"ct"``,
``MR`` → ``"mri"``, else ``None``.

A folder mixing several series, a single slice or multi-frame file, a truncated or damaged
slice (its pixel data cut short, or the file ending before them), slices without
``PixelSpacing`` / ``ImagePositionPatient`` / ``ImageOrientationPatient`` or with the wrong
number of values, non-finite values, zero or negative ``PixelSpacing``, orientation vectors
that are not orthogonal unit vectors, colour slices, slices of different orientation, pixel
spacing or size, duplicated positions, uneven slice gaps (missing slices), and a
``RescaleSlope`` of 0 or a ``RescaleSlope`` / ``RescaleIntercept`` that is not a finite
number (an absent one means 1 / 0) are each a ``ValueError`` naming the folder and the
slice. Nothing is guessed (no default spacing, no
``SliceThickness`` in place of positions).

:func:`~domainfm.domains.medical3d.io.load_volume` and
:func:`~domainfm.domains.medical3d.io.read_header` dispatch here for folders.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from domainfm.domains.medical3d.nifti import is_nifti
from domainfm.domains.medical3d.volume_types import Modality, VolumeHeader, voxel_spacing

SLICE_GAP_RTOL = 0.05
"""Relative tolerance of DICOM slice gaps around their median (larger: missing slices)."""
SLICE_GAP_ATOL_MM = 0.01
"""Absolute tolerance (mm) of DICOM slice gaps, for positions rounded in the headers."""

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_GEOMETRY_TAGS = {"ImagePositionPatient": 3, "ImageOrientationPatient": 6, "PixelSpacing": 2}
"""The geometry tags every slice needs, with their number of values."""
_ORIENTATION_ATOL = 1e-2
"""Tolerance of ``ImageOrientationPatient``: unit row/column vectors, orthogonal."""
_PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def is_dicom_file(path: Path) -> bool:
    """Whether ``path`` is a DICOM file: suffix ``.dcm``, or ``DICM`` at byte 128 (reads
    132 bytes; hidden files, NIfTI files and ``DICOMDIR`` catalogues are not)."""
    if path.name.startswith(".") or is_nifti(path) or path.name.upper() == "DICOMDIR":
        return False
    if not path.is_file():
        return False
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def dicom_files(folder: Path) -> list[Path]:
    """The DICOM files directly inside ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if is_dicom_file(p))


def read_dicom_series(folder: Path, *, pixels: bool) -> tuple[VolumeHeader, list[Any]]:
    """Header of the series in ``folder`` and its slices (pydicom datasets) in stack order;
    ``pixels=False`` reads the tags only (``stop_before_pixels``)."""
    files = dicom_files(folder)
    slices = _read_slices(folder, files, pixels=pixels)
    _check_one_series(folder, files, slices)
    _check_slice_tags(folder, files, slices)
    orient, pixel, size = _common_geometry(folder, files, slices)
    row_dir, col_dir = orient[:3], orient[3:]
    normal = np.cross(row_dir, col_dir)
    order, positions = _stack_order(folder, slices, orient, normal)
    _check_slice_gaps(folder, [files[i].name for i in order], positions, normal)
    affine = _series_affine(row_dir, col_dir, pixel, positions)
    header = VolumeHeader(
        path=folder,
        kind="dicom",
        shape=(size[1], size[0], len(slices)),
        affine=affine,
        spacing=voxel_spacing(affine),
        modality=_modality(slices[0]),
    )
    return header, [slices[i] for i in order]


def stack_slices(folder: Path, header: VolumeHeader, slices: list[Any]) -> np.ndarray:
    """``(columns, rows, slices)`` float32 with the rescale slope/intercept applied."""
    volume = np.empty(header.shape, dtype=np.float32)
    for k, ds in enumerate(slices):
        try:
            pixels = ds.pixel_array  # (rows, columns)
        except Exception as err:  # cut or damaged pixel data, unsupported transfer syntax, ...
            name = Path(str(ds.filename)).name if ds.filename else f"slice {k}"
            raise ValueError(
                f"{folder}: could not decode the pixels of slice {name} (its pixel data are "
                f"truncated or damaged, or compressed without a decoder installed): "
                f"{type(err).__name__}: {err}"
            ) from err
        slope = _rescale(folder, ds, k, "RescaleSlope", 1.0)
        inter = _rescale(folder, ds, k, "RescaleIntercept", 0.0)
        volume[:, :, k] = (pixels.astype(np.float32) * slope + inter).T
    return volume


def _rescale(folder: Path, ds: Any, k: int, tag: str, default: float) -> np.float32:
    """The value of ``tag`` (``RescaleSlope`` / ``RescaleIntercept``) of slice ``k``:
    ``default`` when absent or empty; a value that is not a finite number, or a zero slope
    (every voxel would be the intercept), is refused naming the slice and the tag."""
    raw = ds.get(tag)
    if raw is None or raw == "":
        return np.float32(default)
    name = Path(str(ds.filename)).name if getattr(ds, "filename", None) else f"slice {k}"
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = float("nan")
    if not np.isfinite(value) or (tag == "RescaleSlope" and value == 0.0):
        raise ValueError(
            f"{folder}: slice {name} has {tag} {raw!s}: it must be a finite number"
            f"{' other than 0' if tag == 'RescaleSlope' else ''} (the stored pixel values are "
            "not turned into a guessed scale)"
        )
    return np.float32(value)


def _read_slices(folder: Path, files: Sequence[Path], *, pixels: bool) -> list[Any]:
    """The pydicom dataset of each file (at least one), in the order of ``files``."""
    import pydicom

    if not files:
        raise ValueError(
            f"{folder} holds no DICOM files (nothing named *.dcm or with the DICM marker) "
            "and is not a NIfTI file"
        )
    slices = []
    for file in files:
        try:
            ds = pydicom.dcmread(file, stop_before_pixels=not pixels, force=True)
        except Exception as err:  # InvalidDicomError, EOFError, OSError, ...
            raise ValueError(
                f"{folder}: could not read DICOM file {file.name}: {type(err).__name__}: {err}"
            ) from err
        if len(ds) == 0 or (pixels and not any(tag in ds for tag in _PIXEL_TAGS)):
            raise _damaged(folder, file)
        slices.append(ds)
    return slices


def _damaged(folder: Path, file: Path) -> ValueError:
    """The error for a slice whose full read has no pixel data: pydicom stops quietly at
    the end of a cut file (an empty dataset when the cut is inside compressed pixel data)."""
    return ValueError(
        f"{folder}: slice {file.name} has no readable pixel data: the file is truncated or "
        "damaged (or is not an image)"
    )


def _has_pixel_data(file: Path) -> bool:
    """Whether a full read of ``file`` has pixel data (for the error path)."""
    import pydicom

    try:
        ds = pydicom.dcmread(file, force=True)
    except Exception:  # unreadable: the header read said otherwise, so it is damaged
        return False
    return any(tag in ds for tag in _PIXEL_TAGS)


def _check_one_series(folder: Path, files: Sequence[Path], slices: Sequence[Any]) -> None:
    """One ``SeriesInstanceUID`` and at least 2 single-frame slices."""
    series = sorted({str(ds.get("SeriesInstanceUID", "")) for ds in slices})
    if len(series) > 1 and "" in series:  # a slice without one: cut short before its UID?
        for ds, file in zip(slices, files, strict=True):
            if not ds.get("SeriesInstanceUID") and not _has_pixel_data(file):
                raise _damaged(folder, file)
    if len(series) > 1:
        raise ValueError(
            f"{folder} mixes {len(series)} DICOM series (SeriesInstanceUID "
            f"{', '.join(repr(s) for s in series)}); put each series in its own folder"
        )
    if len(slices) == 1:
        frames = int(slices[0].get("NumberOfFrames", 1) or 1)
        if frames > 1:
            raise ValueError(
                f"{folder}: {files[0].name} is a multi-frame DICOM ({frames} frames), which "
                "is not supported; convert it to NIfTI or to one file per slice"
            )
        raise ValueError(
            f"{folder} holds a single 2D DICOM slice ({files[0].name}); a 3D volume is "
            "needed (a series of at least 2 slices)"
        )


def _check_slice_tags(folder: Path, files: Sequence[Path], slices: Sequence[Any]) -> None:
    """Every slice has the geometry tags, each with its number of finite values, a positive
    pixel spacing, orthogonal unit orientation vectors, and one sample per pixel."""
    for ds, file in zip(slices, files, strict=True):
        values = {tag: _tag_values(folder, file, ds, tag, n) for tag, n in _GEOMETRY_TAGS.items()}
        pixel = values["PixelSpacing"]
        if not np.all(pixel > 0):
            raise ValueError(
                f"{folder}: slice {file.name} has PixelSpacing {pixel.tolist()}: the pixel "
                "spacing must be positive; the voxel size is not guessed"
            )
        row, col = values["ImageOrientationPatient"][:3], values["ImageOrientationPatient"][3:]
        norms = np.array([np.linalg.norm(row), np.linalg.norm(col)])
        if np.any(np.abs(norms - 1) > _ORIENTATION_ATOL) or abs(row @ col) > _ORIENTATION_ATOL:
            raise ValueError(
                f"{folder}: slice {file.name} has ImageOrientationPatient "
                f"{values['ImageOrientationPatient'].tolist()}: the row and column directions "
                "must be orthogonal unit vectors"
            )
        if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
            raise ValueError(f"{folder}: slice {file.name} is a colour image, not CT/MRI")
        for tag in ("Rows", "Columns"):
            if not isinstance(ds.get(tag), int) or ds.get(tag) < 1:
                raise ValueError(
                    f"{folder}: slice {file.name} has {tag} {ds.get(tag)!r}: a positive number "
                    "of pixels is needed"
                )


def _tag_values(folder: Path, file: Path, ds: Any, tag: str, count: int) -> np.ndarray:
    """The ``count`` finite numbers of ``tag`` in slice ``ds`` (a named error otherwise)."""
    try:
        value = ds.get(tag)
    except Exception:  # a value pydicom cannot convert
        value = None
    if value is None or (isinstance(value, str | bytes) and not value.strip()):
        if not _has_pixel_data(file):
            raise _damaged(folder, file)
        raise ValueError(
            f"{folder}: slice {file.name} has no {tag}, so the voxel spacing and position "
            "cannot be known"
        )
    items = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    try:
        numbers = np.array([float(v) for v in items], dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{folder}: slice {file.name} has {tag} {value!r}: not numbers") from None
    if numbers.size != count:
        raise ValueError(
            f"{folder}: slice {file.name} has {tag} with {numbers.size} values "
            f"{numbers.tolist()}; {count} are needed"
        )
    if not np.all(np.isfinite(numbers)):
        raise ValueError(f"{folder}: slice {file.name} has non-finite {tag} {numbers.tolist()}")
    return numbers


def _common_geometry(
    folder: Path, files: Sequence[Path], slices: Sequence[Any]
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """The orientation ``(6,)``, pixel spacing ``(2,)`` (row, column) and ``(rows,
    columns)`` shared by all slices (those of the first; an error names a slice that
    differs)."""
    first, first_file = slices[0], files[0]
    orient = np.asarray(first.ImageOrientationPatient, dtype=np.float64)
    pixel = np.asarray(first.PixelSpacing, dtype=np.float64)
    size = (int(first.Rows), int(first.Columns))
    for ds, file in zip(slices, files, strict=True):
        mismatch = None
        if not np.allclose(np.asarray(ds.ImageOrientationPatient, float), orient, atol=1e-4):
            mismatch = f"ImageOrientationPatient {list(ds.ImageOrientationPatient)}"
        elif not np.allclose(np.asarray(ds.PixelSpacing, float), pixel, atol=1e-4):
            mismatch = f"PixelSpacing {list(ds.PixelSpacing)}"
        elif (int(ds.Rows), int(ds.Columns)) != size:
            mismatch = f"size {int(ds.Rows)}x{int(ds.Columns)}"
        if mismatch is not None:
            raise ValueError(
                f"{folder}: slice {file.name} has {mismatch}, unlike {first_file.name}; "
                "the slices do not form one volume"
            )
    return orient, pixel, size


def _stack_order(
    folder: Path, slices: Sequence[Any], orient: np.ndarray, normal: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The stack order of the slices (indices, sorted along the slice ``normal``, in the
    direction of increasing ``InstanceNumber``) and their ``(n, 3)`` positions in that
    order."""
    positions = np.array([np.asarray(ds.ImagePositionPatient, float) for ds in slices])
    if not np.isfinite(positions).all() or not np.isfinite(orient).all():
        raise ValueError(f"{folder}: non-finite ImagePositionPatient/ImageOrientationPatient")
    order = np.argsort(positions @ normal, kind="stable")
    numbers = [_int_or_none(ds.get("InstanceNumber")) for ds in slices]
    first_n, last_n = numbers[order[0]], numbers[order[-1]]
    if first_n is not None and last_n is not None and first_n > last_n:
        order = order[::-1]  # stack in acquisition order, as MONAI's PydicomReader does
    return order, positions[order]


def _check_slice_gaps(
    folder: Path, names: Sequence[str], positions: np.ndarray, normal: np.ndarray
) -> None:
    """Distinct positions and even gaps along ``normal`` between the stacked slices
    (``names`` and ``positions`` in stack order): within :data:`SLICE_GAP_RTOL` of the
    median gap (or :data:`SLICE_GAP_ATOL_MM`)."""
    gaps = np.abs(np.diff(positions @ normal))  # (n - 1,) mm between neighbouring slices
    median = float(np.median(gaps))
    if median <= SLICE_GAP_ATOL_MM or gaps.min() <= SLICE_GAP_ATOL_MM:
        k = int(np.argmin(gaps))
        raise ValueError(
            f"{folder}: slices {names[k]} and {names[k + 1]} are at the same position "
            f"{positions[k].tolist()}; duplicated slices or several series"
        )
    worst = int(np.argmax(np.abs(gaps - median)))
    if abs(gaps[worst] - median) > max(SLICE_GAP_RTOL * median, SLICE_GAP_ATOL_MM):
        raise ValueError(
            f"{folder} has inconsistent slice spacing: gaps from {gaps.min():.4g} to "
            f"{gaps.max():.4g} mm (median {median:.4g}), e.g. {gaps[worst]:.4g} mm between "
            f"{names[worst]} and {names[worst + 1]}; slices are missing or the series is "
            "irregular"
        )


def _series_affine(
    row_dir: np.ndarray, col_dir: np.ndarray, pixel: np.ndarray, positions: np.ndarray
) -> np.ndarray:
    """Voxel → RAS mm: axis 0 along a row (column spacing), axis 1 down a column (row
    spacing), axis 2 from the first to the last of the stacked ``positions``."""
    n = len(positions)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * pixel[1]  # axis 0: along a row (next column), column spacing
    lps[:3, 1] = col_dir * pixel[0]  # axis 1: down a column (next row), row spacing
    lps[:3, 2] = (positions[-1] - positions[0]) / (n - 1)
    lps[:3, 3] = positions[0]
    return _LPS_TO_RAS @ lps


def _modality(ds: Any) -> Modality | None:
    """``"ct"`` / ``"mri"`` from the ``Modality`` tag (``CT`` / ``MR``), else ``None``."""
    tag = str(ds.get("Modality", "")).upper()
    return "ct" if tag == "CT" else "mri" if tag == "MR" else None


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
