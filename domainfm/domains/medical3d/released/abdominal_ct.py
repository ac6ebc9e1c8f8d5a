"""The CT input of the Swin UNETR family of releases (Swin UNETR, SuPreM, VoCo): their
shared HU window, ``-175..250`` mapped to ``[0, 1]`` (clipped), in RAS; each release brings
its own spacing, crop and extras.

Example::

    >>> abdominal_ct_input(spacing_mm=[1.5, 1.5, 1.5], crop_size=[96, 96, 96]).hu_window
    [-175.0, 250.0]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from domainfm.domains.medical3d.contract import VolumeContract

ABDOMINAL_HU_WINDOW = (-175.0, 250.0)
"""The soft-tissue CT window of the Swin UNETR BTCV recipe, kept by SuPreM and VoCo."""


def abdominal_ct_input(
    *,
    spacing_mm: Sequence[float],
    crop_size: Sequence[int],
    extra: Mapping[str, Any] | None = None,
) -> VolumeContract:
    """The contract of a one-channel CT release with :data:`ABDOMINAL_HU_WINDOW`."""
    return VolumeContract(
        channels=["CT"],
        modality="ct",
        spacing_mm=spacing_mm,
        hu_window=list(ABDOMINAL_HU_WINDOW),
        crop_size=crop_size,
        extra=dict(extra or {}),
    )
