"""A domain's part of ``domainfm benchmark``: read its task formats, embed, fine-tune, adapt.

Each domain plugin sets ``benchmark`` to an instance of its :class:`DomainBenchmark` subclass
(:attr:`domainfm.domains.plugin.DomainPlugin.benchmark`). The runner
(:mod:`domainfm.tasks.benchmark.runner`) does everything else: folds by group, label
fractions, seeds, the feature cache, probes, statistics and reports. Each call gets one
request object, so the hooks' arguments are declared once, here.

Example::

    >>> class ToyBenchmark(DomainBenchmark):
    ...     def read_task(self, spec, options):
    ...         return read_toy_csv(spec) if spec.suffix == ".csv" else None
    ...     def embed(self, request):
    ...         return [ItemFeatures(request.model(load(i))) for i in request.items]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from domainfm.tasks.benchmark.backbones import BenchmarkBackbone
from domainfm.tasks.benchmark.task import BenchmarkTask, ItemFeatures, LabeledItem, TaskKind


class UnsupportedProtocol(ValueError):
    """What was asked cannot run on this task (e.g. fine-tuning a multi-label task in a
    domain without a multi-label head); the message says why and what can run."""


@dataclass(frozen=True, kw_only=True)
class EmbedRequest:
    """Frozen features of ``items`` from ``model`` (in eval mode, on ``device``), inputs
    prepared as ``backbone.contract`` says (the domain's defaults when it records none)."""

    model: nn.Module
    backbone: BenchmarkBackbone
    task: BenchmarkTask
    items: Sequence[LabeledItem]
    device: str
    batch_size: int


@dataclass(frozen=True, kw_only=True)
class FinetuneRequest:
    """Fine-tune a fresh ``backbone.build(seed)`` with a head on ``train`` for ``steps``
    optimizer steps and score it on ``test``."""

    backbone: BenchmarkBackbone
    task: BenchmarkTask
    train: Sequence[LabeledItem]
    test: Sequence[LabeledItem]
    seed: int
    steps: int
    device: str


@dataclass(frozen=True, kw_only=True)
class AdaptRequest:
    """Continue pretraining ``model`` on the inputs of ``items`` (labels unused) for ``steps``
    steps of the named ``recipe`` (e.g. ``"mae"``)."""

    model: nn.Module
    backbone: BenchmarkBackbone
    task: BenchmarkTask
    items: Sequence[LabeledItem]
    recipe: str
    steps: int
    seed: int
    device: str


class DomainBenchmark:
    """Base class of a domain's benchmark hooks (override what the domain supports)."""

    recipes: tuple[str, ...] = ()
    """The continued-pretraining recipes :meth:`adapt` takes."""
    finetune_kinds: tuple[TaskKind, ...] = ()
    """The task kinds :meth:`finetune` takes (the probes take every kind)."""
    finetune_ignore_index: bool = True
    """Whether :meth:`finetune` takes a task with unlabeled positions (``ignore_index``)."""

    def read_task(self, spec: Path, options: Mapping[str, str]) -> BenchmarkTask | None:
        """The task ``spec`` describes when it is one of this domain's formats (an MSD
        ``dataset.json``, a HEAR task folder, a CSV of this domain's files …), else ``None``.
        ``options`` are the command's ``--task-option KEY=VALUE`` pairs; a key the domain
        does not know is refused by name once the spec is known to be this domain's.

        Raises:
            ValueError: naming the file, for a spec of this domain's format that is broken.
        """
        return None

    def check_plan(self, task: BenchmarkTask, protocols: Sequence[str], recipe: str | None) -> None:
        """Refuse, before any work, a protocol or recipe this domain cannot run on ``task``.

        Raises:
            UnsupportedProtocol: saying why and what can run.
        """
        if recipe is not None and recipe not in self.recipes:
            known = ", ".join(self.recipes) or "none"
            raise UnsupportedProtocol(f"adapt recipe {recipe!r}: this domain has {known}")
        if "finetune" not in protocols:
            return
        probes = "its linear and kNN probes run on frozen features"
        if task.kind not in self.finetune_kinds:
            kinds = " and ".join(self.finetune_kinds) or "no"
            raise UnsupportedProtocol(
                f"{task.domain} fine-tuning takes {kinds} tasks; {task.name!r} is a {task.kind} "
                f"task ({probes})"
            )
        if task.ignore_index is not None and not self.finetune_ignore_index:
            raise UnsupportedProtocol(
                f"{task.source}: {task.domain} fine-tuning does not take tasks with unlabeled "
                f"positions (an ignore label); {probes}"
            )

    def embed(self, request: EmbedRequest) -> list[ItemFeatures]:
        """One :class:`ItemFeatures` per item, in order; deterministic. Dense tasks carry the
        labels at the features' positions (at most a bounded number per item)."""
        raise UnsupportedProtocol("this domain has no benchmark feature extraction")

    def finetune(self, request: FinetuneRequest) -> dict[str, float]:
        """The metrics of :func:`~domainfm.tasks.benchmark.metrics.task_metrics` for the
        task's kind on the test items, plus the domain's own (e.g. Dice on whole volumes)."""
        raise UnsupportedProtocol("this domain has no benchmark fine-tuning")

    def adapt(self, request: AdaptRequest) -> nn.Module:
        """The adapted backbone (on the CPU)."""
        raise UnsupportedProtocol("this domain has no benchmark adaptation")
