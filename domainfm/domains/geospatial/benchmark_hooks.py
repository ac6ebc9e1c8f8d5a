"""The geospatial ``domainfm benchmark`` hooks: frozen features, few-label fine-tuning and
continued pretraining on a task's windows and chips.

* :meth:`GeospatialBenchmark.embed` (eval mode, no randomness: the same item always gives the same
  features): **classification** items give the backbone's pooled embedding ``[D]``;
  **segmentation** items give the patch tokens of the last block ``[T, D]``
  (``forward_intermediates(x, 1, norm=True)``), each labeled with its patch's majority class
  among its labeled pixels (ties: the smaller index; ``UNLABELED``, the task's
  ``ignore_index`` 0, when it has none). An item keeps at most :data:`MAX_TOKENS_PER_ITEM`
  tokens, a subset drawn by a generator seeded from the item's key (so memory stays bounded
  on large windows, and the subset is the same in every run).
* :meth:`GeospatialBenchmark.finetune`: a fresh ``backbone.build(seed)`` in the
  :class:`~domainfm.tasks.finetune_module.FinetuneModule` ``domainfm fit`` uses (segmentation:
  UPerNet over a plain ViT, the ``"auto"`` decoder over a multi-scale backbone, trained on
  every class, unlabeled pixels' class 0 included, as the raster data modules train;
  classification: a linear head, full fine-tuning), trained ``steps`` optimizer steps on the
  training items (:func:`~domainfm.tasks.benchmark.fitting.fit_steps`, under the seed), then
  scored on the test items' labeled pixels (or items) with
  :func:`~domainfm.tasks.benchmark.metrics.task_metrics`, a pixel's prediction being its
  best labeled class. The test predictions are held as one class index per labeled pixel.
* :meth:`GeospatialBenchmark.adapt`: the model pretrained further for ``steps`` steps by
  :class:`~domainfm.tasks.pretrain_module.PretrainModule` on the items' windows (their
  labels unused; no pixel outside them is read), masked as the raster data modules mask
  (:func:`~domainfm.domains.geospatial.datamodule.raster_masking_collate`). Recipes
  (:data:`RECIPES`): ``"mae"`` (normalized pixels) and ``"fgmae"`` (HOG and normalized
  difference indices; needs Sentinel-2 band names B03, B04, B08, B11).

Inputs are read and normalized by :mod:`~domainfm.domains.geospatial.benchmark_windows`.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from domainfm.core.masking import MaskingSpec
from domainfm.core.objectives.hog_target import HOGTarget
from domainfm.core.objectives.mae import MAE
from domainfm.data.sampling import seeded_loader
from domainfm.domains.geospatial.benchmark_labels import UNLABELED
from domainfm.domains.geospatial.benchmark_tasks import read_geospatial_task
from domainfm.domains.geospatial.benchmark_windows import TaskWindows, patch_size, task_contract
from domainfm.domains.geospatial.contract import RasterContract
from domainfm.domains.geospatial.datamodule import raster_masking_collate
from domainfm.domains.geospatial.fgmae_targets import FeatureTargets, NormalizedDifferenceTarget
from domainfm.tasks.benchmark.fitting import fit_steps, seeded
from domainfm.tasks.benchmark.hooks import (
    AdaptRequest,
    DomainBenchmark,
    EmbedRequest,
    FinetuneRequest,
)
from domainfm.tasks.benchmark.metrics import task_metrics
from domainfm.tasks.benchmark.task import BenchmarkTask, ItemFeatures, LabeledItem
from domainfm.tasks.finetune_module import FinetuneModule
from domainfm.tasks.pretrain_module import PretrainModule

MAX_TOKENS_PER_ITEM = 4096
"""Most patch tokens one segmentation item contributes to the probes."""
RECIPES = ("mae", "fgmae")
"""Continued-pretraining recipes :meth:`GeospatialBenchmark.adapt` knows."""
FINETUNE_BATCH = 16
"""Windows per fine-tuning step (fewer when the training split is smaller)."""
FINETUNE_LR = 1e-3
ADAPT_BATCH = 16
ADAPT_LR = 1.5e-4
"""Continued pretraining starts from trained weights: MAE's usual peak rate, not a scratch
run's."""


