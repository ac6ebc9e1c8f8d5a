"""Whole-volume segmentation: sliding-window inference written back as NIfTI in input space.

The volume is preprocessed exactly as in training (:func:`volume_transform`: RAS, target
spacing, intensity normalization), segmented with MONAI's ``sliding_window_inference``
(Gaussian-blended overlapping windows, any volume size), the label map is taken back through
the inverse of the spatial preprocessing with nearest-neighbour interpolation, and written
with the **input's own affine and header**, so it lies exactly over the scan in a viewer.

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
from domainfm.domains.medical3d.preprocess import volume_transform


def _load_reference(path: Path) -> Any:
    """The input as a nibabel image, for its shape, affine and header."""
    import nibabel as nib

    if not path.exists():
        raise FileNotFoundError(f"volume {path} does not exist")
    try:
        image: Any = nib.load(str(path))
    except Exception as err:  # nibabel raises several types for unreadable files
        raise ValueError(f"could not read {path} as NIfTI: {err}") from err
    if len(image.shape) != 3:
        raise ValueError(f"{path} has shape {image.shape}; segment_volume takes a 3D volume")
    return image


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
) -> Path:
    """Segment a NIfTI volume and write the label map as NIfTI on the input's grid.

    Args:
        model: ``(B, C, *roi) → (B, num_classes, *roi)`` logits (e.g. a ``FinetuneModule``).
        image: input NIfTI path (3D, one channel).
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

    Returns:
        ``out_path``. The file has the input's shape, affine and header, integer labels.
    """
    import nibabel as nib
    from monai.data import MetaTensor
    from monai.inferers import sliding_window_inference
    from monai.transforms.utils import convert_applied_interp_mode

    source = Path(image)
    reference = _load_reference(source)
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got overlap={overlap}")
    pixdim = (float(spacing),) * 3 if isinstance(spacing, int | float) else tuple(spacing)
    roi = to_ntuple(roi_size, 3, name="roi_size")
    transform = volume_transform(spacing=pixdim, modality=modality, hu_window=hu_window)
    x = transform(str(source))  # MetaTensor (1, D, H, W) in RAS at the target spacing
    if device is None:
        params = getattr(model, "parameters", None)
        first = next(iter(params()), None) if callable(params) else None
        device = first.device if first is not None else torch.device("cpu")
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
    restored = transform.inverse(pred)  # back to the input's orientation and grid
    array = np.rint(restored.as_tensor().numpy()[0])
    if array.shape != tuple(reference.shape):
        raise RuntimeError(
            f"inverted prediction has shape {array.shape}, input {source} has {reference.shape}"
        )
    num_classes = logits.shape[1]
    dtype = np.uint8 if num_classes <= 256 else np.uint16
    header = reference.header.copy()
    header.set_data_dtype(dtype)
    header["scl_slope"], header["scl_inter"] = 1.0, 0.0
    out = nib.Nifti1Image(array.astype(dtype), reference.affine, header)
    target = Path(out_path)
    suffix = ".nii.gz" if target.name.endswith(".nii.gz") else target.suffix or ".nii"
    return atomic_write(target, lambda tmp: _save_nifti(out, tmp, suffix))


def _save_nifti(image: Any, tmp: Path, suffix: str) -> None:
    """nibabel picks compression from the file name: save under the right suffix, then move."""
    import nibabel as nib

    named = tmp.parent / (tmp.name + suffix)
    nib.save(image, str(named))
    named.replace(tmp)
