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
from typing import Any

from lightning.pytorch.utilities import rank_zero_info
from torchdata.stateful_dataloader import StatefulDataLoader

from domainfm.core.masking import DEFAULT_MASKING, MaskingSpec
from domainfm.data.data_root import resolve_data_path
from domainfm.domains.medical3d.contract import VolumeContract
from domainfm.domains.medical3d.views import VolumeViews
from domainfm.domains.medical3d.volume_datamodule import VolumeDataModule
from domainfm.domains.medical3d.volume_types import VolumeSkippedWarning
from domainfm.domains.medical3d.volumes import VolumeCropDataset, make_views


class VolumePretrainDataModule(VolumeDataModule):
    """Random crops of volumes with a token mask drawn per batch in the loader workers.

    Args:
        files: volume paths (absolute, or relative to the example-data root).
        val_files: volumes for validation/test/predict crops (optional).
        masking: the MAE masks: the backbone's patch size, the ratio, ``"random"`` or
            ``"block"``.
        views: the view maker of each recipe (a
            :class:`~domainfm.domains.medical3d.views.VolumeViews`, e.g. VoCo crops), or the
            shorthands 1 (a random crop) and 2 (a pair of overlapping crops, for two-view
            objectives) of ``crop_size``.
        cache_dir: folder caching preprocessed volumes across runs (a second run starts
            without re-reading and resampling; keyed by file and preprocessing settings).
        strict: stop at the first unreadable volume instead of skipping and counting it.
        **kwargs: ``crop_size``, ``spacing``, ``modality``, ``hu_window``,
            ``samples_per_volume``, ``geometry``, ``batch_size``, ``num_workers``, ``seed``:
            see :class:`~domainfm.domains.medical3d.volume_datamodule.VolumeDataModule`.
    """

    def __init__(
        self,
        *,
        files: Sequence[str],
        val_files: Sequence[str] = (),
        masking: MaskingSpec = DEFAULT_MASKING,
        views: int | VolumeViews = 1,
        cache_dir: str | None = None,
        strict: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.files = list(files)
        self.val_files = list(val_files)
        self.views = make_views(views, crop_size=self.crop_size)
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
                    samples_per_volume=self.samples_per_volume,
                    views=self.views,
                    cache_dir=self.cache_dir,
                    strict=self.strict,
                    preprocess_workers=max(1, self.num_workers),
                    **self.preprocessing.as_kwargs(),
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
        settings = self.preprocessing
        return VolumeContract(
            channels=["image"],
            modality=settings.modality,
            spacing_mm=settings.spacing,
            crop_size=list(self.views.crop_size),
            hu_window=list(settings.hu_window),
        )
