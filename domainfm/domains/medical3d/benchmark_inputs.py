"""How the items of a volume benchmark task become model inputs: the preprocessing a backbone
expects, and one whole case read and preprocessed.

:func:`volume_settings` takes the preprocessing from the backbone's input contract
(:class:`~domainfm.domains.medical3d.contract.VolumeContract`: spacing, modality, HU window,
training crop as the sliding-window ROI) when it records one, else from the task's options
(``spacing=``, ``roi=``, ``modality=``, see
:mod:`~domainfm.domains.medical3d.benchmark_tasks`), else the data modules' defaults
(:data:`DEFAULT_SPACING` mm, :data:`DEFAULT_ROI` voxels, CT window -1000..1000 HU). The
backbone must take the task's channels (one contract channel or ``in_chans`` per channel
file; ``--task-option channels=`` picks them).

:func:`load_case` reads a case as fine-tuning does
(:class:`~domainfm.domains.medical3d.labeled_volumes.LabeledVolumeDataset`: every file
validated by :func:`~domainfm.domains.medical3d.io.load_volume`, channels on one grid, the
label map on the image's grid, RAS, resampling, intensity normalization, label values mapped
to class indices).

Example::

    >>> settings = volume_settings(backbone, task, model)
    >>> image, label = load_case(task.items[0], settings)   # (C, D, H, W), (1, D, H, W)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from domainfm.core.grid import to_ntuple
from domainfm.domains.medical3d.contract import VolumeContract
from domainfm.domains.medical3d.labeled_volumes import LabeledVolumeDataset
from domainfm.domains.medical3d.preprocess import VolumePreprocessing
from domainfm.domains.medical3d.volume_types import check_geometry_choice
from domainfm.tasks.benchmark.backbones import BenchmarkBackbone
from domainfm.tasks.benchmark.task import BenchmarkTask, LabeledItem

DEFAULT_SPACING = 3.0
"""mm, without a contract or ``spacing=`` (the volume data modules' default)."""
DEFAULT_ROI = 64
"""Sliding-window / training crop size in voxels, without a contract or ``roi=`` (the volume
data modules' default crop)."""
DEFAULT_HU_WINDOW = (-1000.0, 1000.0)
"""CT window mapped to [0, 1] without a contract (the data modules' default)."""
NORMALIZATIONS = ("hu_window", "percentile")
"""Contract normalizations the domain's readers apply (CT window, MRI percentiles)."""


@dataclass(frozen=True, kw_only=True)
class VolumeSettings:
    """How one backbone reads one task.

    Attributes:
        preprocessing: spacing (three values), modality, HU window and NIfTI geometry.
        roi: sliding-window size and training crop (voxels, three values).
        label_map: raw label value → class index.
        channels: channel files per case.
    """

    preprocessing: VolumePreprocessing
    roi: tuple[int, int, int]
    label_map: Mapping[int, int]
    channels: int


def volume_settings(
    backbone: BenchmarkBackbone, task: BenchmarkTask, model: nn.Module | None = None
) -> VolumeSettings:
    """The preprocessing ``backbone`` (built as ``model``) expects on ``task`` (module
    docstring).

    Raises:
        ValueError: naming the backbone, when its contract is not a volume contract, uses a
            normalization the readers do not apply, or takes another number of channels.
    """
    meta = task.metadata
    channels = len(meta["channels"])
    in_chans = getattr(model, "in_chans", None)
    if isinstance(in_chans, int) and in_chans != channels:
        raise ValueError(_channel_mismatch(backbone, in_chans, meta["channels"]))
    geometry = check_geometry_choice(meta.get("geometry") or "strict")
    roi = meta.get("roi") or DEFAULT_ROI
    if backbone.contract:
        contract = _contract(backbone)
        expected = (
            contract.channels if isinstance(contract.channels, int) else len(contract.channels)
        )
        if expected != channels:
            raise ValueError(_channel_mismatch(backbone, expected, meta["channels"]))
        preprocessing = VolumePreprocessing(
            spacing=contract.spacing,
            modality=contract.modality,
            hu_window=contract.window,
            geometry=geometry,
        )
        roi = contract.crop_size or roi
    else:
        preprocessing = VolumePreprocessing(
            spacing=_three(meta.get("spacing") or DEFAULT_SPACING),
            modality=meta["modality"],
            hu_window=DEFAULT_HU_WINDOW,
            geometry=geometry,
        )
    return VolumeSettings(
        preprocessing=preprocessing,
        roi=_roi(roi),
        label_map={int(k): int(v) for k, v in meta["label_map"].items()},
        channels=channels,
    )


def _contract(backbone: BenchmarkBackbone) -> VolumeContract:
    recorded = dict(backbone.contract or {})
    if recorded.get("kind") not in (None, VolumeContract.kind):
        raise ValueError(
            f"backbone {backbone.label} expects {recorded['kind']} inputs, not CT/MRI volumes"
        )
    try:
        contract = VolumeContract.from_dict(recorded)
    except (TypeError, ValueError) as err:
        raise ValueError(f"backbone {backbone.label}: its input contract: {err}") from None
    kind = (contract.normalization or {}).get("type")
    if kind not in NORMALIZATIONS:
        raise ValueError(
            f"backbone {backbone.label} expects {kind!r} intensity normalization; the volume "
            f"benchmark applies {' or '.join(NORMALIZATIONS)}"
        )
    return contract


def _channel_mismatch(backbone: BenchmarkBackbone, expected: int, names: list[str]) -> str:
    return (
        f"backbone {backbone.label} takes {expected} input channels, the task has "
        f"{len(names)} ({', '.join(names)}): choose them with --task-option channels=NAME,..."
    )


def _three(value: Any) -> tuple[float, float, float]:
    values = [float(v) for v in value] if isinstance(value, list | tuple) else [float(value)] * 3
    return values[0], values[1], values[2]


def _roi(value: Any) -> tuple[int, int, int]:
    sizes = to_ntuple(value if isinstance(value, int) else list(value), 3, name="roi")
    return sizes[0], sizes[1], sizes[2]


def load_case(item: LabeledItem, settings: VolumeSettings) -> tuple[Tensor, Tensor]:
    """The whole case ``item``, preprocessed: image ``(C, D, H, W)`` float32 and label map
    ``(1, D, H, W)`` int64 of class indices.

    Raises:
        ValueError: naming the file, for an unreadable or mismatched volume or label map.
    """
    case = LabeledVolumeDataset(
        images=[list(item.inputs)],
        labels=[Path(str(item.target))],
        crop_size=None,
        label_map=settings.label_map,
        **settings.preprocessing.as_kwargs(),
    )
    return case.volumes[0], case.labels[0]
