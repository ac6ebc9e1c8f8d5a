"""The input contract of a CT/MRI model: channels, spacing, orientation, intensity, ROI.

Written by the medical data modules into checkpoints and exports (``"input"``), read by
``domainfm segment`` (sliding windows at the training spacing and intensity mapping) and by
released checkpoints' input descriptions.

Example::

    >>> c = VolumeContract(modality="ct", spacing_mm=1.5, crop_size=[96, 96, 96])
    >>> c.normalize(torch.tensor([[-2000.0, 0.0, 3000.0]]))
    tensor([[0.0000, 0.5000, 1.0000]])
    >>> VolumeContract.from_dict(c.to_dict()) == c
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from torch import Tensor

from domainfm.core.contract import CONTRACTS, InputContract

PERCENTILES = (0.5, 99.5)
"""MRI intensity: each channel's 0.5–99.5 percentile range is mapped to [0, 1]."""


def intensity_transform(
    modality: Literal["ct", "mri"], hu_window: tuple[float, float] = (-1000.0, 1000.0)
) -> Callable[[Any], Any]:
    """The MONAI intensity step of training and inference: CT ``hu_window`` → [0, 1]
    (clipped); MRI per-channel percentiles → [0, 1] (clipped)."""
    from monai import transforms as mt

    if modality == "ct":
        return mt.ScaleIntensityRange(
            a_min=hu_window[0], a_max=hu_window[1], b_min=0.0, b_max=1.0, clip=True
        )
    if modality == "mri":
        return mt.ScaleIntensityRangePercentiles(
            lower=PERCENTILES[0],
            upper=PERCENTILES[1],
            b_min=0.0,
            b_max=1.0,
            clip=True,
            channel_wise=True,
        )
    raise ValueError(f"modality must be 'ct' or 'mri', got {modality!r}")


@CONTRACTS.register("volume")
@dataclass(frozen=True, kw_only=True)
class VolumeContract(InputContract):
    """What a volumetric model expects.

    Attributes:
        modality: ``"ct"`` (HU window) or ``"mri"`` (percentile scaling).
        spacing_mm: voxel spacing of the model's input (one value or three, mm).
        channels: channel names, or their count.
        orientation: axis codes of the model's input (always RAS here).
        crop_size: training crop (voxels): the sliding-window ROI by default.
        hu_window: the CT window mapped to [0, 1].
        normalization: the intensity mapping as data (derived from the fields above).
    """

    kind: ClassVar[str] = "volume"
    legacy_keys: ClassVar[tuple[str, ...]] = ("spacing_mm", "modality")

    modality: Literal["ct", "mri"]
    spacing_mm: float | Sequence[float]
    channels: list[str] | int = 1
    orientation: str = "RAS"
    crop_size: int | Sequence[int] | None = None
    hu_window: Sequence[float] | None = None
    normalization: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.modality not in ("ct", "mri"):
            raise ValueError(f"modality must be 'ct' or 'mri', got {self.modality!r}")
        window = [float(v) for v in (self.hu_window or (-1000.0, 1000.0))]
        object.__setattr__(self, "hu_window", window)
        for name in ("spacing_mm", "crop_size"):  # JSON-like lists, so equal after a round trip
            value = getattr(self, name)
            if isinstance(value, Sequence) and not isinstance(value, str):
                object.__setattr__(self, name, list(value))
        if self.normalization is None:
            norm = (
                {"type": "hu_window", "range": window, "to": [0.0, 1.0]}
                if self.modality == "ct"
                else {"type": "percentile", "range": list(PERCENTILES), "to": [0.0, 1.0]}
            )
            object.__setattr__(self, "normalization", norm)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """``spacing_mm`` as three values."""
        s = self.spacing_mm
        values = (float(s),) * 3 if isinstance(s, int | float) else tuple(float(v) for v in s)
        if len(values) != 3:
            raise ValueError(f"spacing_mm must have one value or three, got {s!r}")
        return values[0], values[1], values[2]

    @property
    def window(self) -> tuple[float, float]:
        """The CT HU window."""
        lo, hi = self.hu_window or (-1000.0, 1000.0)
        return float(lo), float(hi)

    def intensity(self) -> Callable[[Any], Any]:
        """The MONAI intensity transform of this contract (:func:`intensity_transform`)."""
        return intensity_transform(self.modality, self.window)

    def normalize(self, x: Tensor) -> Tensor:
        """``(C, *spatial)`` raw intensities (HU for CT) → the model's [0, 1] input."""
        out: Tensor = self.intensity()(x)
        return out
