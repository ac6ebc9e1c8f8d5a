"""Run a benchmark plan: every backbone on the same folds, label subsets and seeds.

For each backbone (and, with adaptation, its continued-pretraining variant per fold):

1. frozen features of every item, once (:class:`~domainfm.tasks.benchmark.feature_cache.
   FeatureCache`; a random init once per seed, since its draw is part of the variance);
2. for each fold, label fraction and seed: the ``linear`` and ``knn`` probes on those
   features, and ``finetune`` through the domain's hook;
3. each run's metrics are recorded; a seed's value is the mean over folds.

The domain work goes through :class:`DomainBenchmark` (the domain plugin implements it). One
progress bar covers the whole plan.

Example::

    >>> results = run_benchmark(task, backbones, plugin, BenchmarkSettings(seeds=(0, 1)), out)
    >>> results["summary"][0]["mean"]
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from domainfm.pretrained.export import CONFIG_NAME, WEIGHTS_NAME, export_backbone
from domainfm.tasks.benchmark.backbones import BenchmarkBackbone
from domainfm.tasks.benchmark.feature_cache import FeatureCache, file_stamps
from domainfm.tasks.benchmark.hooks import (
    AdaptRequest,
    DomainBenchmark,
    EmbedRequest,
    FinetuneRequest,
)
from domainfm.tasks.benchmark.metrics import task_metrics
from domainfm.tasks.benchmark.probes import ProbeData, knn_scores, linear_probe
from domainfm.tasks.benchmark.splits import label_subset, make_folds
from domainfm.tasks.benchmark.task import BenchmarkTask, ItemFeatures, LabeledItem

PROTOCOLS = ("linear", "knn", "finetune")
FROZEN = ("linear", "knn")


@dataclass(frozen=True, kw_only=True)
class BenchmarkSettings:
    """How a benchmark runs.

    Attributes:
        protocols: any of ``linear``, ``knn``, ``finetune``.
        fractions: labeled fractions of each fold's training side, in (0, 1].
        seeds: the seeds every backbone runs with.
        num_folds: folds made by group when the task defines none.
        reference: label of the backbone the others are compared with (default: the first).
        adapt_recipe: continued-pretraining recipe for every pretrained backbone (``None``:
            no adaptation); ``adapt_steps``: its length.
        finetune_steps: optimizer steps of a fine-tuning run.
        device: ``cpu``, ``cuda`` …; ``batch_size``: items per forward for features.
        progress: show the progress bar.
    """

    protocols: tuple[str, ...] = FROZEN
    fractions: tuple[float, ...] = (1.0,)
    seeds: tuple[int, ...] = (0, 1, 2)
    num_folds: int = 5
    reference: str | None = None
    adapt_recipe: str | None = None
    adapt_steps: int = 100
    finetune_steps: int = 100
    device: str = "cpu"
    batch_size: int = 8
    progress: bool = True

    def __post_init__(self) -> None:
        unknown = [p for p in self.protocols if p not in PROTOCOLS]
        if unknown or not self.protocols:
            raise ValueError(f"protocols {unknown or '(none)'}: choose from {', '.join(PROTOCOLS)}")
        bad = [f for f in self.fractions if not 0.0 < f <= 1.0]
        if bad or not self.fractions:
            raise ValueError(f"label fractions must be in (0, 1], got {list(self.fractions)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and at least one, got {list(self.seeds)}")


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", label).strip("_") or "backbone"


@contextmanager
def _timed(record: dict[str, Any]) -> Iterator[None]:
    start = time.perf_counter()
    yield
    record["seconds"] = round(time.perf_counter() - start, 3)


class _Plan:
    """The folds, the backbone variants and one progress bar over all runs."""

    def __init__(
        self,
        task: BenchmarkTask,
        backbones: Sequence[BenchmarkBackbone],
        settings: BenchmarkSettings,
        out: Path,
    ) -> None:
        self.task, self.settings, self.out = task, settings, out
        self.folds = make_folds(task, num_folds=settings.num_folds)
        labels = [b.label for b in backbones]
        if len(set(labels)) != len(labels):
            twice = sorted({x for x in labels if labels.count(x) > 1})
            raise ValueError(f"backbone labels given twice: {twice}; name them LABEL@SPEC")
        self.backbones = list(backbones)
        self.adapted = [b for b in backbones if b.pretrained] if settings.adapt_recipe else []
        runs = len(self.folds) * len(settings.fractions) * len(settings.seeds)
        total = (len(self.backbones) + len(self.adapted)) * runs * len(settings.protocols)
        self.bar = tqdm(
            total=total + len(self.adapted) * len(self.folds),
            desc=f"benchmark {task.name}",
            unit="run",
            disable=not settings.progress,
        )

    def variants(self) -> Iterator[tuple[BenchmarkBackbone, bool]]:
        """Each backbone, then each adapted one: ``(backbone, adapt it per fold)``."""
        yield from ((b, False) for b in self.backbones)
        yield from ((b, True) for b in self.adapted)

    def adapted_variant(self, backbone: BenchmarkBackbone, fold: int) -> BenchmarkBackbone:
        """``backbone`` after continued pretraining on fold ``fold`` (its export folder)."""
        label = f"{backbone.label}+adapt"
        return backbone.adapted(label, self.out / "adapted" / _safe(label) / f"fold{fold}")


def run_benchmark(
    task: BenchmarkTask,
    backbones: Sequence[BenchmarkBackbone],
    hooks: DomainBenchmark,
    settings: BenchmarkSettings,
    out: Path,
) -> dict[str, Any]:
    """Run every backbone x protocol x fraction x seed x fold; returns the folds, the
    backbones, the settings and every run's record (``report.summarize`` makes the tables).
    """
    hooks.check_plan(task, settings.protocols, settings.adapt_recipe)
    plan = _Plan(task, backbones, settings, out)
    cache = FeatureCache(out / "cache" / "features")
    runs: list[dict[str, Any]] = []
    described: list[dict[str, Any]] = []
    started = time.perf_counter()
    try:
        for base, adapt in plan.variants():
            features = _FeatureSource(plan, hooks, cache)
            label = base.label
            for fold, (train, test) in enumerate(plan.folds):
                backbone = base
                if adapt:
                    backbone = plan.adapted_variant(base, fold)
                    label = backbone.label
                    _ensure_adapted(backbone, base, hooks, task, train, settings, fold)
                    plan.bar.update(1)
                    features = _FeatureSource(plan, hooks, cache)
                runs += _fold_runs(backbone, fold, train, test, task, hooks, settings, features)
            described.append(
                {**_describe(base), "label": label, "adapted_from": base.label if adapt else None}
            )
    finally:
        plan.bar.close()
    return {
        "folds": [{"train": len(tr), "test": len(te)} for tr, te in plan.folds],
        "backbones": described,
        "settings": asdict(settings),
        "runs": runs,
        "runtime_s": round(time.perf_counter() - started, 1),
    }


class _FeatureSource:
    """Frozen features of one backbone variant per init seed: memory, then the disk cache,
    then the domain's :meth:`~domainfm.tasks.benchmark.hooks.DomainBenchmark.embed`."""

    def __init__(self, plan: _Plan, hooks: DomainBenchmark, cache: FeatureCache) -> None:
        self.plan, self.hooks, self.cache = plan, hooks, cache
        self.held: dict[int, list[ItemFeatures]] = {}

    def get(self, backbone: BenchmarkBackbone, seed: int) -> list[ItemFeatures]:
        init_seed = 0 if backbone.pretrained else seed  # a random init: one draw per seed
        if init_seed not in self.held:
            self.plan.bar.set_postfix_str(f"features of {backbone.label}", refresh=True)
            self.held[init_seed], _ = self.cache.get_or_compute(
                backbone,
                self.plan.task,
                seed=init_seed,
                compute=lambda: self._compute(backbone, init_seed),
            )
        return self.held[init_seed]

    def _compute(self, backbone: BenchmarkBackbone, seed: int) -> list[ItemFeatures]:
        settings = self.plan.settings
        model = backbone.build(seed).to(settings.device).eval()
        with torch.inference_mode():
            request = EmbedRequest(
                model=model,
                backbone=backbone,
                task=self.plan.task,
                items=self.plan.task.items,
                device=settings.device,
                batch_size=settings.batch_size,
            )
            return self.hooks.embed(request)


