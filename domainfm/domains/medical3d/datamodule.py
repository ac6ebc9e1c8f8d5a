"""Lightning data module for masked pretraining on CT/MRI volumes.

Example (YAML for ``domainfm fit``)::

    data:
      class_path: domainfm.domains.medical3d.VolumePretrainDataModule
      init_args:
        files: [medical/totalsegmentator_examples/ct_full/example_ct.nii.gz]
        crop_size: 64
        masking: {patch_size: 16, ratio: 0.75}

Relative file paths are resolved against the example-data root (``$DOMAINFM_DATA`` or
``../shared/data``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Literal

from lightning.pytorch.utilities import rank_zero_info
from torchdata.stateful_dataloader import StatefulDataLoader

from domainfm.core.masking import DEFAULT_MASKING, MaskingSpec
from domainfm.data.data_root import resolve_data_path
from domainfm.data.datamodule import SeededDataModule
from domainfm.domains.medical3d.contract import VolumeContract, check_hu_window, check_spacing
from domainfm.domains.medical3d.views import VolumeViews
from domainfm.domains.medical3d.volume_types import (
    Geometry,
    VolumeSkippedWarning,
    check_geometry_choice,
)
from domainfm.domains.medical3d.volumes import VolumeCropDataset, make_views


class VolumePretrainDataModule(SeededDataModule):
    """Random crops of volumes with a token mask drawn per batch in the loader workers.

    Args:
        files: volume paths (absolute, or relative to the example-data root).
        val_files: volumes for validation/test/predict crops (optional).
        crop_size: crop size in voxels.
        spacing: target spacing in mm.
        modality: ``"ct"`` or ``"mri"``.
        hu_window: HU range mapped to [0, 1] for CT.
        masking: the MAE masks: the backbone's patch size, the ratio, ``"random"`` or
            ``"block"``.
        samples_per_volume: crops per volume per epoch.
        views: the view maker of each recipe (a
            :class:`~domainfm.domains.medical3d.views.VolumeViews`, e.g. VoCo crops), or the
            shorthands 1 (a random crop) and 2 (a pair of overlapping crops, for two-view
            objectives) of ``crop_size``.
        cache_dir: folder caching preprocessed volumes across runs (a second run starts
            without re-reading and resampling; keyed by file and preprocessing settings).
        strict: stop at the first unreadable volume instead of skipping and counting it.
        geometry: which transform places the voxels of a NIfTI file whose qform and sform
            disagree: ``"strict"`` (default) skips such a file as bad, ``"sform"`` /
            ``"qform"`` assume that one (see :func:`~domainfm.domains.medical3d.load_volume`).
        batch_size: crops per batch.
        **kwargs: ``num_workers``, ``seed`` (of the crop order, crop positions and masks):
            see :class:`~domainfm.data.datamodule.SeededDataModule`.
    """

    def __init__(
        self,
        *,
        files: Sequence[str],
        val_files: Sequence[str] = (),
        crop_size: int | Sequence[int] = 64,
        spacing: float | Sequence[float] = 3.0,
        modality: Literal["ct", "mri"] = "ct",
        hu_window: tuple[float, float] = (-1000.0, 1000.0),
        masking: MaskingSpec = DEFAULT_MASKING,
        samples_per_volume: int = 8,
        views: int | VolumeViews = 1,
        cache_dir: str | None = None,
        strict: bool = False,
        geometry: Geometry = "strict",
        batch_size: int = 2,
        **kwargs: Any,
    ) -> None:
        super().__init__(batch_size=batch_size, **kwargs)
        self.geometry = check_geometry_choice(geometry)
        check_spacing(spacing)  # a configuration error, not one per volume
        check_hu_window(hu_window)
        self.files = list(files)
        self.val_files = list(val_files)
        self.hu_window = hu_window
        self.crop_size = crop_size
        self.spacing = spacing
        self.modality: Literal["ct", "mri"] = modality
        self.samples_per_volume = samples_per_volume
        self.views = make_views(views, crop_size=crop_size)
        self.cache_dir = cache_dir
        self.strict = strict
        self.collate = masking.collate(kinds=("random", "block"))
        self.train_set: VolumeCropDataset | None = None
        self.val_set: VolumeCropDataset | None = None

    def _dataset(self, files: Sequence[str]) -> VolumeCropDataset:
        """The dataset of ``files``. Its skip warnings are shown once it is built; when no
        file loads they are dropped, since its one-line error lists every skipped file."""
        failure: ValueError | None = None
        with warnings.catch_warnings(record=True) as caught:
            try:
                dataset = VolumeCropDataset(
                    files=[resolve_data_path(f) for f in files],
                    spacing=self.spacing,
                    modality=self.modality,
                    hu_window=self.hu_window,
                    samples_per_volume=self.samples_per_volume,
                    views=self.views,
                    cache_dir=self.cache_dir,
                    strict=self.strict,
                    preprocess_workers=max(1, self.num_workers),
                    geometry=self.geometry,
                )
            except ValueError as err:
                failure = err
        for w in caught:  # outside the block: through the caller's filters and output
            if failure is None or not issubclass(w.category, VolumeSkippedWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
        if failure is not None:
            raise failure
        return dataset

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.train_set is None:
            self.train_set = self._dataset(self.files)
            skipped = self.train_set.skipped
            rank_zero_info(
                f"VolumePretrainDataModule: {len(self.train_set.volumes)} volumes loaded, "
                f"{len(skipped)} skipped"
                + "".join(f"\n  skipped {path}: {reason}" for path, reason in skipped)
            )
        if stage != "fit" and not self.val_files:
            raise ValueError(f"stage {stage!r} needs val_files (volumes to evaluate on)")
        if self.val_files and self.val_set is None:
            self.val_set = self._dataset(self.val_files)

    def val_dataloader(self) -> StatefulDataLoader | list[StatefulDataLoader]:
        """Fixed crops (same positions and masks every epoch) of ``val_files``."""
        if self.val_set is None:
            return []
        return self.seeded_loader(self.val_set, shuffle=False, seed=self.seed + 1)

    def test_dataloader(self) -> StatefulDataLoader | list[StatefulDataLoader]:
        return self.val_dataloader()

    def predict_dataloader(self) -> StatefulDataLoader | list[StatefulDataLoader]:
        return self.val_dataloader()

    def input_contract(self) -> VolumeContract:
        """What a model trained on this data expects as input (stored in exports)."""
        return VolumeContract(
            channels=["image"],
            modality=self.modality,
            spacing_mm=self.spacing,
            crop_size=list(self.views.crop_size),
            hu_window=list(self.hu_window),
        )
