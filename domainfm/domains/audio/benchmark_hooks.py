"""What ``domainfm benchmark`` asks of the audio domain: frozen features of labeled clips,
few-label fine-tuning, and continued pretraining on the task's recordings.

Every hook prepares its input as :func:`~domainfm.domains.audio.benchmark_inputs.
task_contract` says: the backbone's recorded contract (front end with its statistics,
segment length), else the domain's defaults (BYOL-A's log-mel over 96-frame segments,
normalized over the task's recordings). A bad recording raises a ``ValueError`` naming it.

**Features** (:meth:`AudioBenchmark.embed`) are those of the HEAR API
(:class:`~domainfm.domains.audio.hear.HEARModel`, the model in eval mode): token columns
over consecutive segments of the whole clip. Scene tasks (classification, multilabel): the
clip's scene embedding ``[D]`` (the mean of its columns). Timestamp tasks: the columns
``[T, D]`` of the recording (streamed window by window, :func:`~domainfm.domains.audio.hear.
embed_file`) with 0/1 labels ``[T, C]``: a column is active for a class when its centre lies
within one of that class's events (ends included, as hear-eval-kit labels timestamps). An
item with more than :data:`MAX_POSITIONS` columns keeps that many, drawn without replacement
by a generator seeded from its key (in time order), so memory stays bounded and the draw is
the same in every run. Clips of one length are embedded ``batch_size`` at a time.

**Fine-tuning** (:meth:`AudioBenchmark.finetune`, classification tasks): a fresh
``backbone.build(seed)`` in :class:`~domainfm.tasks.finetune_module.FinetuneModule`
(``mode="full"``, linear head) trained ``steps`` optimizer steps by a Lightning ``Trainer``
(no logger, no checkpoints) on fixed-length crops of the training clips
(:class:`~domainfm.domains.audio.segments.AudioClipDataset`: a random crop of longer clips,
zero-padding of shorter ones; bad training clips skipped as in ``domainfm fit``), with the
seeded loader of the data modules, the RNG seeded from ``seed`` (the caller's RNG state
untouched). Test clips are scored on their centre crop, as ``domainfm fit`` validates, with
:func:`~domainfm.tasks.benchmark.metrics.task_metrics`. Timestamp tasks fine-tune the sound
event detection model (:func:`~domainfm.domains.audio.benchmark_events.
finetune_event_items`: frame-level metrics and event F1). Multi-label scene tasks are not
fine-tuned (:class:`~domainfm.tasks.benchmark.hooks.UnsupportedProtocol`: ``FinetuneModule`` has
no multi-label head); their probes run on the frozen features.

**Adaptation** (:meth:`AudioBenchmark.adapt`) continues pretraining on the items'
recordings (labels unused) with :class:`~domainfm.tasks.pretrain_module.PretrainModule` over
:class:`~domainfm.domains.audio.datamodule.AudioPretrainDataModule` segments of the
contract's length, as ``configs/audio/{mae,byola}_audio.yaml`` do: ``"mae"`` (ViT
backbones: 75 % of the patches masked, a 2-block decoder) or ``"byol"`` (BYOL-A's two views
and an EMA target; AudioNTT2020 and other CNNs).

Example::

    >>> feats = AudioBenchmark().embed(EmbedRequest(
    ...     model=model, backbone=backbone, task=task, items=task.items, device="cpu",
    ...     batch_size=32))
    >>> feats[0].features.shape      # a scene task: one [D] vector per clip
    torch.Size([96])
"""

from __future__ import annotations

import glob
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from domainfm.core.masking import MaskingSpec
from domainfm.core.objectives.byol import BYOL
from domainfm.core.objectives.mae import MAE
from domainfm.domains.audio.benchmark_events import finetune_event_items
from domainfm.domains.audio.benchmark_inputs import (
    frame_targets,
    item_class,
    item_events,
    item_path,
    item_wave,
    kept_positions,
    task_contract,
)
from domainfm.domains.audio.benchmark_tasks import read_audio_task
from domainfm.domains.audio.contract import AudioContract
from domainfm.domains.audio.datamodule import AudioPretrainDataModule
from domainfm.domains.audio.file_checks import FileChecks
from domainfm.domains.audio.hear import HEARModel, embed_file
from domainfm.domains.audio.segments import AudioClipDataset
from domainfm.tasks.benchmark.fitting import fit_seeded, fit_steps, seeded
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

