"""The input contract of a CT/MRI model: channels, spacing, orientation, intensity, ROI.

Written by the medical data modules into checkpoints and exports (``"input"``), read by
``domainfm segment`` (sliding windows at the training spacing and intensity mapping) and by
released checkpoints' input descriptions.

Every field is checked when a contract is built (also when read back from a checkpoint, so a
hand-edited or corrupt one is refused naming the file): ``spacing_mm`` one or three finite
positive mm values (:func:`check_spacing`), ``hu_window`` two finite values, low < high
(:func:`check_hu_window`), ``crop_size`` one or three sizes >= 1, ``channels`` a count >= 1
or a non-empty list of names.

Example::

    >>> c = VolumeContract(modality="ct", spacing_mm=1.5, crop_size=[96, 96, 96])
    >>> c.normalize(torch.tensor([[-2000.0, 0.0, 3000.0]]))
    tensor([[0.0000, 0.5000, 1.0000]])
    >>> VolumeContract.from_dict(c.to_dict()) == c
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from torch import Tensor

from domainfm.core.contract import CONTRACTS, InputContract

PERCENTILES = (0.5, 99.5)
"""MRI intensity: each channel's 0.5–99.5 percentile range is mapped to [0, 1]."""


def _number(value: Any) -> float:
    """``value`` as a float; NaN for anything that is not one number (bools included)."""
    if isinstance(value, bool) or (isinstance(value, Sequence) and not isinstance(value, str)):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def check_spacing(value: Any, *, what: str = "spacing") -> tuple[float, float, float]:
    """``value`` (one voxel size or three, mm) as three floats, after checking every one is
    finite and positive.

    Raises:
        ValueError: ``"<what> must be one or three finite positive mm values, got ..."``.
    """
    items = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    values = [_number(v) for v in items] * (3 if len(items) == 1 else 1)
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"{what} must be one or three finite positive mm values, got {value!r}")
    return values[0], values[1], values[2]


def check_hu_window(value: Any, *, what: str = "hu_window") -> tuple[float, float]:
    """``value`` as ``(low, high)`` after checking both are finite and ``low < high``.

    Raises:
        ValueError: ``"<what> must be two finite values low < high, got ..."``.
    """
    items = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else []
    values = [_number(v) for v in items]
    if len(values) != 2 or not all(math.isfinite(v) for v in values) or values[0] >= values[1]:
        raise ValueError(
            f"{what} must be two finite values low < high (HU mapped to 0 and 1), got {value!r}"
        )
    return values[0], values[1]


def _check_sizes(value: Any, what: str) -> None:
    """``value``: ``None``, or one size or three, each an integer >= 1."""
    if value is None:
        return
    items = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    ok = len(items) in (1, 3) and all(_number(v) >= 1 and _number(v).is_integer() for v in items)
    if not ok:
        raise ValueError(f"{what} must be one or three integer sizes >= 1, got {value!r}")


def _check_channels(value: Any) -> None:
    """``value``: a channel count >= 1 or a non-empty list of channel names."""
    if isinstance(value, str) or not (
        (isinstance(value, int) and not isinstance(value, bool) and value >= 1)
        or (isinstance(value, Sequence) and value and all(isinstance(v, str) for v in value))
    ):
        raise ValueError(
            f"channels must be a count >= 1 or a non-empty list of names, got {value!r}"
        )


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
        check_spacing(self.spacing_mm, what="spacing_mm")
        _check_sizes(self.crop_size, "crop_size")
        _check_channels(self.channels)
        if not isinstance(self.orientation, str):
            raise ValueError(f"orientation must be axis codes like 'RAS', got {self.orientation!r}")
        window = list(check_hu_window(self.hu_window or (-1000.0, 1000.0)))
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
        return check_spacing(self.spacing_mm, what="spacing_mm")

    @property
    def window(self) -> tuple[float, float]:
        """The CT HU window."""
        lo, hi = self.hu_window or (-1000.0, 1000.0)
        return float(lo), float(hi)

    def intensity(self) -> Callable[[Any], Any]:
        """The MONAI intensity transform of this contract's ``normalization``:
        ``hu_window`` / ``percentile`` (:func:`intensity_transform`), or ``zscore_nonzero``
        (per-channel z-score over the non-zero voxels, zeros kept: MedicalNet's; its
        training-time noise on zero voxels is not reproduced).

        Raises:
            ValueError: for a normalization type no transform implements (never guessed).
        """
        kind = (self.normalization or {}).get("type")
        if kind in ("hu_window", "percentile"):
            return intensity_transform(self.modality, self.window)
        if kind == "zscore_nonzero":
            from monai import transforms as mt

            return mt.NormalizeIntensity(nonzero=True, channel_wise=True)
        raise ValueError(
            f"normalization type {kind!r} has no transform here; apply it before the model "
            "(types: hu_window, percentile, zscore_nonzero)"
        )

    def normalize(self, x: Tensor) -> Tensor:
        """``(C, *spatial)`` raw intensities (HU for CT) → the model's [0, 1] input."""
        out: Tensor = self.intensity()(x)
        return out
