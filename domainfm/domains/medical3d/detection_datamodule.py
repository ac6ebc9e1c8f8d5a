"""Lightning data module for 3D object detection fine-tuning on CT/MRI volumes with boxes.

The objects of a case come from one of two sources (:mod:`~domainfm.domains.medical3d.
boxes3d`), always as world boxes put on the training grid with the preprocessed volume's
affine:

* **label maps** (``images`` + ``labels``): the connected regions of the label values
  ``objects`` maps to object classes, found on the label file's own grid (e.g. BRATS whole
  tumour: ``objects: {1: 0, 2: 0, 3: 0, 4: 0}``), regions under ``min_volume_mm3`` dropped;
* a **MONAI detection JSON** (``boxes``): its ``"training"`` and ``"validation"`` lists of
  ``{"image", "box", "label"}`` (world boxes, ``box_mode`` ``cccwhd`` by default, RAS or
  LPS ``box_space``; image paths relative to the JSON).

Object classes are 0-based (MONAI's detection labels; no background class); ``class_names``
names them in that order.

Example (YAML for ``domainfm fit`` with a ``Detection3DModule``)::

    data:
      class_path: domainfm.domains.medical3d.detection_datamodule.VolumeDetectionDataModule
      init_args:
        images: [brats/pat0005/Flair_subtrMeanDivStd.nii.gz]
        labels: [brats/pat0005/OTMultiClass.nii.gz]
        objects: {1: 0, 2: 0, 3: 0, 4: 0}
        class_names: [whole tumour]
        modality: mri
        spacing: 4.0
        crop_size: 32

Relative paths resolve against the example-data root (``$DOMAINFM_DATA`` or
``../shared/data``). Validation batches are whole volumes (batch size 1), which the
detection module searches with sliding windows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from domainfm.core.connected_components import Connectivity
from domainfm.data.data_root import resolve_data_path
from domainfm.domains.medical3d.boxed_volumes import (
    BoxedVolumeDataset,
    ImageSpec,
    WorldTargets,
    collate_boxes,
)
from domainfm.domains.medical3d.boxes3d import BoxMode, WorldSpace, label_map_boxes, read_box_json
from domainfm.domains.medical3d.contract import VolumeContract
from domainfm.domains.medical3d.volume_datamodule import VolumeCaseDataModule, resolve_images


class VolumeDetectionDataModule(VolumeCaseDataModule):
    """Volumes with boxes: seeded box-aware crops for training, whole volumes for validation.

    Args:
        images: per training case, an image file or a list of co-registered channel files
            (with ``labels``).
        labels: per training case, its label map (boxes from its connected regions).
        val_images, val_labels: validation cases from label maps (whole volumes).
        boxes: a MONAI detection JSON instead of ``images``/``labels``: cases and world boxes
            from its ``"training"`` and ``"validation"`` lists.
        box_mode: how the JSON writes a box: ``"cccwhd"`` or ``"xyzxyz"``.
        box_space: the JSON's world frame: ``"RAS"`` or ``"LPS"``.
        objects: label value → object class (0-based) for label maps; values not listed
            are background.
        min_volume_mm3: label-map regions smaller than this are not objects.
        connectivity: ``"full"`` (26 neighbours) or ``"face"`` (6) for label-map regions.
        class_names: names of the object classes (class 0 first), recorded in checkpoints.
        positive_fraction: probability that a training crop is centred inside a box.
        **kwargs: ``crop_size``, ``spacing``, ``modality``, ``hu_window``,
            ``samples_per_volume``, ``geometry``, ``batch_size``, ``num_workers``, ``seed``:
            see :class:`~domainfm.domains.medical3d.volume_datamodule.VolumeDataModule`.

    Raises:
        ValueError: for no source, both sources, or label maps without ``objects``.
    """

    collate = staticmethod(collate_boxes)

    def __init__(
        self,
        *,
        images: Sequence[ImageSpec] = (),
        labels: Sequence[str] = (),
        val_images: Sequence[ImageSpec] = (),
        val_labels: Sequence[str] = (),
        boxes: str | None = None,
        box_mode: BoxMode = "cccwhd",
        box_space: WorldSpace = "RAS",
        objects: Mapping[int, int] | None = None,
        min_volume_mm3: float = 0.0,
        connectivity: Connectivity = "full",
        class_names: Sequence[str] | None = None,
        positive_fraction: float = 0.7,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (boxes is None) == (not images):
            raise ValueError(
                "give either images + labels (boxes from label maps) or boxes (a MONAI "
                "detection JSON), not both"
                if boxes is not None
                else "no training cases: give images + labels, or boxes (a MONAI detection JSON)"
            )
        if images and objects is None:
            raise ValueError("label maps need objects: label value → object class (0-based)")
        self.images = [resolve_images(spec) for spec in images]
        self.labels = [resolve_data_path(p) for p in labels]
        self.val_images = [resolve_images(spec) for spec in val_images]
        self.val_labels = [resolve_data_path(p) for p in val_labels]
        for what, cases, maps in (
            ("", self.images, self.labels),
            ("val_", self.val_images, self.val_labels),
        ):
            if len(cases) != len(maps):
                raise ValueError(
                    f"{what}images and {what}labels differ in length ({len(cases)} vs "
                    f"{len(maps)}): give one label map per case"
                )
        self.box_json = resolve_data_path(boxes) if boxes is not None else None
        self.box_mode: BoxMode = box_mode
        self.box_space: WorldSpace = box_space
        self.objects = {int(k): int(v) for k, v in (objects or {}).items()}
        self.min_volume_mm3 = float(min_volume_mm3)
        self.connectivity: Connectivity = connectivity
        self.class_names = list(class_names) if class_names is not None else None
        self.positive_fraction = positive_fraction
        self.train_set: BoxedVolumeDataset | None = None
        self.val_set: BoxedVolumeDataset | None = None

    def _cases(self, split: str) -> tuple[list[ImageSpec], list[WorldTargets]]:
        """The images and world boxes of ``split`` (``"training"`` / ``"validation"``)."""
        if self.box_json is not None:
            found = read_box_json(
                self.box_json,
                key=split,
                box_mode=self.box_mode,
                space=self.box_space,
                missing_ok=split != "training",
            )
            return list(found), list(found.values())
        images, maps = (
            (self.images, self.labels)
            if split == "training"
            else (self.val_images, self.val_labels)
        )
        targets = [
            label_map_boxes(
                path,
                objects=self.objects,
                min_volume_mm3=self.min_volume_mm3,
                connectivity=self.connectivity,
                geometry=self.preprocessing.geometry,
            )
            for path in maps
        ]
        return list(images), targets

    def _dataset(self, split: str, *, whole: bool) -> BoxedVolumeDataset | None:
        images, targets = self._cases(split)
        if not images:
            return None
        return BoxedVolumeDataset(
            images=images,
            targets=targets,
            crop_size=self.crop_size,
            whole=whole,
            samples_per_volume=self.samples_per_volume,
            positive_fraction=self.positive_fraction,
            **self.preprocessing.as_kwargs(),
        )

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.train_set is None:
            self.train_set = self._dataset("training", whole=False)
        if self.val_set is None:
            self.val_set = self._dataset("validation", whole=True)
        if stage != "fit" and self.val_set is None:
            raise ValueError(f"stage {stage!r} needs validation cases (val_images + val_labels)")

    def input_contract(self) -> VolumeContract:
        """Preprocessing a model trained on this data expects (stored in checkpoints and
        used by ``domainfm detect``); ``class_names`` are the object classes."""
        return self.case_contract(objects=self.objects or None, task="detection")
