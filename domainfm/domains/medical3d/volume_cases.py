"""The cases of the volume fine-tuning datasets (segmentation: an image and its label map;
detection: an image and its boxes), and what those datasets share.

A case's image is one file or several co-registered files stacked as channels
(:data:`ImageSpec`, :func:`image_files`), loaded and preprocessed together
(:func:`preprocess_channels`: RAS, target spacing, intensity, padded to the crop size).
:class:`CaseVolumes` is the base of the datasets: their shared arguments
(:class:`CaseVolumeArgs`) checked before any file is read (:func:`require_files` then names
the missing ones), cases preprocessed once, ``samples_per_volume`` seeded crops per case per
epoch (``key`` an index or ``(index, seed)`` from
:class:`~domainfm.data.sampling.SeededSampler`), centred on an object with probability
``positive_fraction``.

Example::

    >>> image, affine = preprocess_channels(
    ...     [load_volume("flair.nii.gz"), load_volume("t1c.nii.gz")],
    ...     spacing=(2.0, 2.0, 2.0), modality="mri", hu_window=(-1000.0, 1000.0))
    >>> image.shape[0]
    2
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import ClassVar, Literal, TypedDict, Unpack

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from domainfm.domains.medical3d.preprocess import (
    VolumePreprocessing,
    apply_volume_transform,
    volume_transform,
)
from domainfm.domains.medical3d.views import crop_start
from domainfm.domains.medical3d.volume_types import Geometry, Volume

ImageSpec = str | Path | Sequence[str | Path]
"""One case's image: a file, or co-registered files (its channels)."""


def image_files(spec: ImageSpec) -> list[Path]:
    """The channel files of one case (a single file is one channel)."""
    return [Path(spec)] if isinstance(spec, str | Path) else [Path(p) for p in spec]


def require_files(paths: Iterable[Path]) -> None:
    """Refuse missing files, all named at once (before any is read).

    Raises:
        FileNotFoundError: ``files not found: a.nii.gz, b.nii.gz``.
    """
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"files not found: {', '.join(missing)}")


def preprocess_channels(
    volumes: Sequence[Volume],
    *,
    spacing: Sequence[float],
    modality: Literal["ct", "mri"],
    hu_window: tuple[float, float],
    min_size: Sequence[int] | None = None,
) -> tuple[Tensor, np.ndarray]:
    """``(C, D, H, W)`` float32 image on the RAS grid at ``spacing`` (padded to ``min_size``)
    and that grid's affine (voxel centres → RAS mm), from the loaded channels of one case
    (:func:`~domainfm.domains.medical3d.io.load_volume`), which must share one grid.

    Raises:
        ValueError: naming two channels that are not on one voxel grid.
    """
    first = volumes[0]
    for other in volumes[1:]:
        if other.shape != first.shape or not np.allclose(other.affine, first.affine, atol=1e-3):
            raise ValueError(
                f"image channels {first.path} and {other.path} are not on one voxel grid "
                f"(shapes {first.shape} vs {other.shape}); co-register them first"
            )
    stacked = torch.cat([v.to_metatensor() for v in volumes], dim=0)  # (C, D, H, W)
    transform = volume_transform(
        spacing=spacing, modality=modality, hu_window=hu_window, min_size=min_size, load=False
    )
    image = apply_volume_transform(
        transform, stacked, spacing=spacing, source=first.path, min_size=min_size
    )
    affine = np.asarray(image.affine, dtype=np.float64)
    return image.as_tensor().to(torch.float32).contiguous(), affine


class PreprocessingArgs(TypedDict, total=False):
    """The preprocessing keywords of a case dataset (the fields of
    :class:`~domainfm.domains.medical3d.preprocess.VolumePreprocessing`, its defaults)."""

    spacing: float | Sequence[float]
    modality: Literal["ct", "mri"]
    hu_window: tuple[float, float]
    geometry: Geometry


class CaseVolumeArgs(PreprocessingArgs, total=False):
    """The keywords every case dataset takes (``**settings: Unpack[CaseVolumeArgs]``): the
    preprocessing, ``samples_per_volume`` (training crops per case per epoch; 8) and
    ``positive_fraction`` (probability that a crop is centred on an object voxel; 0.5)."""

    samples_per_volume: int
    positive_fraction: float


class CaseVolumes(Dataset[dict[str, Tensor]]):
    """Base of the case datasets: the cases' files checked, their preprocessing, their
    preprocessed images, ``samples_per_volume`` samples per case, seeded crop positions (see
    the module docstring).

    A subclass names its targets (:attr:`targets_name`, one :attr:`target_kind` per case),
    fills :attr:`volumes` and checks its files exist (:func:`require_files`) once its own
    arguments are checked.

    Args:
        images: per case, one file or a list of co-registered files (channels).
        targets: per case, its targets.
        whole: whole volumes (one sample per case) instead of crops.
        samples_per_volume: crops per case per epoch (training).
        positive_fraction: probability that a crop is centred on an object voxel.
        **preprocessing: ``spacing``, ``modality``, ``hu_window``, ``geometry`` (see
            :class:`~domainfm.domains.medical3d.preprocess.VolumePreprocessing`).

    Attributes:
        preprocessing: those settings, checked before any file is read.
        channel_files: per case, its image files (:func:`image_files`).
        volumes: per case, the preprocessed image ``(C, D, H, W)``.

    Raises:
        ValueError: no case, not one target per case, or ``positive_fraction`` outside
            ``[0, 1]``; a bad preprocessing setting.
    """

    targets_name: ClassVar[str]
    """The subclass's argument holding the targets (``"labels"``)."""
    target_kind: ClassVar[str]
    """What one case's target is (``"label map"``)."""

    def __init__(
        self,
        images: Sequence[ImageSpec],
        targets: Sequence[object],
        *,
        whole: bool,
        samples_per_volume: int = 8,
        positive_fraction: float = 0.5,
        **preprocessing: Unpack[PreprocessingArgs],
    ) -> None:
        name, kind = self.targets_name, self.target_kind
        if not images:
            raise ValueError(f"images is empty: pass at least one case with its {kind}")
        if len(images) != len(targets):
            raise ValueError(
                f"images and {name} differ in length ({len(images)} vs {len(targets)}): "
                f"give one {kind} per case"
            )
        if not 0.0 <= positive_fraction <= 1.0:
            raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
        self.preprocessing = VolumePreprocessing(**preprocessing)  # before any file is read
        self.channel_files = [image_files(spec) for spec in images]
        self.volumes: list[Tensor] = []
        self.samples_per_volume = 1 if whole else samples_per_volume
        self.positive_fraction = positive_fraction

    @property
    def in_chans(self) -> int:
        return int(self.volumes[0].shape[0])

    def __len__(self) -> int:
        return len(self.volumes) * self.samples_per_volume

    def locate(self, key: int | tuple[int, int]) -> tuple[int, torch.Generator | None]:
        """The case of sample ``key`` (an index or ``(index, seed)``) and the generator of its
        seed (``None`` without one)."""
        index, seed = key if isinstance(key, tuple) else (key, None)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        return index // self.samples_per_volume, generator

    def crop_start(
        self,
        case: int,
        crop_size: Sequence[int],
        *,
        generator: torch.Generator | None,
        foreground: Tensor | None,
    ) -> list[int]:
        """A crop's start in ``case``: centred on a ``foreground`` voxel ``(M, 3)`` with
        probability ``positive_fraction``, else uniform."""
        return crop_start(
            self.volumes[case].shape[1:],
            crop_size,
            generator=generator,
            foreground=foreground,
            foreground_prob=self.positive_fraction,
        )
