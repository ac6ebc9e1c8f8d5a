"""The deterministic preprocessing of a CT/MRI volume, shared by training and inference.

Channel-first, reoriented to RAS, resampled to a target spacing, intensity-normalized by
modality (CT: a HU window mapped to [0, 1]; MRI: the 0.5–99.5 percentile range of each
channel mapped to [0, 1]). All steps are MONAI transforms on ``MetaTensor``s, so the spatial
ones can be inverted to put a prediction back on the input's own grid. Resampling computes
in float32 (MONAI's default is float64, a whole-volume intermediate twice the size).

:func:`apply_volume_transform` is how a loaded volume goes through it: the resampled size is
estimated first (:func:`resampled_shape`: each axis's extent over the target spacing) and
refused above the per-allocation limit with the file's name
(:func:`~domainfm.core.size_guard.check_allocation`), so absurd voxel sizes never reach
MONAI; so is the padding to a training crop larger than the volume (``min_size``), and a
crop size that is absurd whatever the volume (:func:`check_crop`, before any file is read).
A failure inside MONAI becomes one ``ValueError`` naming the file and the cause
(:func:`failure_naming`) instead of MONAI's "applying transform <object repr>".

:class:`VolumePreprocessing` holds the settings a dataset preprocesses all its volumes with,
checked once when it is built (a configuration error, before any file is read).

Example::

    >>> transform = volume_transform(spacing=(3.0, 3.0, 3.0), modality="ct")
    >>> x = transform("ct.nii.gz")        # MetaTensor (1, D, H, W), affine in x.affine
    >>> x = apply_volume_transform(transform, load_volume("ct.nii.gz").to_metatensor(),
    ...                            spacing=(3.0, 3.0, 3.0), source="ct.nii.gz")
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from domainfm.core.size_guard import check_allocation
from domainfm.domains.medical3d.contract import (
    check_hu_window,
    check_spacing,
    intensity_transform,
)
from domainfm.domains.medical3d.volume_types import Geometry, check_geometry_choice, voxel_spacing

RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))

RESAMPLE_BYTES_PER_VOXEL = 16
"""The largest single allocation of MONAI's resampling, per output voxel: its sampling grid
of 4 homogeneous float32 coordinates (measured; the output itself is 4 bytes per channel)."""


@dataclass(frozen=True, kw_only=True)
class VolumePreprocessing:
    """The settings every volume of a dataset is preprocessed with, checked when built.

    Attributes:
        spacing: target voxel spacing in mm (one value or three).
        modality: ``"ct"`` (HU window) or ``"mri"`` (percentile scaling).
        hu_window: HU range mapped to [0, 1] for CT.
        geometry: which transform places the voxels of a NIfTI file whose qform and sform
            disagree: ``"strict"`` refuses such a file, ``"sform"`` / ``"qform"`` assume that
            one (see :func:`~domainfm.domains.medical3d.io.load_volume`).

    Raises:
        ValueError: naming the first setting that is invalid.
    """

    spacing: float | Sequence[float] = 3.0
    modality: Literal["ct", "mri"] = "ct"
    hu_window: tuple[float, float] = (-1000.0, 1000.0)
    geometry: Geometry = "strict"

    def __post_init__(self) -> None:
        check_geometry_choice(self.geometry)
        if self.modality not in ("ct", "mri"):
            raise ValueError(f"modality must be 'ct' or 'mri', got {self.modality!r}")
        check_spacing(self.spacing)
        check_hu_window(self.hu_window)

    def as_kwargs(self) -> dict[str, Any]:
        """The settings as keyword arguments of the functions that preprocess a file, the
        spacing as three values."""
        spacing = self.spacing
        pixdim = (float(spacing),) * 3 if isinstance(spacing, int | float) else tuple(spacing)
        return {
            "spacing": pixdim,
            "modality": self.modality,
            "hu_window": self.hu_window,
            "geometry": self.geometry,
        }


def volume_transform(
    *,
    spacing: Sequence[float],
    modality: Literal["ct", "mri"],
    hu_window: tuple[float, float] = (-1000.0, 1000.0),
    min_size: Sequence[int] | None = None,
    load: bool = True,
) -> Any:
    """A MONAI ``Compose``: [load →] RAS → spacing → intensity [→ pad to ``min_size``].

    Args:
        spacing: target voxel spacing in mm (3 values).
        modality: ``"ct"`` or ``"mri"``.
        hu_window: HU range mapped to [0, 1] for CT.
        min_size: pad each spatial axis to at least this size (training crops).
        load: start with ``LoadImage`` (the input is a path); otherwise the input is a
            channel-first ``MetaTensor``.
    """
    from monai import transforms as mt

    if modality not in ("ct", "mri"):
        raise ValueError(f"modality must be 'ct' or 'mri', got {modality!r}")
    steps: list[Callable[..., Any]] = []
    if load:
        steps.append(mt.LoadImage(image_only=True, ensure_channel_first=True))
    steps += [
        mt.Orientation(axcodes="RAS", labels=RAS_LABELS),
        mt.Spacing(pixdim=tuple(spacing), mode="bilinear", dtype=np.float32),
    ]
    steps.append(intensity_transform(modality, hu_window))
    if min_size is not None:
        steps.append(mt.SpatialPad(spatial_size=tuple(min_size)))
    return mt.Compose(steps)


def resampled_shape(
    shape: Sequence[int], affine: Any, spacing: Sequence[float]
) -> tuple[float, float, float]:
    """The spatial shape (RAS order, as floats so absurd sizes never overflow) of a volume of
    ``shape`` with ``affine`` after reorientation to RAS and resampling to ``spacing`` mm:
    along each axis, the span of its voxel centres over the target spacing of its RAS axis,
    plus one (as MONAI's ``Spacing`` computes it)."""
    from nibabel.orientations import io_orientation

    if len(spacing) != 3 or not all(math.isfinite(float(v)) and float(v) > 0 for v in spacing):
        raise ValueError(f"the target spacing must be 3 positive mm values, got {spacing!r}")
    matrix = np.asarray(affine, dtype=np.float64)
    sizes = voxel_spacing(matrix)
    out = [float(n) for n in shape[:3]]  # a degenerate affine keeps the file's axes
    try:
        ras_axes = [int(a) for a in io_orientation(matrix)[:, 0]]
    except ValueError:
        ras_axes = [0, 1, 2]
    if sorted(ras_axes) != [0, 1, 2]:
        ras_axes = [0, 1, 2]
    for axis, ras in enumerate(ras_axes):  # MONAI: the corner voxels' span, plus one
        size = (float(shape[axis]) - 1.0) * sizes[axis] / float(spacing[ras])
        out[ras] = float(math.floor(size + 0.5)) + 1.0 if math.isfinite(size) else size
    return out[0], out[1], out[2]


def check_crop(crop: Sequence[int], *, channels: int = 1, source: str | Path | None = None) -> None:
    """Refuse a training crop whose ``channels`` float32 voxels alone exceed the
    per-allocation limit (every sample is at least that large, whatever the volume)."""
    sizes = [float(n) for n in crop]
    check_allocation(
        4.0 * channels * math.prod(sizes),
        what=f"a training crop of {' x '.join(f'{n:.0f}' for n in sizes)} voxels",
        source=source,
    )


def check_resample(
    source: str | Path,
    shape: Sequence[int],
    affine: Any,
    spacing: Sequence[float],
    channels: int,
    min_size: Sequence[int] | None = None,
) -> tuple[float, float, float]:
    """:func:`resampled_shape`, after refusing a resampling whose largest allocation (the
    sampling grid, :data:`RESAMPLE_BYTES_PER_VOXEL`, or the ``channels`` float32 output)
    exceeds the per-allocation limit, naming ``source``; with ``min_size``, likewise the
    float32 volume padded to at least that size along each axis."""
    out = resampled_shape(shape, affine, spacing)
    voxels = out[0] * out[1] * out[2]
    nbytes = voxels * max(RESAMPLE_BYTES_PER_VOXEL, 4 * channels)
    grid = " x ".join(f"{n:.0f}" for n in out)
    check_allocation(
        nbytes,
        what=f"resampling to {tuple(float(v) for v in spacing)} mm spacing (a {grid} grid)",
        source=source,
    )
    if min_size is not None:
        padded = [max(n, float(m)) for n, m in zip(out, min_size, strict=True)]
        check_allocation(
            4.0 * channels * math.prod(padded),
            what=(
                f"padding the resampled {grid} grid to the training crop size "
                f"({' x '.join(f'{n:.0f}' for n in padded)})"
            ),
            source=source,
        )
    return out


def apply_volume_transform(
    transform: Callable[[Any], Any],
    image: Any,
    *,
    spacing: Sequence[float],
    source: str | Path,
    min_size: Sequence[int] | None = None,
) -> Any:
    """``transform(image)`` (a :func:`volume_transform` with ``load=False`` on a channel-first
    ``MetaTensor``, padding to ``min_size`` when given) after :func:`check_resample`; MONAI's
    errors become one ``ValueError`` naming ``source`` (:func:`failure_naming`)."""
    check_resample(
        source, tuple(image.shape[1:]), image.affine, spacing, int(image.shape[0]), min_size
    )
    try:
        return transform(image)
    except Exception as err:  # MONAI's RuntimeError("applying transform <repr>"), torch's ...
        raise failure_naming(source, "preprocessing (RAS, resampling, intensity)", err) from err


def failure_naming(source: str | Path, what: str, err: BaseException) -> ValueError:
    """One ``ValueError`` ``"<source>: <what> failed: <cause>"``: the error MONAI wrapped
    (its ``Compose`` raises ``RuntimeError("applying transform <repr>")`` from it), on one
    line."""
    cause = err
    while (
        isinstance(cause, RuntimeError)
        and str(cause).startswith("applying transform")
        and cause.__cause__ is not None
    ):
        cause = cause.__cause__
    lines = str(cause).strip().splitlines()
    return ValueError(
        f"{source}: {what} failed: {type(cause).__name__}: {lines[0] if lines else ''}"
    )
