"""A geospatial benchmark task's items as model input: windows (or whole chips) of rasters,
normalized as the backbone expects, with their labels.

**Normalization** (:func:`task_contract`): the backbone's input contract when it records one
(its bands, picked by name from the files, and its normalization:
:class:`~domainfm.domains.geospatial.contract.RasterContract`, with the task's
``input_scale=`` option; a release's ``scale_check`` refuses input in the wrong units with
the factor that fixes it, :func:`~domainfm.domains.geospatial.normalization.
check_input_scale`); else the domain's default, the per-band statistics of the task's
rasters (:func:`~domainfm.domains.geospatial.stats.compute_band_stats` over every scene of
the task, the task's ``bands=`` or all bands), as the raster data modules standardize.
Statistics are unsupervised and the same for every split, so features cached once serve
every split; they are computed once per process for a set of files. Invalid pixels (nodata,
masked) are 0 after normalization.

**Items** (:class:`TaskWindows`): an item's region of its raster (the whole chip without
one), read through :class:`~domainfm.domains.geospatial.raster_reader.RasterReader`,
padded at the bottom/right to a multiple of the backbone's patch size (or to one shape for
the whole set with ``uniform=True``, chips of several sizes batched together); padding is
invalid input (0) and unlabeled. Segmentation labels are the task's class indices ``(h, w)``
(:data:`~domainfm.domains.geospatial.benchmark_labels.UNLABELED`, class 0, where
unlabeled); classification labels are the item's class.

Shapes::

    ds[i]   {"input": (C, h, w) float32, "label": (h, w) int64 | () int64}
    ds[(i, seed)]   the same with "seed" (from a SeededSampler; MAE masks follow it)
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from domainfm.domains.geospatial.benchmark_labels import UNLABELED, ClassTable
from domainfm.domains.geospatial.contract import RasterContract
from domainfm.domains.geospatial.normalization import as_raster_contract, check_input_scale
from domainfm.domains.geospatial.raster_reader import RasterReader
from domainfm.domains.geospatial.stats import BandStats, compute_band_stats
from domainfm.tasks.benchmark.backbones import BenchmarkBackbone
from domainfm.tasks.benchmark.task import BenchmarkTask, LabeledItem


@functools.lru_cache(maxsize=8)
def _task_stats(files: tuple[Path, ...], bands: tuple[str, ...] | None) -> BandStats:
    return compute_band_stats(list(files), bands=list(bands) if bands is not None else None)


def task_contract(
    backbone: BenchmarkBackbone, task: BenchmarkTask, items: Sequence[LabeledItem]
) -> RasterContract:
    """How ``task``'s rasters become ``backbone``'s input (see the module docstring); a
    release's ``scale_check`` is run on the first of ``items``.

    Raises:
        ValueError: naming the file, for input in the wrong units, bands the files lack.
    """
    scale = task.metadata.get("input_scale")
    if not backbone.contract:
        bands = task.metadata.get("bands")
        files = tuple(sorted({path for item in task.items for path in item.inputs}))
        return _task_stats(files, tuple(bands) if bands else None).contract()
    contract = as_raster_contract(backbone.contract)
    if scale is not None:
        contract = dataclasses.replace(contract, input_scale=float(scale))
    if isinstance(backbone.contract.get("scale_check"), Mapping) and items:
        item = items[0]
        reader = RasterReader()
        raster = reader.read(item.inputs[0], item.region, contract.bands, require_valid=False)
        reader.close()
        check_input_scale(
            raster.array * np.float32(contract.input_scale),
            {**backbone.contract, "input_scale": 1.0},
            source=f"{item.inputs[0]} (read with input_scale={contract.input_scale:g})",
            bands=list(raster.band_names),
            mask=raster.mask,
        )
    return contract


def patch_size(model: nn.Module) -> tuple[int, int]:
    """The backbone's patch size (input pixels per token along rows and columns)."""
    patch = getattr(model, "patch_size", 1)
    sides = (patch, patch) if isinstance(patch, int) else tuple(int(p) for p in patch)
    return (sides[0], sides[-1])


class TaskWindows(Dataset[dict[str, Tensor]]):
    """The items of a task, read and normalized (see the module docstring).

    Args:
        task: the task (its kind, classes and label values).
        items: the items read, in order.
        contract: bands and normalization (:func:`task_contract`).
        pad_to: pad each side to a multiple of this ``(rows, cols)`` (the patch size).
        uniform: pad every item to one shape (the largest, rounded up to ``pad_to``).
        labels: read labels (``False``: input only, for pretraining).
    """

    def __init__(
        self,
        *,
        task: BenchmarkTask,
        items: Sequence[LabeledItem],
        contract: RasterContract,
        pad_to: tuple[int, int] = (1, 1),
        uniform: bool = False,
        labels: bool = True,
    ) -> None:
        if not items:
            raise ValueError(f"{task.source}: no items to read")
        self.task = task
        self.items = list(items)
        self.contract = contract
        self.pad_to = pad_to
        self.labels = labels
        self.table = ClassTable.from_metadata(task.metadata)
        mean, std = contract.moments()
        self.mean = torch.from_numpy(mean)[:, None, None]
        self.std = torch.from_numpy(std)[:, None, None]
        self.reader = RasterReader()
        self.shape: tuple[int, int] | None = None
        if uniform:
            sizes = [self._window(item)[2:] for item in self.items]
            self.shape = self._padded(max(s[0] for s in sizes), max(s[1] for s in sizes))

    def __len__(self) -> int:
        return len(self.items)

    def _window(self, item: LabeledItem) -> tuple[int, int, int, int]:
        if item.region is not None:
            row, col, h, w = item.region
            return (row, col, h, w)
        info = self.reader.info(item.inputs[0])
        return (0, 0, info.height, info.width)

    def _padded(self, h: int, w: int) -> tuple[int, int]:
        return (-(-h // self.pad_to[0]) * self.pad_to[0], -(-w // self.pad_to[1]) * self.pad_to[1])

    def _pad(self, x: Tensor, value: float) -> Tensor:
        h, w = x.shape[-2:]
        target = self.shape or self._padded(h, w)
        return F.pad(x, (0, target[1] - w, 0, target[0] - h), value=value)

    def read_input(self, item: LabeledItem) -> Tensor:
        """The item's normalized window ``(C, h, w)``, not padded."""
        window = self._window(item)
        raster = self.reader.read(item.inputs[0], window, self.contract.bands, require_valid=False)
        x = torch.from_numpy(np.ascontiguousarray(raster.array, dtype=np.float32))
        x = (x - self.mean) / self.std
        return x.masked_fill(~torch.from_numpy(raster.mask)[None], 0.0)

    def read_label(self, item: LabeledItem) -> Tensor:
        """The item's label: the class indices ``(h, w)`` of its label window
        (segmentation, not padded) or its class ``()``."""
        if not isinstance(item.target, Path):
            return torch.tensor(int(item.target))  # type: ignore[arg-type]
        raster = self.reader.read(item.target, self._window(item), [1], require_valid=False)
        return torch.from_numpy(self.table.lookup(raster.array[0], raster.mask))

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Tensor]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        item = self.items[index]
        sample = {"input": self._pad(self.read_input(item), 0.0)}
        if self.labels:
            label = self.read_label(item)
            if label.ndim == 2:
                label = self._pad(label, UNLABELED)
            sample["label"] = label
        if seed is not None:
            sample["seed"] = torch.tensor(seed)
        return sample
