"""Reading one CT/MRI volume, with clear errors: a NIfTI file or a DICOM series folder.

:func:`load_volume` returns a :class:`Volume`: a float32 array ``(C, D, H, W)`` (``C = 1``)
whose axes **follow the file's voxel axes** (no reorientation, no resampling) and the
``affine`` that maps voxel indices ``(i, j, k, 1)`` to **RAS world millimetres** (the
convention of nibabel and MONAI). So ``array[0, i, j, k]`` lies at ``affine @ (i, j, k, 1)``.

* **NIfTI** (``.nii`` / ``.nii.gz``, nibabel): values with the header's scaling applied, the
  image's affine (sform, else qform).
* **DICOM series folder** (pydicom): every DICOM file directly inside the folder (suffix
  ``.dcm``, or the ``DICM`` marker at byte 128) is one slice. Slices are sorted by their
  position along the slice normal (``ImageOrientationPatient`` row × column direction),
  stacked in the direction of increasing ``InstanceNumber`` (as MONAI's ``PydicomReader``
  does, so both give the same affine), with ``RescaleSlope``/``RescaleIntercept`` applied.
  Axis 0 runs along the image rows' direction (columns of the pixel matrix), axis 1 along the
  columns' direction, axis 2 across slices; spacing = ``PixelSpacing`` (column, row) and the
  distance between consecutive ``ImagePositionPatient``; DICOM's LPS world is flipped to RAS.

Everything that is wrong with an input is a ``ValueError`` (``FileNotFoundError`` when it does
not exist) whose message names the file and the problem: truncated or corrupt NIfTI, a DICOM
folder mixing several series, slices without ``PixelSpacing`` / ``ImagePositionPatient``,
uneven slice gaps (missing slices), a 2D image, a 4D image (unless the 4th axis has size 1),
a constant (e.g. all-zero) volume, NaN or infinite values.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn

import numpy as np

Modality = Literal["ct", "mri"]
VolumeKind = Literal["nifti", "dicom"]

CT_AIR_THRESHOLD = -500.0
"""NIfTI modality heuristic: integer data with at least :data:`CT_AIR_FRACTION` of its voxels
below this value (air, in Hounsfield units) is CT."""
CT_AIR_FRACTION = 0.01
SLICE_GAP_RTOL = 0.05
"""Relative tolerance of DICOM slice gaps around their median (larger: missing slices)."""
SLICE_GAP_ATOL_MM = 0.01
"""Absolute tolerance (mm) of DICOM slice gaps, for positions rounded in the headers."""
LABEL_GRID_ATOL_MM = 1e-3
"""Largest world distance (mm) between the corners of an image grid and its label's grid."""

_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


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
            (its heuristic needs the voxel values, see :func:`load_volume`).
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
            axes (see the module docstring), C-contiguous.
        affine: ``(4, 4)`` float64, voxel indices ``(i, j, k, 1)`` → RAS world mm.
        spacing: voxel size in mm along ``(D, H, W)``.
        modality: hint ``"ct"`` / ``"mri"`` / ``None`` (see the module docstring).
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


def is_nifti(path: Path) -> bool:
    """Whether ``path`` is named like a NIfTI file (``.nii`` or ``.nii.gz``)."""
    return path.name.lower().endswith(_NIFTI_SUFFIXES)


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


def read_header(path: str | Path) -> VolumeHeader:
    """The geometry of a NIfTI file or DICOM series folder from its headers only (NIfTI
    header / DICOM tags with ``stop_before_pixels``), with the same shape and geometry checks
    as :func:`load_volume` (not the value checks, which need the voxels).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unreadable, 2D, 4D, or a DICOM series with broken geometry.
    """
    source = _existing(path)
    if source.is_dir():
        return _dicom_series(source, pixels=False)[0]
    if is_nifti(source):
        return _nifti_header(source, _open_nifti(source))
    _not_a_volume(source)


def load_volume(path: str | Path, *, allow_constant: bool = False) -> Volume:
    """Load and validate a 3D volume: a NIfTI file or a DICOM series folder.

    Args:
        path: a ``.nii`` / ``.nii.gz`` file, or a folder holding one DICOM series.
        allow_constant: accept a volume whose voxels all have the same value (e.g. an empty
            label map); by default that is an error (a blank scan).

    Returns:
        A :class:`Volume`: ``array`` ``(1, D, H, W)`` float32 on the file's voxel axes,
        ``affine`` voxel → RAS mm, ``spacing`` in mm, ``modality`` hint, ``path``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the message names the file and the problem (see the module docstring).
    """
    source = _existing(path)
    if source.is_dir():
        header, slices = _dicom_series(source, pixels=True)
        array = _stack_slices(source, header, slices)
        _check_values(source, array, allow_constant=allow_constant)
        modality: Modality | None = header.modality
    elif is_nifti(source):
        image = _open_nifti(source)
        header = _nifti_header(source, image)
        try:
            data = np.asarray(image.dataobj, dtype=np.float32)
        except Exception as err:  # EOFError, zlib.error, OSError, ... for truncated files
            raise ValueError(
                f"could not read {source} as NIfTI: {type(err).__name__}: {err} "
                "(the file is truncated or corrupt)"
            ) from err
        array = np.ascontiguousarray(data.reshape(header.shape))
        vmin = _check_values(source, array, allow_constant=allow_constant)
        modality = "ct" if _integer_valued(image) and _has_air(array, vmin) else None
    else:
        _not_a_volume(source)
    return Volume(
        array=array[None],  # (1, D, H, W)
        affine=header.affine,
        spacing=header.spacing,
        modality=modality,
        path=source,
    )