def _describe(backbone: BenchmarkBackbone) -> dict[str, Any]:
    return {
        "spec": backbone.spec,
        "architecture": backbone.architecture,
        "pretrained": backbone.pretrained,
        "source": str(backbone.source) if backbone.source else None,
        "released": backbone.released,
    }


def _ensure_adapted(
    variant: BenchmarkBackbone,
    base: BenchmarkBackbone,
    hooks: DomainBenchmark,
    task: BenchmarkTask,
    train: Sequence[str],
    settings: BenchmarkSettings,
    fold: int,
) -> None:
    """Continue pretraining ``base`` on the fold's training inputs and export it to
    ``variant.source`` (kept: a re-run reuses it when its provenance records the same base
    weights, recipe, steps, fold and training items; otherwise it is adapted again)."""
    folder = variant.source
    assert folder is not None and settings.adapt_recipe is not None
    made_from = {
        "benchmark_adapted_from": base.spec,
        "recipe": settings.adapt_recipe,
        "steps": settings.adapt_steps,
        "fold": fold,
        "inputs": _adaptation_inputs(base, train),
    }
    if (folder / WEIGHTS_NAME).exists() and _recorded(folder / CONFIG_NAME, made_from):
        return
    request = AdaptRequest(
        model=base.build(0),
        backbone=base,
        task=task,
        items=task.subset(train),
        recipe=settings.adapt_recipe,
        steps=settings.adapt_steps,
        seed=fold,
        device=settings.device,
    )
    model = hooks.adapt(request)
    meta = base.meta()
    meta["provenance"] = made_from
    export_backbone(model.cpu(), folder, meta=meta, overwrite=True)


