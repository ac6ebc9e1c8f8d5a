"""The base of the CT/MRI data modules (pretraining crops, labeled segmentation cases, cases
with boxes): the preprocessing every volume goes through and the training crops cut from it.

A subclass takes these arguments through ``**kwargs`` (LightningCLI's jsonargparse resolves
them from this signature, as it does the loader arguments of
:class:`~domainfm.data.datamodule.SeededDataModule`) and builds its datasets with
``**self.preprocessing.as_kwargs()``.

The fine-tuning data modules (:class:`VolumeCaseDataModule`) also share their validation:
whole volumes, one per batch, and the input contract a model trained on their cases expects.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from torch.utils.data import Dataset
from torchdata.stateful_dataloader import StatefulDataLoader

from domainfm.data.data_root import resolve_data_path
from domainfm.data.datamodule import SeededDataModule
from domainfm.domains.medical3d.contract import VolumeContract
from domainfm.domains.medical3d.preprocess import VolumePreprocessing
from domainfm.domains.medical3d.volume_cases import ImageSpec, image_files
from domainfm.domains.medical3d.volume_types import Geometry


def resolve_images(spec: ImageSpec) -> list[Path]:
    """The channel files of one case, relative paths resolved against the example-data root
    (``$DOMAINFM_DATA`` or ``../shared/data``)."""
    return [resolve_data_path(p) for p in image_files(spec)]


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


class VolumeCaseDataModule(VolumeDataModule):
    """Base of the fine-tuning data modules: whole validation volumes, one per batch (the
    task module searches them with sliding windows), also for testing; the input contract.

    A subclass sets ``images`` (per training case, its resolved channel files),
    ``class_names`` and, in ``setup``, ``val_set`` (``None``: no validation cases).
    """

    images: list[list[Path]]
    class_names: list[str] | None
    val_set: Dataset[Any] | None

    def val_dataloader(self) -> StatefulDataLoader | list[StatefulDataLoader]:
        """Whole validation volumes (with their targets), one per batch."""
        if self.val_set is None:
            return []
        return self.eval_loader(self.val_set, batch_size=1)

    def test_dataloader(self) -> StatefulDataLoader | list[StatefulDataLoader]:
        return self.val_dataloader()

    def case_contract(self, **extra: Any) -> VolumeContract:
        """The preprocessing a model trained on these cases expects (stored in checkpoints and
        used by ``domainfm segment`` / ``detect``): channels, modality, spacing, crop size,
        HU window, ``class_names``, and the task's ``extra`` entries."""
        settings = self.preprocessing
        return VolumeContract(
            channels=len(self.images[0]) if self.images else 1,
            modality=settings.modality,
            spacing_mm=settings.spacing,
            crop_size=self.crop_size,
            hu_window=list(settings.hu_window),
            class_names=self.class_names,
            extra=extra,
        )