def _batches(data: TaskWindows, batch_size: int) -> Iterator[tuple[list[int], dict[str, Tensor]]]:
    """Consecutive items of one shape, at most ``batch_size`` at a time, stacked."""
    indices: list[int] = []
    samples: list[dict[str, Tensor]] = []
    for index in range(len(data)):
        sample = data[index]
        if samples and (
            len(samples) == batch_size or sample["input"].shape != samples[0]["input"].shape
        ):
            yield indices, {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
            indices, samples = [], []
        indices.append(index)
        samples.append(sample)
    if samples:
        yield indices, {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


def patch_labels(label: Tensor, grid: Sequence[int], num_classes: int) -> Tensor:
    """The majority class of each cell of ``grid`` over a label window ``(h, w)`` of class
    indices (cells as adaptive pooling cuts them; unlabeled pixels do not vote; ties: the
    smaller index; :data:`UNLABELED` for a cell without a labeled pixel):
    ``(grid_h * grid_w,)`` int64."""
    onehot = F.one_hot(label.long(), num_classes).permute(2, 0, 1).float()  # (C, h, w)
    onehot[UNLABELED] = 0.0
    share = F.adaptive_avg_pool2d(onehot[None], (int(grid[0]), int(grid[1])))[0]  # (C, gh, gw)
    labeled = share.sum(0) > 0
    return torch.where(labeled, share.argmax(0), UNLABELED).flatten()


def _token_subset(key: str, count: int) -> Tensor:
    """At most :data:`MAX_TOKENS_PER_ITEM` token positions, in order, drawn from the key."""
    if count <= MAX_TOKENS_PER_ITEM:
        return torch.arange(count)
    generator = torch.Generator().manual_seed(zlib.crc32(key.encode("utf-8")))
    return torch.randperm(count, generator=generator)[:MAX_TOKENS_PER_ITEM].sort().values


def _windows(
    task: BenchmarkTask,
    items: Sequence[LabeledItem],
    contract: RasterContract,
    model: nn.Module,
    **kwargs: Any,
) -> TaskWindows:
    """Items of one padded shape (batched for training and scoring)."""
    return TaskWindows(
        task=task, items=items, contract=contract, pad_to=patch_size(model), uniform=True, **kwargs
    )


def _objective(recipe: str, contract: RasterContract, patch: tuple[int, int]) -> MAE:
    """The recipe's MAE: a small decoder, normalized pixels (``"mae"``) or HOG and normalized
    difference indices of the physical bands (``"fgmae"``)."""
    target = None
    if recipe == "fgmae":
        mean, std = contract.moments()
        target = FeatureTargets(
            targets=[
                HOGTarget(cell_size=math.gcd(*patch, 8)),
                NormalizedDifferenceTarget(
                    band_names=contract.bands, mean=mean.tolist(), std=std.tolist()
                ),
            ]
        )
    return MAE(decoder_dim=64, decoder_depth=2, decoder_heads=4, target=target)


class GeospatialBenchmark(DomainBenchmark):
    """The geospatial domain's ``domainfm benchmark`` hooks (see the module docstring):
    scene rasters with a label raster, chip CSVs and STAC catalogs
    (:func:`~domainfm.domains.geospatial.benchmark_tasks.read_geospatial_task`)."""

    recipes = RECIPES
    finetune_kinds = ("classification", "segmentation")

    def read_task(self, spec: Path, options: Mapping[str, str]) -> BenchmarkTask | None:
        return read_geospatial_task(spec, options)

    def embed(self, request: EmbedRequest) -> list[ItemFeatures]:
        """Frozen features of ``items``, in order (see the module docstring)."""
        if not request.items:
            return []
        data = TaskWindows(
            task=request.task,
            items=request.items,
            contract=task_contract(request.backbone, request.task, request.items),
            pad_to=patch_size(request.model),
        )
        was_training = request.model.training
        request.model.eval().to(request.device)
        out: list[ItemFeatures] = []
        try:
            with torch.no_grad():
                for indices, batch in _batches(data, request.batch_size):
                    x = batch["input"].to(request.device)
                    if request.task.kind != "segmentation":
                        out += [ItemFeatures(f) for f in request.model(x).float().cpu()]
                        continue
                    maps = request.model.forward_intermediates(x, indices=1, norm=True)  # type: ignore[operator]
                    grid = maps[-1]  # (B, D, h, w)
                    tokens = grid.flatten(2).transpose(1, 2).float().cpu()  # (B, T, D)
                    for i, index in enumerate(indices):
                        labels = patch_labels(
                            batch["label"][i], grid.shape[2:], request.task.num_classes
                        )
                        keep = _token_subset(data.items[index].key, tokens.shape[1])
                        out.append(ItemFeatures(tokens[i, keep], labels[keep]))
        finally:
            request.model.train(was_training)
        return out

    def finetune(self, request: FinetuneRequest) -> dict[str, float]:
        """Fine-tune a fresh copy of ``backbone`` on ``train`` and score it on ``test`` (see
        the module docstring)."""
        contract = task_contract(request.backbone, request.task, request.train)
        model = request.backbone.build(request.seed)
        segmentation = request.task.kind == "segmentation"
        train_set = _windows(request.task, request.train, contract, model)
        with seeded(request.seed):  # the head's init and the training randomness follow the seed
            module = FinetuneModule(
                backbone=model,
                task="segmentation" if segmentation else "classification",
                num_classes=request.task.num_classes,
                decoder="auto" if hasattr(model, "feature_channels") else "upernet",
                decoder_dim=32,
                lr=FINETUNE_LR,
                warmup_steps=max(1, request.steps // 10),
            )
            loader = seeded_loader(
                train_set, batch_size=min(FINETUNE_BATCH, len(request.train)), seed=request.seed
            )
            fit_steps(module, steps=request.steps, device=request.device, train_dataloaders=loader)
        test_set = _windows(request.task, request.test, contract, model)
        scores, targets = [], []
        module.eval().to(request.device)
        with torch.no_grad():
            for batch in DataLoader(test_set, batch_size=FINETUNE_BATCH):
                logits = module(batch["input"].to(request.device)).float().cpu()
                label = batch["label"]
                if segmentation:  # labeled pixels only, each its best labeled class
                    keep = label != UNLABELED
                    logits[:, UNLABELED] = float("-inf")
                    scores.append(logits.argmax(1)[keep].to(torch.int16))
                    targets.append(label[keep].to(torch.int16))
                else:
                    scores.append(logits)
                    targets.append(label)
        return task_metrics(
            request.task.kind,
            torch.cat(scores),
            torch.cat(targets),
            num_classes=request.task.num_classes,
            ignore_index=request.task.ignore_index,
        )

    def adapt(self, request: AdaptRequest) -> nn.Module:
        """``model`` pretrained further on the windows of ``items`` (see the module docstring);
        returned on the CPU.

        Raises:
            ValueError: an unknown ``recipe`` (naming the known ones), or one the bands or the
                patch size do not allow.
        """
        if request.recipe not in RECIPES:
            raise ValueError(
                f"adapt recipe {request.recipe!r}: geospatial knows {', '.join(RECIPES)}"
            )
        contract = task_contract(request.backbone, request.task, request.items)
        data = _windows(request.task, request.items, contract, request.model, labels=False)
        collate = raster_masking_collate(
            masking=MaskingSpec(patch_size=patch_size(request.model)),
            time_steps=1,
            band_groups=None,
        )
        loader = seeded_loader(
            data, batch_size=min(ADAPT_BATCH, len(data)), seed=request.seed, collate_fn=collate
        )
        with seeded(request.seed):
            module = PretrainModule(
                backbone=request.model,
                objectives={
                    request.recipe: _objective(request.recipe, contract, patch_size(request.model))
                },
                lr=ADAPT_LR,
                warmup_steps=max(1, request.steps // 10),
                domain="geospatial",
            )
            fit_steps(module, steps=request.steps, device=request.device, train_dataloaders=loader)
        return request.model.cpu()
