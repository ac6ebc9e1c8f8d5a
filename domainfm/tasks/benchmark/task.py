"""What ``domainfm benchmark`` evaluates: a labeled task read from a spec the user already has.

A domain plugin reads its task formats (an MSD / nnU-Net ``dataset.json``, a HEAR task folder,
a STAC catalog, a CSV of files, labels and groups …) into one :class:`BenchmarkTask`: its kind,
class names and :class:`LabeledItem` s. Everything after that (splits by group, label
fractions, probes, statistics, reports) is domain-independent; the domain only turns items into
frozen features (:class:`ItemFeatures`) and fine-tunes on them.

Kinds and what an item's ``target`` is:

* ``"classification"``: one class index per item (``int``);
* ``"multilabel"``: the tuple of class indices present (scene tags, HEAR multi-label);
* ``"segmentation"``: a label map file (``Path``) or a window of one (``region``);
* ``"timestamps"``: a tuple of :class:`Event` (onset, offset in seconds, class index).

Example::

    >>> item = LabeledItem(key="a.wav", inputs=(Path("a.wav"),), target=3, group="spk1")
    >>> task = BenchmarkTask(name="digits", domain="audio", kind="classification",
    ...     classes=tuple("0123456789"), items=(item,), source=Path("clips.csv"))
    >>> task.num_classes
    10
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import Tensor

TaskKind = Literal["classification", "multilabel", "segmentation", "timestamps"]
KINDS: tuple[TaskKind, ...] = ("classification", "multilabel", "segmentation", "timestamps")


@dataclass(frozen=True)
class Event:
    """One labeled event of a timestamp task: ``[onset, offset)`` seconds, class index."""

    onset: float
    offset: float
    label: int


Target = int | tuple[int, ...] | Path | tuple[Event, ...]


@dataclass(frozen=True, kw_only=True)
class LabeledItem:
    """One labeled example of a task.

    Attributes:
        key: unique, stable name (the path relative to the spec, with a window suffix where
            an item is a window of a larger file); splits, caches and results use it.
        inputs: the files the example is read from (one per modality/channel file where the
            format keeps channels apart, e.g. MSD multi-file cases).
        target: the label (see the module docstring for each kind).
        group: what must not be split across train and test (patient, place, speaker);
            ``None`` when the spec records none (then every item is its own group).
        region: a window of the inputs (domain-defined, e.g. ``(row, col, height, width)``
            of a scene raster); ``None`` for the whole file.
    """

    key: str
    inputs: tuple[Path, ...]
    target: Target
    group: str | None = None
    region: tuple[int, ...] | None = None

    @property
    def split_group(self) -> str:
        """The group used for splitting (the key itself when the item has no group)."""
        return self.group if self.group is not None else f"item:{self.key}"


@dataclass(frozen=True, kw_only=True)
class BenchmarkTask:
    """A labeled task: what to predict, for which items, in which folds.

    Attributes:
        name: the task's name (the spec's, or its file name).
        domain: the domain plugin that reads the items.
        kind: see :data:`TaskKind`.
        classes: class names, index = label value (segmentation: background first).
        items: the labeled examples.
        source: the spec file or folder this task was read from.
        folds: predefined folds, each the set of item keys it holds (HEAR's ``fold00`` …);
            empty: folds are made by group (:func:`~domainfm.tasks.benchmark.splits.make_folds`).
        ignore_index: label value of unlabeled pixels/voxels (segmentation), or ``None``.
        metadata: the domain's own facts about the task (sample rate, channel names, …).
    """

    name: str
    domain: str
    kind: TaskKind
    classes: tuple[str, ...]
    items: tuple[LabeledItem, ...]
    source: Path
    folds: tuple[frozenset[str], ...] = ()
    ignore_index: int | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.source}: task kind {self.kind!r}; known: {', '.join(KINDS)}")
        if len(self.classes) < 2:
            raise ValueError(f"{self.source}: a task needs at least 2 classes, got {self.classes}")
        if not self.items:
            raise ValueError(f"{self.source}: the task has no labeled items")
        keys = [item.key for item in self.items]
        if len(set(keys)) != len(keys):
            twice = sorted({k for k in keys if keys.count(k) > 1})[:3]
            raise ValueError(f"{self.source}: item keys listed twice: {', '.join(twice)}")
        known = set(keys)
        for i, fold in enumerate(self.folds):
            if not fold <= known:
                missing = sorted(fold - known)[:3]
                raise ValueError(f"{self.source}: fold {i} names unknown items {missing}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def dense(self) -> bool:
        """Whether items have one label per position (pixels, voxels, frames)."""
        return self.kind in ("segmentation", "timestamps")

    def subset(self, keys: Sequence[str]) -> tuple[LabeledItem, ...]:
        """The items named by ``keys``, in that order."""
        by_key = {item.key: item for item in self.items}
        return tuple(by_key[k] for k in keys)


@dataclass(frozen=True)
class ItemFeatures:
    """Frozen features of one item, what the probes train and test on.

    Attributes:
        features: ``[D]`` for a clip/scene/volume, ``[T, D]`` for a dense task (one row per
            token/frame at the backbone's resolution).
        labels: ``None`` for per-item tasks (the item's ``target`` is the label); for dense
            tasks the labels at the same positions: ``[T]`` class indices (segmentation;
            the task's ``ignore_index`` where unlabeled) or ``[T, C]`` 0/1 (timestamps).
    """

    features: Tensor
    labels: Tensor | None = None

    def __post_init__(self) -> None:
        if self.features.ndim not in (1, 2):
            raise ValueError(
                f"item features must be [D] or [T, D], got {tuple(self.features.shape)}"
            )
        if self.labels is not None and (
            self.features.ndim != 2 or self.labels.shape[0] != self.features.shape[0]
        ):
            raise ValueError(
                f"dense labels {tuple(self.labels.shape)} do not match features "
                f"{tuple(self.features.shape)}"
            )
