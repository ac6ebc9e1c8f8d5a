"""Frozen features computed once per backbone and kept on disk between runs.

A benchmark compares protocols, label fractions and seeds on the same frozen features, so each
backbone's features are computed once and written to ``OUT/cache/features/<key>.safetensors``.
The key hashes everything the features depend on: the backbone (architecture, kwargs, input
contract, weights file stamps, init seed for a random init), the task (kind, item keys and
their input files' stamps, options) and the format version. A changed weights file or item
means a new key; a stale file is never read. Writes are atomic.

Example::

    >>> cache = FeatureCache(out / "cache" / "features")
    >>> feats = cache.get_or_compute(backbone, task, seed=0, compute=lambda: embed(...))
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from domainfm.core.checkpoint_io import load_safetensors, save_safetensors
from domainfm.data.file_stamp import file_stamp
from domainfm.tasks.benchmark.backbones import BenchmarkBackbone
from domainfm.tasks.benchmark.task import BenchmarkTask, ItemFeatures

CACHE_VERSION = 1


def file_stamps(path: Path) -> list[Any]:
    """Stamps of a file, or of every file in a folder (an export folder)."""
    if path.is_dir():
        return [[p.name, *file_stamp(p)] for p in sorted(path.iterdir()) if p.is_file()]
    return [[path.name, *file_stamp(path)]] if path.exists() else [[str(path)]]


def features_key(backbone: BenchmarkBackbone, task: BenchmarkTask, *, seed: int) -> str:
    """The cache key of ``backbone``'s frozen features over ``task`` (see the module
    docstring); ``seed`` matters only for a random init."""
    content = {
        "version": CACHE_VERSION,
        "backbone": {
            "architecture": backbone.architecture,
            "kwargs": backbone.kwargs,
            "contract": backbone.contract,
            "released": backbone.released,
            "weights": file_stamps(backbone.source) if backbone.source else None,
            "init_seed": None if backbone.pretrained else seed,
        },
        "task": {
            "kind": task.kind,
            "classes": task.classes,
            "ignore_index": task.ignore_index,
            "metadata": task.metadata,
            "items": [
                [item.key, item.region, [file_stamps(p) for p in item.inputs]]
                for item in task.items
            ],
        },
    }
    text = json.dumps(content, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class FeatureCache:
    """Frozen features on disk under ``root`` (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def get_or_compute(
        self,
        backbone: BenchmarkBackbone,
        task: BenchmarkTask,
        *,
        seed: int,
        compute: Callable[[], list[ItemFeatures]],
    ) -> tuple[list[ItemFeatures], bool]:
        """The features of every task item (in ``task.items`` order), and whether they came
        from the cache."""
        path = self.root / f"{features_key(backbone, task, seed=seed)}.safetensors"
        if path.exists():
            return _read(path, len(task.items)), True
        features = compute()
        if len(features) != len(task.items):
            raise ValueError(
                f"the {task.domain} plugin returned features for {len(features)} of "
                f"{len(task.items)} items"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        _write(path, features, backbone=backbone.label, task=task.name)
        return features, False


def _write(path: Path, features: list[ItemFeatures], *, backbone: str, task: str) -> None:
    dense = [f.features.ndim == 2 for f in features]
    rows = [f.features if d else f.features[None] for f, d in zip(features, dense, strict=True)]
    tensors: dict[str, torch.Tensor] = {
        "features": torch.cat(rows).float(),
        "rows": torch.tensor([r.shape[0] for r in rows]),
        "dense": torch.tensor(dense),
    }
    labeled = [f.labels for f in features if f.labels is not None]
    if labeled:
        if len(labeled) != len(features):
            raise ValueError(f"dense labels for {len(labeled)} of {len(features)} items")
        tensors["labels"] = torch.cat(labeled)
    save_safetensors(path, tensors, metadata={"backbone": backbone, "task": task})


def _read(path: Path, count: int) -> list[ItemFeatures]:
    tensors, _ = load_safetensors(path)
    rows = tensors["rows"].tolist()
    if len(rows) != count:
        raise ValueError(f"{path}: cached features for {len(rows)} items, the task has {count}")
    out: list[ItemFeatures] = []
    start = 0
    for n, dense in zip(rows, tensors["dense"].tolist(), strict=True):
        chunk = tensors["features"][start : start + n]
        labels = tensors["labels"][start : start + n] if dense and "labels" in tensors else None
        out.append(ItemFeatures(chunk if dense else chunk[0], labels))
        start += n
    return out