MAX_POSITIONS = 4096
"""Most columns (positions) a timestamp item keeps."""
RECIPES = ("mae", "byol")
"""The continued-pretraining recipes of :meth:`AudioBenchmark.adapt`."""
STREAM_WINDOW_S = 30.0
"""Seconds of a timestamp recording read at a time."""


def _timestamp_features(
    hear: HEARModel, task: BenchmarkTask, item: LabeledItem, max_positions: int
) -> ItemFeatures:
    """A recording's columns ``[T, D]`` and their labels ``[T, C]`` (at most
    ``max_positions``)."""
    columns, centres_ms, _ = embed_file(item_path(item), hear, window_s=STREAM_WINDOW_S)
    labels = frame_targets(item_events(item), centres_ms / 1000.0, task.num_classes)
    keep = kept_positions(len(columns), item.key, max_positions)
    if keep is not None:
        columns, labels = columns[keep], labels[keep]
    return ItemFeatures(columns.contiguous(), labels)


def _scene_features(hear: HEARModel, items: Sequence[LabeledItem]) -> list[ItemFeatures]:
    """Scene embeddings of ``items``, clips of one length encoded together."""
    waves = [item_wave(item, hear.sample_rate) for item in items]
    by_length: dict[int, list[int]] = {}
    for k, wave in enumerate(waves):
        by_length.setdefault(wave.shape[-1], []).append(k)
    out: dict[int, ItemFeatures] = {}
    for ks in by_length.values():
        columns, _ = hear.columns(torch.cat([waves[k] for k in ks]))  # (n, K, D)
        for k, clip in zip(ks, columns, strict=True):
            out[k] = ItemFeatures(clip.mean(dim=0))
    return [out[k] for k in range(len(items))]


def _clips(
    items: Sequence[LabeledItem], contract: AudioContract, *, train: bool
) -> AudioClipDataset:
    files = [str(item.inputs[0]) for item in items]
    return AudioClipDataset(
        files=files,
        labels=[item_class(item) for item in items],
        frontend=contract.frontend_module,
        frames=contract.frames,
        train=train,
        checks=FileChecks(files) if train else None,  # a bad test clip raises, naming it
    )


