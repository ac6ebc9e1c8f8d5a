"""Train/test folds by group, the leakage check, and label-fraction subsets.

A benchmark never splits one patient, place or speaker across train and test: folds are made
of whole groups (:func:`make_folds`), a spec's own folds are used as given but still checked
(:func:`check_leakage` refuses a split that puts one group on both sides), and few-label runs
draw their labeled subset from the training side only (:func:`label_subset`), stratified by
class so every class keeps at least one example.

The folds do not depend on the seed: every backbone and seed sees the same splits, and seeds
vary the labeled subset, the head's initialization and the fine-tuning order.

Example::

    >>> folds = make_folds(task, num_folds=4)
    >>> train, test = folds[0]
    >>> check_leakage(task, train, test)
    >>> few = label_subset(task, train, fraction=0.1, seed=0)
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence

from domainfm.tasks.benchmark.task import BenchmarkTask, LabeledItem

Split = tuple[tuple[str, ...], tuple[str, ...]]
"""``(train keys, test keys)``."""


def make_folds(task: BenchmarkTask, *, num_folds: int = 5) -> list[Split]:
    """The task's train/test splits.

    A task with predefined folds (``task.folds``, e.g. HEAR's) uses them: fold ``i`` is the
    test side once, every other item trains. Otherwise the groups are dealt into
    ``min(num_folds, number of groups)`` folds of near-equal item counts (largest groups first,
    ties by name: the same folds on every run).

    Raises:
        ValueError: naming the spec, when there are fewer than 2 groups (nothing to hold out)
            or a split leaks a group (:func:`check_leakage`).
    """
    keys = [item.key for item in task.items]
    if task.folds:
        splits = [
            (tuple(k for k in keys if k not in fold), tuple(k for k in keys if k in fold))
            for fold in task.folds
        ]
    else:
        groups: dict[str, list[str]] = defaultdict(list)
        for item in task.items:
            groups[item.split_group].append(item.key)
        if len(groups) < 2:
            raise ValueError(
                f"{task.source}: all items are in one group ({next(iter(groups))!r}); a "
                "benchmark needs at least 2 groups to hold one out"
            )
        count = min(num_folds, len(groups))
        folds: list[list[str]] = [[] for _ in range(count)]
        for name in sorted(groups, key=lambda g: (-len(groups[g]), g)):
            smallest = min(range(count), key=lambda i: (len(folds[i]), i))
            folds[smallest].append(name)
        splits = []
        for held in folds:
            held_set = set(held)
            test = tuple(k for g in sorted(held_set) for k in groups[g])
            train = tuple(k for g in sorted(groups) if g not in held_set for k in groups[g])
            splits.append((train, test))
    for train, test in splits:
        if not train or not test:
            raise ValueError(f"{task.source}: a fold leaves no items on one side")
        check_leakage(task, train, test)
    return splits


def check_leakage(task: BenchmarkTask, train: Sequence[str], test: Sequence[str]) -> None:
    """Refuse a split that shares an item or a group between its two sides.

    Raises:
        ValueError: naming the spec and up to three shared groups.
    """
    by_key = {item.key: item for item in task.items}
    shared_items = set(train) & set(test)
    if shared_items:
        raise ValueError(
            f"{task.source}: items on both sides of a split: {', '.join(sorted(shared_items)[:3])}"
        )
    train_groups = {by_key[k].split_group for k in train}
    leaked = sorted(train_groups & {by_key[k].split_group for k in test})
    if leaked:
        raise ValueError(
            f"{task.source}: group {leaked[0]!r} is on both sides of a split "
            f"({len(leaked)} group(s) leak: {', '.join(leaked[:3])}); a benchmark split keeps "
            "each patient, place or speaker on one side"
        )


def label_subset(
    task: BenchmarkTask, train: Sequence[str], *, fraction: float, seed: int
) -> tuple[str, ...]:
    """The labeled part of ``train`` for a few-label run: ``ceil(fraction * n)`` items drawn
    with ``seed``. Single-label classification is stratified (each class keeps
    ``ceil(fraction * n_class)`` items, at least one); other kinds draw items at random
    (at least one). The result keeps ``train``'s order.

    Raises:
        ValueError: for a fraction outside (0, 1].
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"label fraction {fraction} must be in (0, 1]")
    if fraction == 1.0:
        return tuple(train)
    rng = random.Random(f"{seed}:{fraction}:{task.name}")
    items = task.subset(train)
    chosen: set[str] = set()
    if task.kind == "classification":
        by_class: dict[object, list[LabeledItem]] = defaultdict(list)
        for item in items:
            by_class[item.target].append(item)
        for label in sorted(by_class, key=str):
            members = by_class[label]
            take = max(1, math.ceil(fraction * len(members)))
            chosen.update(item.key for item in rng.sample(members, take))
    else:
        take = max(1, math.ceil(fraction * len(items)))
        chosen.update(item.key for item in rng.sample(list(items), take))
    return tuple(k for k in train if k in chosen)