def _adaptation_inputs(base: BenchmarkBackbone, train: Sequence[str]) -> str:
    """A digest of what an adaptation starts from: the base weights' file stamps and the
    fold's training items."""
    content = {"weights": file_stamps(base.source) if base.source else None, "train": list(train)}
    text = json.dumps(content, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _recorded(config: Path, made_from: dict[str, Any]) -> bool:
    """Whether the export ``config`` records the provenance ``made_from``."""
    try:
        provenance = json.loads(config.read_text(encoding="utf-8")).get("provenance")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(provenance, dict) and all(
        provenance.get(k) == v for k, v in made_from.items()
    )


def _fold_runs(
    backbone: BenchmarkBackbone,
    fold: int,
    train: Sequence[str],
    test: Sequence[str],
    task: BenchmarkTask,
    hooks: DomainBenchmark,
    settings: BenchmarkSettings,
    features: _FeatureSource,
) -> list[dict[str, Any]]:
    """Every run of one backbone variant on one fold."""
    runs: list[dict[str, Any]] = []
    index = {item.key: i for i, item in enumerate(task.items)}
    for seed in settings.seeds:
        for fraction in settings.fractions:
            labeled = label_subset(task, train, fraction=fraction, seed=seed)
            for protocol in settings.protocols:
                record: dict[str, Any] = {
                    "backbone": backbone.label,
                    "protocol": protocol,
                    "fraction": fraction,
                    "seed": seed,
                    "fold": fold,
                    "train_items": len(labeled),
                    "test_items": len(test),
                }
                with _timed(record):
                    if protocol == "finetune":
                        request = FinetuneRequest(
                            backbone=backbone,
                            task=task,
                            train=task.subset(labeled),
                            test=task.subset(test),
                            seed=seed,
                            steps=settings.finetune_steps,
                            device=settings.device,
                        )
                        record["metrics"] = hooks.finetune(request)
                    else:
                        feats = features.get(backbone, seed)
                        record["metrics"] = probe(
                            protocol,
                            task,
                            [feats[index[k]] for k in labeled],
                            [feats[index[k]] for k in test],
                            task.subset(labeled),
                            task.subset(test),
                            seed=seed,
                        )
                runs.append(record)
                features.plan.bar.update(1)
    return runs


def _stack(
    task: BenchmarkTask, feats: Sequence[ItemFeatures], items: Sequence[LabeledItem]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature rows and their labels: per item (the item's target) or per position."""
    if task.dense:
        x = torch.cat([f.features for f in feats])
        y = torch.cat([f.labels for f in feats if f.labels is not None])
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"{task.source}: dense features without labels at every position")
        return x, y
    x = torch.stack([f.features for f in feats])
    if task.kind == "multilabel":
        y = torch.zeros(len(items), task.num_classes)
        for row, item in enumerate(items):
            y[row, list(item.target)] = 1.0  # type: ignore[arg-type]
        return x, y
    return x, torch.tensor([int(item.target) for item in items])  # type: ignore[arg-type]


def probe(
    protocol: str,
    task: BenchmarkTask,
    train_feats: Sequence[ItemFeatures],
    test_feats: Sequence[ItemFeatures],
    train_items: Sequence[LabeledItem],
    test_items: Sequence[LabeledItem],
    *,
    seed: int,
) -> dict[str, float]:
    """Metrics of the ``linear`` or ``knn`` protocol on frozen features."""
    x_train, y_train = _stack(task, train_feats, train_items)
    x_test, y_test = _stack(task, test_feats, test_items)
    data = ProbeData(
        x_train, y_train, x_test, task.kind, task.num_classes, ignore_index=task.ignore_index
    )
    scores = linear_probe(data, seed=seed) if protocol == "linear" else knn_scores(data, seed=seed)
    return task_metrics(
        task.kind, scores, y_test, num_classes=task.num_classes, ignore_index=task.ignore_index
    )
