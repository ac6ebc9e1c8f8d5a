"""The deterministic preprocessing of a CT/MRI volume, shared by training and inference.

Channel-first, reoriented to RAS, resampled to a target spacing, intensity-normalized by
modality (CT: a HU window mapped to [0, 1]; MRI: the 0.5–99.5 percentile range of each
channel mapped to [0, 1]). All steps are MONAI transforms on ``MetaTensor``s, so the spatial
ones can be inverted to put a prediction back on the input's own grid.

Example::

    >>> transform = volume_transform(spacing=(3.0, 3.0, 3.0), modality="ct")
    >>> x = transform("ct.nii.gz")        # MetaTensor (1, D, H, W), affine in x.affine
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from domainfm.domains.medical3d.contract import intensity_transform

RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


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
        mt.Spacing(pixdim=tuple(spacing), mode="bilinear"),
    ]
    steps.append(intensity_transform(modality, hu_window))
    if min_size is not None:
        steps.append(mt.SpatialPad(spatial_size=tuple(min_size)))
    return mt.Compose(steps)