def _recipe(recipe: str, model: nn.Module, steps: int) -> Mapping[str, Any]:
    """``PretrainModule`` settings of a recipe (those of ``configs/audio``)."""
    warmup = min(10, steps // 10)
    if recipe == "mae":
        if not hasattr(model, "patch_size") or not hasattr(model, "blocks"):
            raise ValueError(
                f"adapt recipe 'mae' needs a ViT backbone (patch tokens); "
                f"{type(model).__name__} is not one: use 'byol'"
            )
        mae = MAE(decoder_dim=128, decoder_depth=2, decoder_heads=4)
        return {"objectives": {"mae": mae}, "lr": 1e-3, "warmup_steps": warmup}
    return {
        "objectives": {"byol": BYOL()},
        "lr": 3e-4,
        "warmup_steps": warmup,
        "projector_hidden_dim": 512,
        "projector_dim": 128,
        "ema_momentum": 0.99,
    }


class AudioBenchmark(DomainBenchmark):
    """The audio domain's ``domainfm benchmark`` hooks (see the module docstring): CSVs of
    clips and HEAR 2021 task folders
    (:func:`~domainfm.domains.audio.benchmark_tasks.read_audio_task`)."""

    recipes = RECIPES
    finetune_kinds = ("classification", "timestamps")

    def read_task(self, spec: Path, options: Mapping[str, str]) -> BenchmarkTask | None:
        return read_audio_task(spec, options)

    def embed(self, request: EmbedRequest) -> list[ItemFeatures]:
        """Frozen features of ``items``, in order (see the module docstring)."""
        contract = task_contract(request.backbone, request.task)
        # the front end stays on the CPU (HEARModel moves each chunk to the backbone's device)
        hear = HEARModel(
            request.model.to(request.device).eval(), contract.frontend_module, contract.frames
        ).eval()
        if request.task.kind == "timestamps":
            return [
                _timestamp_features(hear, request.task, item, MAX_POSITIONS)
                for item in request.items
            ]
        out: list[ItemFeatures] = []
        step = max(1, request.batch_size)
        for start in range(0, len(request.items), step):
            out += _scene_features(hear, request.items[start : start + step])
        return out

    def finetune(self, request: FinetuneRequest) -> dict[str, float]:
        """Fine-tune a fresh copy of ``backbone`` on ``train`` and score it on ``test`` (see the
        module docstring).

        Raises:
            UnsupportedProtocol: for a multi-label task.
        """
        batch_size, lr = 32, 1e-3
        self.check_plan(request.task, ["finetune"], None)
        if not request.train or not request.test:
            sizes = f"{len(request.train)}, {len(request.test)}"
            raise ValueError(f"fine-tuning needs training and test clips ({sizes})")
        contract = task_contract(request.backbone, request.task)
        if request.task.kind == "timestamps":
            return finetune_event_items(request, contract=contract)
        train_set, test_set = (
            _clips(request.train, contract, train=True),
            _clips(request.test, contract, train=False),
        )

        def make() -> FinetuneModule:
            return FinetuneModule(
                backbone=request.backbone.build(request.seed),
                task="classification",
                num_classes=request.task.num_classes,
                lr=lr,
                warmup_steps=min(10, request.steps // 10),
            )

        module = fit_seeded(
            make,
            train_set,
            seed=request.seed,
            steps=request.steps,
            device=request.device,
            batch_size=batch_size,
        )
        scores, labels = [], []
        with torch.no_grad():
            # its own generator: a loader draws its base seed, never from the caller's RNG
            for batch in DataLoader(test_set, batch_size=batch_size, generator=torch.Generator()):
                scores.append(module(batch["input"].to(request.device)).float().cpu())
                labels.append(batch["label"])
        return task_metrics(
            request.task.kind,
            torch.cat(scores),
            torch.cat(labels),
            num_classes=request.task.num_classes,
        )

    def adapt(self, request: AdaptRequest) -> nn.Module:
        """``model`` after ``steps`` steps of the ``recipe`` on the recordings of ``items``
        (see the module docstring); returned on the CPU in eval mode.

        Raises:
            ValueError: an unknown recipe, or ``"mae"`` for a backbone that is no ViT.
        """
        batch_size = 16
        if request.recipe not in RECIPES:
            raise ValueError(
                f"adapt recipe {request.recipe!r}: the audio domain has {', '.join(RECIPES)}"
            )
        contract = task_contract(request.backbone, request.task)
        files = sorted({str(path) for item in request.items for path in item.inputs})
        if not files:
            raise ValueError("adaptation needs recordings: no items given")
        settings = _recipe(request.recipe, request.model, request.steps)
        masking = MaskingSpec()  # BYOL-A's views draw no masks
        if request.recipe == "mae":  # masks on the backbone's token grid
            patch = tuple(getattr(request.model, "patch_size"))  # noqa: B009
            masking = MaskingSpec(patch_size=patch, ratio=0.75)
        with seeded(request.seed):
            module = PretrainModule(backbone=request.model.train(), domain="audio", **settings)
            data = AudioPretrainDataModule(
                files=[glob.escape(f) for f in files],  # paths, never patterns
                frontend=contract.frontend_module,
                frames=contract.frames,
                views="single" if request.recipe == "mae" else "byola",
                masking=masking,
                samples_per_epoch=batch_size * request.steps,
                batch_size=batch_size,
                num_workers=0,
                seed=request.seed,
            )
            fit_steps(module, steps=request.steps, device=request.device, datamodule=data)
        return module.backbone.cpu().eval()