def check_label_pair(image: Volume | VolumeHeader | str | Path, label: Volume | str | Path) -> None:
    """Check that ``label`` is a label map of ``image``: the same voxel grid and integer
    values ``>= 0``.

    The grids are compared after reorienting both to the closest RAS axes (so a label map
    stored with flipped or permuted axes, which lies on the same voxels, passes): equal
    shape, and the grid corners within :data:`LABEL_GRID_ATOL_MM` mm of each other. Paths
    are read with :func:`read_header` (image) and :func:`load_volume` (label, which may be
    all background).

    Raises:
        ValueError: naming both files, on a shape or affine mismatch or non-integer or
            negative label values.

    Example::

        >>> check_label_pair("ct.nii.gz", "ct_seg.nii.gz")
    """
    img = image if isinstance(image, Volume | VolumeHeader) else read_header(image)
    lab = label if isinstance(label, Volume) else load_volume(label, allow_constant=True)
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


# --- NIfTI ---------------------------------------------------------------------------------


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


def _open_nifti(source: Path) -> Any:
    import nibabel as nib

    try:
        return nib.load(str(source))
    except Exception as err:  # nibabel raises several types for unreadable files
        raise ValueError(
            f"could not read {source} as NIfTI: {type(err).__name__}: {err} "
            "(the file is truncated, corrupt or not NIfTI)"
        ) from err


def _nifti_header(source: Path, image: Any) -> VolumeHeader:
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
    affine = np.asarray(image.affine, dtype=np.float64)
    return VolumeHeader(
        path=source,
        kind="nifti",
        shape=(shape[0], shape[1], shape[2]),
        affine=affine,
        spacing=_spacing(affine),
        modality=None,
    )


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


def _spacing(affine: np.ndarray) -> tuple[float, float, float]:
    sx, sy, sz = np.linalg.norm(affine[:3, :3], axis=0)
    return (float(sx), float(sy), float(sz))


def _ras_grid(shape: Sequence[int], affine: np.ndarray) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape and affine of the grid reoriented to the closest RAS axes (no resampling)."""
    from nibabel import orientations

    ornt = orientations.io_orientation(affine)  # (3, 2): output axis, flip per input axis
    ras_affine = affine @ orientations.inv_ornt_aff(ornt, tuple(shape))
    ras_shape = [0, 0, 0]
    for axis, (out_axis, _) in enumerate(ornt):
        ras_shape[int(out_axis)] = int(shape[axis])
    return tuple(ras_shape), ras_affine


# --- DICOM ---------------------------------------------------------------------------------


def _dicom_series(folder: Path, *, pixels: bool) -> tuple[VolumeHeader, list[Any]]:
    """Header of the series in ``folder`` and its slices (pydicom datasets) in stack order."""
    import pydicom

    files = dicom_files(folder)
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
        slices.append(ds)
    series = sorted({str(ds.get("SeriesInstanceUID", "")) for ds in slices})
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
    for ds, file in zip(slices, files, strict=True):
        for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            if ds.get(tag) is None:
                raise ValueError(
                    f"{folder}: slice {file.name} has no {tag}, so the voxel spacing and "
                    "position cannot be known"
                )
        if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
            raise ValueError(f"{folder}: slice {file.name} is a colour image, not CT/MRI")

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
    row_dir, col_dir = orient[:3], orient[3:]
    normal = np.cross(row_dir, col_dir)
    positions = np.array([np.asarray(ds.ImagePositionPatient, float) for ds in slices])
    if not np.isfinite(positions).all() or not np.isfinite(orient).all():
        raise ValueError(f"{folder}: non-finite ImagePositionPatient/ImageOrientationPatient")
    order = np.argsort(positions @ normal, kind="stable")
    numbers = [_int_or_none(ds.get("InstanceNumber")) for ds in slices]
    first_n, last_n = numbers[order[0]], numbers[order[-1]]
    if first_n is not None and last_n is not None and first_n > last_n:
        order = order[::-1]  # stack in acquisition order, as MONAI's PydicomReader does
    positions = positions[order]
    gaps = np.abs(np.diff(positions @ normal))  # (n - 1,) mm between neighbouring slices
    median = float(np.median(gaps))
    names = [files[i].name for i in order]
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
    n = len(slices)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * pixel[1]  # axis 0: along a row (next column), column spacing
    lps[:3, 1] = col_dir * pixel[0]  # axis 1: down a column (next row), row spacing
    lps[:3, 2] = (positions[-1] - positions[0]) / (n - 1)
    lps[:3, 3] = positions[0]
    affine = _LPS_TO_RAS @ lps
    tag = str(first.get("Modality", "")).upper()
    modality: Modality | None = "ct" if tag == "CT" else "mri" if tag == "MR" else None
    header = VolumeHeader(
        path=folder,
        kind="dicom",
        shape=(size[1], size[0], n),
        affine=affine,
        spacing=_spacing(affine),
        modality=modality,
    )
    return header, [slices[i] for i in order]


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _stack_slices(folder: Path, header: VolumeHeader, slices: list[Any]) -> np.ndarray:
    """``(columns, rows, slices)`` float32 with the rescale slope/intercept applied."""
    volume = np.empty(header.shape, dtype=np.float32)
    for k, ds in enumerate(slices):
        try:
            pixels = ds.pixel_array  # (rows, columns)
        except Exception as err:  # missing pixel data, unsupported transfer syntax, ...
            name = Path(str(ds.filename)).name if ds.filename else f"slice {k}"
            raise ValueError(
                f"{folder}: could not decode the pixels of {name}: {type(err).__name__}: {err}"
            ) from err
        slope = np.float32(ds.get("RescaleSlope", 1.0) or 1.0)
        inter = np.float32(ds.get("RescaleIntercept", 0.0) or 0.0)
        volume[:, :, k] = (pixels.astype(np.float32) * slope + inter).T
    return volume
