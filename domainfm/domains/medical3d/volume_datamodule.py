"""The base of the CT/MRI data modules (pretraining crops, labeled segmentation cases): the
preprocessing every volume goes through and the training crops cut from it.

A subclass takes these arguments through ``**kwargs`` (LightningCLI's jsonargparse resolves
them from this signature, as it does the loader arguments of
:class:`~domainfm.data.datamodule.SeededDataModule`) and builds its datasets with
``**self.preprocessing.as_kwargs()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from domainfm.data.datamodule import SeededDataModule
from domainfm.domains.medical3d.preprocess import VolumePreprocessing
from domainfm.domains.medical3d.volume_types import Geometry


class VolumeDataModule(SeededDataModule):
    """Seeded loaders over volumes preprocessed one way (:attr:`preprocessing`).

    Args:
        crop_size: training crop size in voxels.
        spacing: target spacing in mm.
        modality: ``"ct"`` or ``"mri"``.
        hu_window: HU range mapped to [0, 1] for CT.
        samples_per_volume: training crops per volume (or case) per epoch.
        geometry: which transform places the voxels of a NIfTI file whose qform and sform
            disagree: ``"strict"`` (default) refuses such a file (a pretraining dataset skips
            it as bad), ``"sform"`` / ``"qform"`` assume that one (see
            :func:`~domainfm.domains.medical3d.load_volume`).
        batch_size: training crops per batch.
        **kwargs: ``num_workers``, ``seed`` (of the crop order, crop positions and masks):
            see :class:`~domainfm.data.datamodule.SeededDataModule`.

    Attributes:
        preprocessing: spacing, modality, HU window and geometry, checked at construction
            (a configuration error, not one per volume).

    Raises:
        ValueError: naming the first invalid argument.
    """

    def __init__(
        self,
        *,
        crop_size: int | Sequence[int] = 64,
        spacing: float | Sequence[float] = 3.0,
        modality: Literal["ct", "mri"] = "ct",
        hu_window: tuple[float, float] = (-1000.0, 1000.0),
        samples_per_volume: int = 8,
        geometry: Geometry = "strict",
        batch_size: int = 2,
        **kwargs: Any,
    ) -> None:
        super().__init__(batch_size=batch_size, **kwargs)
        self.preprocessing = VolumePreprocessing(
            spacing=spacing, modality=modality, hu_window=hu_window, geometry=geometry
        )
        self.crop_size = crop_size
        self.samples_per_volume = samples_per_volume
