"""Shared toy task for the benchmark tests: synthetic features (math only; the domains' tests
read the shipped data)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from domainfm.tasks.benchmark.backbones import BenchmarkBackbone
from domainfm.tasks.benchmark.hooks import DomainBenchmark, EmbedRequest
from domainfm.tasks.benchmark.task import BenchmarkTask, ItemFeatures, LabeledItem

TINY_VIT = {
    "in_chans": 1,
    "spatial_dims": 2,
    "patch_size": 4,
    "embed_dim": 8,
    "depth": 1,
    "num_heads": 2,
}


def toy_task(n: int = 60, groups: int = 6, classes: int = 3) -> BenchmarkTask:
    items = tuple(
        LabeledItem(
            key=f"i{i:03d}", inputs=(Path(f"i{i}.x"),), target=i % classes, group=f"g{i % groups}"
        )
        for i in range(n)
    )
    return BenchmarkTask(
        name="toy",
        domain="toy",
        kind="classification",
        classes=tuple("abcdefgh"[:classes]),
        items=items,
        source=Path("toy.csv"),
    )


class ToyHooks(DomainBenchmark):
    """Features: the class signal scaled by the model's first weight plus item noise; counts
    the embedding calls."""

    def __init__(self) -> None:
        self.embed_calls = 0

    def embed(self, request: EmbedRequest) -> list[ItemFeatures]:
        self.embed_calls += 1
        scale = float(next(request.model.parameters()).flatten()[0].abs()) * 20
        out = []
        for item in request.items:
            g = torch.Generator().manual_seed(int(item.key[1:]))
            x = torch.randn(6, generator=g)
            x[int(item.target)] += scale  # type: ignore[arg-type]
            out.append(ItemFeatures(x))
        return out


@pytest.fixture
def make_task() -> Callable[..., BenchmarkTask]:
    return toy_task


@pytest.fixture
def tiny_scratch() -> BenchmarkBackbone:
    return BenchmarkBackbone(
        label="scratch", spec="scratch:tiny", architecture="vit_nd", kwargs=TINY_VIT
    )


@pytest.fixture
def toy_hooks() -> ToyHooks:
    return ToyHooks()
