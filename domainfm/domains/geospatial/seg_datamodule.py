"""Lightning data modules for segmentation and scene-classification fine-tuning on labeled
rasters.

One scene (images of one or several dates + a label raster on the same grid) is split by
rows: random training windows in ``train_rows``, a regular grid of validation windows in
``val_rows`` (keep a gap of a window between them to avoid overlap).

Example (YAML for ``domainfm fit`` with a ``FinetuneModule``)::

    data:
      class_path: domainfm.domains.geospatial.RasterSegDataModule
      init_args:
        images: [geospatial/eolearn_s2_slovenia_patch/s2_l1c_13band/*.tif]
        label: geospatial/eolearn_s2_slovenia_patch/labels/LULC.tif
        label_map: {1: 1, 2: 2, 3: 3, 4: 4, 8: 5}
        train_rows: [0, 64]
        val_rows: [69, 101]

:class:`RasterSceneDataModule` is the same with one label per window, its dominant class
(``FinetuneModule(task="classification")``); :class:`RasterDetectionDataModule` labels each
window with the boxes of the connected regions of ``object_classes``
(:class:`~domainfm.tasks.detection_module.DetectionModule`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from torchdata.stateful_dataloader import StatefulDataLoader

from domainfm.data.collate import collate_detection
from domainfm.data.data_root import expand_files, resolve_data_path
from domainfm.domains.geospatial.contract import RasterContract
from domainfm.domains.geospatial.labeled_windows import LabeledRasterDataset
from domainfm.domains.geospatial.raster_datamodule import RasterDataModule


class RasterSegDataModule(RasterDataModule):
    """Labeled raster windows: seeded random training windows, a validation window grid.

    Args:
        images: image rasters (paths or glob patterns), one or several dates of the scene.
        label: the label raster (same grid).
        label_map: raw label value → class id (others → 0).
        class_names: class names (background / no-data first), recorded in checkpoints.
        train_rows: ``[first, stop)`` rows of training windows.
        val_rows: ``[first, stop)`` rows of validation windows.
        samples_per_epoch: training windows per epoch.
        object_classes: class ids (after ``label_map``) whose regions are objects
            (detection only).
        min_object_pixels: smallest region kept as an object (detection only).
        **kwargs: ``size`` (window size in pixels), ``bands``, ``band_names`` (of the
            images' bands), ``stats_cache``, ``released_input``, ``input_scale`` (the
            statistics: see :class:`~domainfm.domains.geospatial.raster_datamodule.
            RasterDataModule`), ``batch_size`` (windows per batch), ``num_workers``,
            ``seed`` (of window order and positions): see
            :class:`~domainfm.data.datamodule.SeededDataModule`.
    """

    label_type: Literal["mask", "scene", "boxes"] = "mask"
    """What a window's label is (see :class:`LabeledRasterDataset`)."""

    def __init__(
        self,
        *,
        images: Sequence[str],
        label: str,
        label_map: Mapping[int, int] | None = None,
        class_names: Sequence[str] | None = None,
        train_rows: tuple[int, int] | None = None,
        val_rows: tuple[int, int] | None = None,
        samples_per_epoch: int = 256,
        object_classes: Sequence[int] | None = None,
        min_object_pixels: int = 4,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.patterns = list(images)
        self.label = label
        self.label_map = dict(label_map) if label_map is not None else None
        self.class_names = list(class_names) if class_names is not None else None
        self.train_rows = tuple(train_rows) if train_rows is not None else None
        self.val_rows = tuple(val_rows) if val_rows is not None else None
        self.samples_per_epoch = samples_per_epoch
        self.object_classes = list(object_classes) if object_classes is not None else None
        self.min_object_pixels = min_object_pixels
        self.files: list[Path] = []
        self.train_set: LabeledRasterDataset | None = None
        self.val_set: LabeledRasterDataset | None = None

    def _dataset(self, rows: tuple[int, ...] | None, *, grid: bool) -> LabeledRasterDataset:
        assert self.stats is not None
        return LabeledRasterDataset(
            images=self.files,
            label=resolve_data_path(self.label),
            size=self.size,
            bands=self.bands,
            band_names=self.band_names,
            stats=self.stats,
            label_map=self.label_map,
            rows=(rows[0], rows[1]) if rows is not None else None,
            samples_per_epoch=None if grid else self.samples_per_epoch,
            label_type=self.label_type,
            object_classes=self.object_classes,
            min_object_pixels=self.min_object_pixels,
        )

    def setup(self, stage: str) -> None:
        if self.stats is None:
            self.files = expand_files(self.patterns)
            self.compute_stats(self.files)
        if stage == "fit" and self.train_set is None:
            self.train_set = self._dataset(self.train_rows, grid=False)
        if self.val_rows is not None and self.val_set is None:
            self.val_set = self._dataset(self.val_rows, grid=True)
        if stage != "fit" and self.val_set is None:
            raise ValueError(f"stage {stage!r} needs val_rows (the validation region)")

    def val_dataloader(self) -> StatefulDataLoader | list[StatefulDataLoader]:
        if self.val_set is None:
            return []
        return self.eval_loader(self.val_set)

    def test_dataloader(self) -> StatefulDataLoader | list[StatefulDataLoader]:
        return self.val_dataloader()

    def input_contract(self) -> RasterContract:
        """Bands and normalization (used by tiled prediction), window size, classes."""
        return self.raster_contract(
            class_names=self.class_names,
            extra={
                "label_map": self.label_map,
                "label_type": self.label_type,
                "object_classes": self.object_classes,
            },
        )


class RasterSceneDataModule(RasterSegDataModule):
    """Scene classification: labeled raster windows, each labeled with its dominant class
    (the most frequent class id >= 1 of its label window; 0 when it has none). Arguments as
    :class:`RasterSegDataModule`; use with ``FinetuneModule(task="classification")``.
    """

    label_type = "scene"


class RasterDetectionDataModule(RasterSegDataModule):
    """Object detection: labeled raster windows whose targets are the boxes of the connected
    regions of ``object_classes`` (at least ``min_object_pixels`` pixels) in the label
    window; batches from :func:`~domainfm.data.collate.collate_detection`.
    Arguments as :class:`RasterSegDataModule`; use with
    :class:`~domainfm.tasks.detection_module.DetectionModule`.
    """

    label_type = "boxes"
    collate = staticmethod(collate_detection)
