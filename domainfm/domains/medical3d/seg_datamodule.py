"""Lightning data module for 3D segmentation fine-tuning on labeled CT/MRI volumes.

Example (YAML for ``domainfm fit`` with a ``FinetuneModule``)::

    data:
      class_path: domainfm.domains.medical3d.VolumeSegDataModule
      init_args:
        images: [[brats/p5/Flair.nii.gz]]
        labels: [brats/p5/OTMultiClass.nii.gz]
        val_images: [[brats/p3/Flair.nii.gz]]
        val_labels: [brats/p3/OTMultiClass.nii.gz]
        label_map: {1: 1, 2: 1, 3: 1, 4: 1}      # whole tumour
        modality: mri
        spacing: 2.0
        crop_size: 64

Relative paths resolve against the example-data root (``$DOMAINFM_DATA`` or
``../shared/data``). Validation batches are whole volumes (batch size 1), which the
fine-tuning module segments with sliding windows so the Dice is that of the whole scan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from domainfm.data.data_root import resolve_data_path
from domainfm.domains.medical3d.contract import VolumeContract
from domainfm.domains.medical3d.labeled_volumes import ImageSpec, LabeledVolumeDataset
from domainfm.domains.medical3d.volume_datamodule import VolumeCaseDataModule, resolve_images


class VolumeSegDataModule(VolumeCaseDataModule):
    """Labeled volumes: seeded foreground-aware crops for training, whole volumes for validation.

    Args:
        images: per training case, an image file or a list of co-registered channel files.
        labels: per training case, its label map.
        val_images: validation cases (whole volumes).
        val_labels: their label maps.
        label_map: raw label value → class id (others → background 0); ``None``: raw values.
        class_names: names of the classes (background first), recorded in checkpoints.
        positive_fraction: probability that a training crop is centred on a labeled voxel.
        **kwargs: ``crop_size``, ``spacing``, ``modality``, ``hu_window``,
            ``samples_per_volume``, ``geometry``, ``batch_size``, ``num_workers``, ``seed``:
            see :class:`~domainfm.domains.medical3d.volume_datamodule.VolumeDataModule`.
    """

    def __init__(
        self,
        *,
        images: Sequence[ImageSpec],
        labels: Sequence[str],
        val_images: Sequence[ImageSpec] = (),
        val_labels: Sequence[str] = (),
        label_map: Mapping[int, int] | None = None,
        class_names: Sequence[str] | None = None,
        positive_fraction: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.images = [resolve_images(i) for i in images]
        self.labels = [resolve_data_path(p) for p in labels]
        self.val_images = [resolve_images(i) for i in val_images]
        self.val_labels = [resolve_data_path(p) for p in val_labels]
        self.label_map = dict(label_map) if label_map is not None else None
        self.class_names = list(class_names) if class_names is not None else None
        self.positive_fraction = positive_fraction
        self.train_set: LabeledVolumeDataset | None = None
        self.val_set: LabeledVolumeDataset | None = None

    def _dataset(
        self, images: Sequence[ImageSpec], labels: Sequence[str | Path], *, whole: bool
    ) -> LabeledVolumeDataset:
        return LabeledVolumeDataset(
            images=images,
            labels=labels,
            crop_size=None if whole else self.crop_size,
            label_map=self.label_map,
            samples_per_volume=self.samples_per_volume,
            positive_fraction=self.positive_fraction,
            **self.preprocessing.as_kwargs(),
        )

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.train_set is None:
            self.train_set = self._dataset(self.images, self.labels, whole=False)
        if stage != "fit" and not self.val_images:
            raise ValueError(f"stage {stage!r} needs val_images and val_labels")
        if self.val_images and self.val_set is None:
            self.val_set = self._dataset(self.val_images, self.val_labels, whole=True)

    def input_contract(self) -> VolumeContract:
        """Preprocessing a model trained on this data expects (stored in checkpoints and
        used by ``domainfm segment``)."""
        return self.case_contract(label_map=self.label_map)
