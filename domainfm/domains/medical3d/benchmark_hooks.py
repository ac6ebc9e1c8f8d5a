"""The medical3d hooks of ``domainfm benchmark``: frozen features, few-label fine-tuning and
continued pretraining on a volume segmentation task.

* :meth:`VolumeBenchmark.embed`
  (:func:`~domainfm.domains.medical3d.benchmark_features.embed_volumes`): patch-token
  features over sliding windows of whole volumes, each token's majority label.
* :meth:`VolumeBenchmark.finetune`: what ``domainfm fit`` runs for segmentation — a
  :class:`~domainfm.domains.medical3d.seg_datamodule.VolumeSegDataModule` (seeded,
  foreground-aware crops of the training ROI from the ``train`` cases) and a
  :class:`~domainfm.tasks.finetune_module.FinetuneModule` (Dice + CE, its default decoder) on
  a fresh ``backbone.build(seed)``, ``steps`` optimizer steps of a Lightning ``Trainer``
  (no logger, no checkpoints); then every ``test`` case is segmented whole with the module's
  sliding windows (ROI windows, 50 % overlap, Gaussian blending, as its ``sliding_window``
  validation) and scored: ``dice`` (torchmetrics Dice per case and foreground class, averaged
  over the cases where the class is in the label or the prediction, then over classes),
  ``dice_<class>`` per foreground class, and
  :func:`~domainfm.tasks.benchmark.metrics.task_metrics`'s segmentation metrics over all test
  voxels. A task with an ignore label is refused (Dice + CE has no ignore index).
* :meth:`VolumeBenchmark.adapt`: continued pretraining of the model with a named recipe
  (:data:`ADAPT_RECIPES`: ``"mae"``, ``"voco"``) by a
  :class:`~domainfm.tasks.pretrain_module.PretrainModule` on the medical pretraining data
  module (:class:`~domainfm.domains.medical3d.datamodule.VolumePretrainDataModule`: random
  ROI crops) over the items' image files; labels unused. The pretraining data module reads
  one-channel volumes, so a backbone of several input channels is refused.

Every run is seeded (``seed``: crops, masks, head init): the same seed gives the same numbers
on the same device. Costs follow ``steps``; crops, batches and decoders are kept small
(:data:`BATCH_SIZE`, :data:`DECODER_DIM`) for CPU runs. The fits are
:func:`~domainfm.tasks.benchmark.fitting.fit_steps` (quiet, nothing written), their weights
drawn under :func:`~domainfm.tasks.benchmark.fitting.seeded`.

Example::

    >>> metrics = VolumeBenchmark().finetune(FinetuneRequest(
    ...     backbone=backbone, task=task, train=train, test=test, seed=0, steps=50, device="cpu"))
    >>> sorted(metrics)[:3]
    ['accuracy', 'dice', 'dice_tumour']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import cast

import torch
from torch import Tensor, nn

from domainfm.core.masking import MaskingSpec
from domainfm.core.objectives.mae import MAE
from domainfm.core.objectives.voco import VoCo
from domainfm.domains.medical3d.benchmark_features import OVERLAP, embed_volumes
from domainfm.domains.medical3d.benchmark_inputs import VolumeSettings, load_case, volume_settings
from domainfm.domains.medical3d.benchmark_tasks import read_volume_task
from domainfm.domains.medical3d.datamodule import VolumePretrainDataModule
from domainfm.domains.medical3d.seg_datamodule import VolumeSegDataModule
from domainfm.domains.medical3d.views import VolumeViews
from domainfm.domains.medical3d.voco_crops import VoCoCrops
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

__all__ = ["ADAPT_RECIPES", "VolumeBenchmark", "embed_volumes", "score_volumes", "segment_case"]

ADAPT_RECIPES = ("mae", "voco")
"""Continued-pretraining recipes on volumes."""
BATCH_SIZE = 2
"""Training crops per step (fine-tuning and adaptation)."""
SAMPLES_PER_VOLUME = 16
"""Crops per case per epoch (epochs only order the crops; ``steps`` ends the run)."""
DECODER_DIM = 32
"""Width of the fine-tuning segmentation decoder."""
FINETUNE_LR = 1e-3
ADAPT_LR = 1.5e-4
"""Peak learning rates (PretrainModule's default for continued pretraining)."""
POSITIVE_FRACTION = 0.5
"""Share of fine-tuning crops centred on a labeled voxel."""


def score_volumes(
    module: nn.Module,
    task: BenchmarkTask,
    test: Sequence[LabeledItem],
    settings: VolumeSettings,
    device: str,
) -> dict[str, float]:
    """Whole-volume Dice and :func:`task_metrics` of ``module`` on the ``test`` cases."""
    from torchmetrics.functional.segmentation import dice_score

    predicted, expected, dice = [], [], []
    for item in test:
        image, label = load_case(item, settings)
        pred = segment_case(module, image, settings.roi, device)  # (D, H, W)
        dice.append(
            dice_score(
                pred[None],
                label,
                num_classes=task.num_classes,
                include_background=False,
                average="none",
                input_format="index",
            )[0]
        )  # (K - 1,): NaN where the class is in neither
        predicted.append(pred.flatten())
        expected.append(label.flatten())
    metrics = task_metrics(
        "segmentation",
        torch.cat(predicted),
        torch.cat(expected),
        num_classes=task.num_classes,
        ignore_index=task.ignore_index,
    )
    per_class = torch.stack(dice).nanmean(dim=0)
    metrics["dice"] = float(per_class.nanmean())
    for name, value in zip(task.classes[1:], per_class.tolist(), strict=True):
        metrics[f"dice_{name}"] = float(value)
    return metrics


def segment_case(module: nn.Module, image: Tensor, roi: Sequence[int], device: str) -> Tensor:
    """``(D, H, W)`` class indices of the ``(C, D, H, W)`` image: MONAI sliding windows of
    ``roi`` (Gaussian blending, :data:`OVERLAP`), on the CPU."""
    from monai.inferers import sliding_window_inference

    with torch.no_grad():
        logits = sliding_window_inference(
            image[None].to(device),
            roi_size=tuple(roi),
            sw_batch_size=BATCH_SIZE,
            predictor=module,
            overlap=OVERLAP,
            mode="gaussian",
        )
    return cast(Tensor, logits).argmax(dim=1)[0].cpu()


class VolumeBenchmark(DomainBenchmark):
    """The medical3d domain's ``domainfm benchmark`` hooks (see the module docstring): MSD /
    nnU-Net ``dataset.json`` and CSV task specs
    (:func:`~domainfm.domains.medical3d.benchmark_tasks.read_volume_task`)."""

    recipes = ADAPT_RECIPES
    finetune_kinds = ("segmentation",)
    finetune_ignore_index = False  # Dice + CE has no ignore index

    def read_task(self, spec: Path, options: Mapping[str, str]) -> BenchmarkTask | None:
        return read_volume_task(spec, options)

    def embed(self, request: EmbedRequest) -> list[ItemFeatures]:
        return embed_volumes(request)

    def finetune(self, request: FinetuneRequest) -> dict[str, float]:
        """Fine-tune a fresh ``backbone.build(seed)`` on ``train`` and score it on whole
        ``test`` volumes (module docstring).

        Raises:
            UnsupportedProtocol: for a task with an ignore label.
            ValueError: for a backbone that does not take the task's channels, or an
                unreadable case (naming the file).
        """
        self.check_plan(request.task, ["finetune"], None)
        model = request.backbone.build(request.seed)
        settings = volume_settings(request.backbone, request.task, model)
        data = VolumeSegDataModule(
            images=[list(item.inputs) for item in request.train],
            labels=[str(item.target) for item in request.train],
            label_map=dict(settings.label_map),
            class_names=list(request.task.classes),
            crop_size=settings.roi,
            samples_per_volume=SAMPLES_PER_VOLUME,
            positive_fraction=POSITIVE_FRACTION,
            batch_size=BATCH_SIZE,
            seed=request.seed,
            **settings.preprocessing.as_kwargs(),
        )
        with seeded(request.seed):  # the head's init
            module = FinetuneModule(
                backbone=model,
                task="segmentation",
                num_classes=request.task.num_classes,
                lr=FINETUNE_LR,
                warmup_steps=max(1, request.steps // 10),
                decoder_dim=DECODER_DIM,
                sliding_window=settings.roi,
            )
            fit_steps(module, steps=request.steps, device=request.device, datamodule=data)
        return score_volumes(
            module.eval().to(request.device), request.task, request.test, settings, request.device
        )

    def adapt(self, request: AdaptRequest) -> nn.Module:
        """``model`` after ``steps`` steps of the pretraining ``recipe`` on the image files of
        ``items`` (module docstring), in eval mode.

        Raises:
            ValueError: for an unknown recipe, a backbone of several input channels, or an
                unreadable volume (naming the file).
        """
        if request.recipe not in ADAPT_RECIPES:
            raise ValueError(
                f"adapt recipe {request.recipe!r} is not one of the medical3d recipes: "
                f"{', '.join(ADAPT_RECIPES)}"
            )
        settings = volume_settings(request.backbone, request.task, request.model)
        if settings.channels != 1:
            raise ValueError(
                f"adapting backbone {request.backbone.label}: the volume pretraining data are "
                f"one-channel volumes, the backbone takes {settings.channels} channels"
            )
        patch = getattr(request.model, "patch_size", settings.roi)
        files = list(dict.fromkeys(str(path) for item in request.items for path in item.inputs))
        views: int | VolumeViews = 1  # MAE: one random crop
        if request.recipe == "voco":
            views = VoCoCrops(crop_size=settings.roi, grid=(2, 2, 1), num_crops=2)
        data = VolumePretrainDataModule(
            files=files,
            crop_size=settings.roi,
            masking=MaskingSpec(patch_size=patch, ratio=0.75),
            samples_per_volume=SAMPLES_PER_VOLUME,
            views=views,
            strict=True,
            batch_size=BATCH_SIZE,
            seed=request.seed,
            **settings.preprocessing.as_kwargs(),
        )
        with seeded(request.seed):  # the objective's heads
            objective: nn.Module = (
                VoCo(hidden_dim=512, out_dim=512)
                if request.recipe == "voco"
                else MAE(decoder_dim=64, decoder_depth=2, decoder_heads=4)
            )
            module = PretrainModule(
                backbone=request.model,
                objectives={request.recipe: objective},
                lr=ADAPT_LR,
                warmup_steps=max(1, request.steps // 10),
                domain="medical3d",
            )
            fit_steps(module, steps=request.steps, device=request.device, datamodule=data)
        return request.model.eval()
