"""Call a domain's benchmark hooks with plain arguments (tests build the request objects here;
modules load it by path: ``run_path(str(Path(__file__).parents[N] / "benchmark_requests.py"))``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from domainfm.tasks.benchmark.backbones import BenchmarkBackbone
from domainfm.tasks.benchmark.hooks import (
    AdaptRequest,
    DomainBenchmark,
    EmbedRequest,
    FinetuneRequest,
)
from domainfm.tasks.benchmark.task import BenchmarkTask, ItemFeatures, LabeledItem


def embed(
    hooks: DomainBenchmark | None,
    model: nn.Module,
    backbone: BenchmarkBackbone,
    task: BenchmarkTask,
    items: Sequence[LabeledItem],
    **options: Any,
) -> list[ItemFeatures]:
    assert hooks is not None
    options = {"device": "cpu", "batch_size": 4, **options}
    return hooks.embed(
        EmbedRequest(model=model, backbone=backbone, task=task, items=items, **options)
    )


def finetune(
    hooks: DomainBenchmark | None,
    backbone: BenchmarkBackbone,
    task: BenchmarkTask,
    train: Sequence[LabeledItem],
    test: Sequence[LabeledItem],
    **options: Any,
) -> dict[str, float]:
    assert hooks is not None
    options = {"device": "cpu", **options}
    return hooks.finetune(
        FinetuneRequest(backbone=backbone, task=task, train=train, test=test, **options)
    )


def adapt(
    hooks: DomainBenchmark | None,
    model: nn.Module,
    backbone: BenchmarkBackbone,
    task: BenchmarkTask,
    items: Sequence[LabeledItem],
    **options: Any,
) -> nn.Module:
    assert hooks is not None
    options = {"device": "cpu", **options}
    return hooks.adapt(
        AdaptRequest(model=model, backbone=backbone, task=task, items=items, **options)
    )
