"""Whole-volume segmentation: sliding-window inference written back as NIfTI in input space.

The volume is preprocessed exactly as in training (:func:`volume_transform`: RAS, target
spacing, intensity normalization), segmented with MONAI's ``sliding_window_inference``
(Gaussian-blended overlapping windows, any volume size), the label map is taken back through
the inverse of the spatial preprocessing with nearest-neighbour interpolation, and written
with the **input's own affine and header**, so it lies exactly over the scan in a viewer.

The input is read and validated once by :func:`~domainfm.domains.medical3d.io.load_volume`
(clear errors naming the file; ``geometry`` for a NIfTI whose qform and sform disagree).
It may also be a **DICOM series folder**: there is no NIfTI header to copy, so the label map
is written on the series' voxel grid (``(columns, rows, slices)``) with the series' RAS
affine from ``load_volume`` (sform and qform, code 1).

**Size guards**: before any computation the resampled volume
(:func:`~domainfm.domains.medical3d.preprocess.check_resample`) and the sliding-window
buffers (``num_classes`` + 1 float32 volumes at the model's spacing: the class scores and the
blending weights) are estimated and refused above the per-allocation limit
(:func:`~domainfm.core.size_guard.check_allocation`), naming the file. MONAI's errors while
preprocessing or restoring the label map become one ``ValueError`` naming the file.

Example::

    >>> segment_volume(model, "ct.nii.gz", "ct_seg.nii.gz", roi_size=96, spacing=1.5,
    ...                modality="ct")
    PosixPath('ct_seg.nii.gz')
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
from torch import Tensor

from domainfm.core.checkpoint_io import atomic_write
from domainfm.core.grid import to_ntuple
from domainfm.core.size_guard import check_allocation
from domainfm.domains.medical3d.io import load_volume
from domainfm.domains.medical3d.preprocess import (
    apply_volume_transform,
    check_resample,
    failure_naming,
    volume_transform,
)
from domainfm.domains.medical3d.volume_types import Geometry


def segment_volume(
    model: Callable[[Tensor], Tensor],
    image: str | Path,
    out_path: str | Path,
    *,
    roi_size: int | Sequence[int],
    spacing: float | Sequence[float],
    modality: Literal["ct", "mri"],
    hu_window: tuple[float, float] = (-1000.0, 1000.0),
    overlap: float = 0.5,
    sw_batch_size: int = 2,
    blend: Literal["gaussian", "constant"] = "gaussian",
    device: str | torch.device | None = None,
    progress: bool = False,
    geometry: Geometry = "strict",
    num_classes: int | None = None,
) -> Path:
    """Segment a NIfTI volume or DICOM series and write the label map as NIfTI on the input's
    grid.

    Args:
        model: ``(B, C, *roi) → (B, num_classes, *roi)`` logits (e.g. a ``FinetuneModule``).
        image: input NIfTI path (3D, one channel) or DICOM series folder.
        out_path: output NIfTI path (written atomically).
        roi_size: sliding-window size in voxels of the preprocessed volume.
        spacing: the spacing the model was trained at, in mm.
        modality: ``"ct"`` or ``"mri"`` (intensity normalization as in training).
        hu_window: HU window for CT.
        overlap: window overlap fraction in [0, 1).
        sw_batch_size: windows per forward pass.
        blend: ``"gaussian"`` (seamless) or ``"constant"`` weighting of overlapping windows.
        device: where the model runs (default: the model's device, else CPU).
        progress: show a progress bar over windows.
        geometry: which transform places the voxels of a NIfTI input whose qform and sform
            disagree: ``"strict"`` (default) refuses it, ``"sform"`` / ``"qform"`` assume
            that one (see :func:`~domainfm.domains.medical3d.io.load_volume`).
        num_classes: the model's output channels, for the size guard (default: the
            model's ``num_classes``, else one forward pass of an empty window).

    Returns:
        ``out_path``. The file has the input's shape, affine and header (a DICOM series: its
        voxel grid and RAS affine), integer labels.

    Raises:
        FileNotFoundError: ``image`` does not exist.
        ValueError: an invalid input (corrupt, 2D, 4D, constant, broken DICOM series, ...,
            see :func:`~domainfm.domains.medical3d.io.load_volume`) or argument;
            :class:`~domainfm.core.size_guard.AllocationTooLarge` when the resampled volume or
            the sliding-window buffers would exceed the per-allocation limit.
    """
    import nibabel as nib
    from monai.data import MetaTensor
    from monai.inferers import sliding_window_inference
    from monai.transforms.utils import convert_applied_interp_mode

    source = Path(image)
    volume = load_volume(source, geometry=geometry)  # (1, D, H, W) on the input's grid
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got overlap={overlap}")
    pixdim = (float(spacing),) * 3 if isinstance(spacing, int | float) else tuple(spacing)
    roi = to_ntuple(roi_size, 3, name="roi_size")
    if device is None:
        params = getattr(model, "parameters", None)
        first = next(iter(params()), None) if callable(params) else None
        device = first.device if first is not None else torch.device("cpu")
    shape = check_resample(source, volume.shape, volume.affine, pixdim, channels=1)
    classes = num_classes or getattr(model, "num_classes", None) or _probe(model, roi, device)
    _check_window_buffers(source, shape, roi, int(classes))
    transform = volume_transform(spacing=pixdim, modality=modality, hu_window=hu_window, load=False)
    x = apply_volume_transform(  # MetaTensor (1, D, H, W) in RAS at the target spacing
        transform, volume.to_metatensor(), spacing=pixdim, source=source
    )
    with torch.no_grad():
        logits = cast(
            Tensor,
            sliding_window_inference(
                x[None].as_tensor().to(device),
                roi_size=roi,
                sw_batch_size=sw_batch_size,
                predictor=model,
                overlap=overlap,
                mode=blend,
                progress=progress,
            ),
        )  # (1, num_classes, D, H, W)
    labels = logits.argmax(dim=1).to(torch.float32).cpu()  # (1, D, H, W)
    pred = MetaTensor(labels, meta=dict(x.meta))  # carries the preprocessed affine
    pred.applied_operations = convert_applied_interp_mode(
        x.applied_operations, mode="nearest", align_corners=None
    )
    try:
        restored = transform.inverse(pred)  # back to the input's orientation and grid
    except Exception as err:  # MONAI's errors: name the file
        raise failure_naming(source, "restoring the label map to the input grid", err) from err
    array = np.rint(restored.as_tensor().numpy()[0])  # (D, H, W) on the input's grid
    if array.shape != volume.shape:
        raise RuntimeError(
            f"inverted prediction has shape {array.shape}, input {source} has {volume.shape}"
        )
    num_classes = logits.shape[1]
    dtype = np.uint8 if num_classes <= 256 else np.uint16
    if source.is_dir():  # DICOM series: no header to copy, the series' RAS affine
        out = nib.Nifti1Image(array.astype(dtype), volume.affine)
        out.set_sform(volume.affine, code=1)
        out.set_qform(volume.affine, code=1)
        out.header.set_xyzt_units("mm")
    else:
        reference: Any = nib.load(str(source))  # header only (the data were read above)
        header = reference.header.copy()
        header.set_data_dtype(dtype)
        header["scl_slope"], header["scl_inter"] = 1.0, 0.0
        out = nib.Nifti1Image(array.astype(dtype), reference.affine, header)
    target = Path(out_path)
    suffix = ".nii.gz" if target.name.endswith(".nii.gz") else target.suffix or ".nii"
    return atomic_write(target, lambda tmp: _save_nifti(out, tmp, suffix))


def _probe(model: Callable[[Tensor], Tensor], roi: Sequence[int], device: Any) -> int:
    """The number of output channels of ``model``, from one empty window."""
    with torch.no_grad():
        out = model(torch.zeros((1, 1, *roi), device=device))
    return int(out.shape[1])


def _check_window_buffers(
    source: Path, shape: Sequence[float], roi: Sequence[int], num_classes: int
) -> None:
    """Refuse sliding-window buffers (``num_classes`` score volumes + the blending weights,
    float32, on the resampled grid padded to at least one window) above the limit."""
    voxels = float(np.prod([max(float(n), float(r)) for n, r in zip(shape, roi, strict=True)]))
    grid = " x ".join(f"{max(float(n), float(r)):.0f}" for n, r in zip(shape, roi, strict=True))
    check_allocation(
        4.0 * voxels * (num_classes + 1),
        what=f"the sliding-window buffers ({num_classes} classes + weights over {grid} voxels)",
        source=source,
    )


def _save_nifti(image: Any, tmp: Path, suffix: str) -> None:
    """nibabel picks compression from the file name: save under the right suffix, then move."""
    import nibabel as nib

    named = tmp.parent / (tmp.name + suffix)
    nib.save(image, str(named))
    named.replace(tmp)
