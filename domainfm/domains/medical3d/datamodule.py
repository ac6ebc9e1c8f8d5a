"""Lightning data module for masked pretraining on CT/MRI volumes.

Example (YAML for ``domainfm fit``)::

    data:
      class_path: domainfm.domains.medical3d.VolumePretrainDataModule
      init_args:
        files: [medical/totalsegmentator_examples/ct_full/example_ct.nii.gz]
        crop_size: 64
        patch_size: 16
        mask_ratio: 0.75

Relative file paths are resolved against the example-data root (``$DOMAINFM_DATA`` or
``../shared/data``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import lightning as L
from torchdata.stateful_dataloader import StatefulDataLoader

from domainfm.core.data_root import resolve_data_path
from domainfm.core.masking import BlockMasking, MaskGenerator, MaskingCollate, RandomMasking
from domainfm.core.sampling import SeededSampler
from domainfm.domains.medical3d.volumes import VolumeCropDataset


class VolumePretrainDataModule(L.LightningDataModule):
    """Random crops of volumes with a token mask drawn per batch in the loader workers.

    Args:
        files: volume paths (absolute, or relative to the example-data root).
        crop_size: crop size in voxels.
        spacing: target spacing in mm.
        modality: ``"ct"`` or ``"mri"``.
        patch_size: the backbone's patch size (for the mask grid).
        mask_ratio: fraction of tokens hidden from the encoder.
        masking: ``"random"`` or ``"block"``.
        samples_per_volume: crops per volume per epoch.
        batch_size: crops per batch.
        num_workers: loader worker processes.
        seed: seed of the crop order, crop positions and masks (exactly resumable).
    """

    def __init__(
        self,
        *,
        files: Sequence[str],
        crop_size: int | Sequence[int] = 64,
        spacing: float | Sequence[float] = 3.0,
        modality: Literal["ct", "mri"] = "ct",
        patch_size: int | Sequence[int] = 16,
        mask_ratio: float = 0.75,
        masking: Literal["random", "block"] = "random",
        samples_per_volume: int = 8,
        batch_size: int = 2,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.files = list(files)
        self.crop_size = crop_size
        self.spacing = spacing
        self.modality: Literal["ct", "mri"] = modality
        self.samples_per_volume = samples_per_volume
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        generator: MaskGenerator = (
            RandomMasking(ratio=mask_ratio)
            if masking == "random"
            else BlockMasking(ratio=mask_ratio)
        )
        self.collate = MaskingCollate(masking=generator, patch_size=patch_size)
        self.train_set: VolumeCropDataset | None = None

    def setup(self, stage: str) -> None:
        if self.train_set is None:
            self.train_set = VolumeCropDataset(
                files=[resolve_data_path(f) for f in self.files],
                crop_size=self.crop_size,
                spacing=self.spacing,
                modality=self.modality,
                samples_per_volume=self.samples_per_volume,
            )

    def train_dataloader(self) -> StatefulDataLoader:
        """A resumable loader: its position is saved in checkpoints and restored on resume."""
        assert self.train_set is not None, "call setup() first"
        return StatefulDataLoader(
            self.train_set,
            batch_size=self.batch_size,
            sampler=SeededSampler(num_samples=len(self.train_set), seed=self.seed),
            drop_last=True,
            num_workers=self.num_workers,
            collate_fn=self.collate,
            persistent_workers=self.num_workers > 0,
        )

    def input_contract(self) -> dict[str, object]:
        """What a model trained on this data expects as input (stored in exports)."""
        return {
            "channels": ["image"],
            "modality": self.modality,
            "spacing_mm": self.spacing,
            "orientation": "RAS",
            "crop_size": self.crop_size,
            "normalization": (
                {"type": "hu_window", "range": [-1000.0, 1000.0], "to": [0.0, 1.0]}
                if self.modality == "ct"
                else {"type": "percentile", "range": [0.5, 99.5], "to": [0.0, 1.0]}
            ),
        }
