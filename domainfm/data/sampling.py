"""A sampler whose order and per-sample random seeds depend only on ``(seed, epoch)``.

Exact resume needs every random choice of the data pipeline (shuffle order, crop positions,
masks) to be a function of the position in training, not of which worker or process drew
it. :class:`SeededSampler` yields ``(index, sample_seed)`` pairs: a dataset seeds its random
crops from ``sample_seed`` and :class:`~domainfm.core.masking.MaskingCollate` seeds the
batch's mask from the samples' seeds. Lightning calls :meth:`SeededSampler.set_epoch` at each
epoch start; a resumable loader (torchdata's ``StatefulDataLoader``) fast-forwards it to the
saved batch on resume.

**Data-parallel split.** Under DDP every rank builds the same epoch order and takes every
``num_replicas``-th entry starting at its ``rank`` (the order padded by wrapping around to a
multiple of ``num_replicas``, as :class:`torch.utils.data.DistributedSampler` does, so every
rank runs the same number of steps). The ranks' shares are disjoint and together cover the
epoch; a sample's seed depends on its dataset index only, so a window or crop is the same
whichever rank draws it. Rank and world size come from ``torch.distributed`` when a process
group is initialized (Lightning creates the loaders after that), else ``0`` and ``1``. The
class derives from ``DistributedSampler`` so that Lightning keeps it instead of wrapping it
in its own distributed sampler (which would re-shuffle and drop the seeds' determinism).

Example::

    >>> sampler = SeededSampler(num_samples=4, seed=0)
    >>> sampler.set_epoch(3)
    >>> [i for i, _ in sampler]
    [2, 3, 1, 0]
    >>> [i for i, _ in SeededSampler(num_samples=4, seed=0, num_replicas=2, rank=1)]
    [1, 2]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler
from torchdata.stateful_dataloader import StatefulDataLoader


def _world(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    """``(num_replicas, rank)``: the given ones, else the process group's, else ``(1, 0)``."""
    initialized = dist.is_available() and dist.is_initialized()
    world = (
        num_replicas if num_replicas is not None else (dist.get_world_size() if initialized else 1)
    )
    own = rank if rank is not None else (dist.get_rank() if initialized else 0)
    if world < 1 or not 0 <= own < world:
        raise ValueError(f"rank={own} must be in [0, num_replicas={world})")
    return world, own


class SeededSampler(DistributedSampler[tuple[int, int]]):
    """Shuffled (or sequential) indices paired with reproducible per-sample seeds, split
    across data-parallel ranks.

    Args:
        num_samples: dataset length.
        seed: base seed.
        shuffle: shuffle the order each epoch.
        num_replicas: data-parallel world size (default: the process group's, else 1).
        rank: this process's rank (default: the process group's, else 0).

    Attributes:
        dataset_size: the dataset length.
        num_samples: samples this rank yields per epoch (``ceil(dataset_size /
            num_replicas)``).
    """

    def __init__(
        self,
        *,
        num_samples: int,
        seed: int = 0,
        shuffle: bool = True,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got num_samples={num_samples}")
        world, own = _world(num_replicas, rank)
        super().__init__(
            range(num_samples),  # type: ignore[arg-type]  # only its length is used
            num_replicas=world,
            rank=own,
            shuffle=shuffle,
            seed=seed,
        )
        self.dataset_size = num_samples
        self.num_samples = math.ceil(num_samples / world)
        self.total_size = self.num_samples * world

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and seeds the next iteration yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        n = self.dataset_size
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        seeds = torch.randint(0, 2**62, (n,), generator=generator)  # one per index per epoch
        padded = order.repeat(math.ceil(self.total_size / n))[: self.total_size]
        for index in padded[self.rank :: self.num_replicas].tolist():
            yield index, int(seeds[index])


def seeded_loader(
    dataset: Dataset[Any],
    *,
    batch_size: int,
    seed: int = 0,
    shuffle: bool = True,
    num_workers: int = 0,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> StatefulDataLoader:
    """A resumable loader over ``dataset`` driven by a :class:`SeededSampler` (split across
    data-parallel ranks when a process group is initialized): its position is saved in
    Lightning checkpoints and restored on resume. Shuffled loaders drop the last incomplete
    batch (training); sequential ones keep it (evaluation)."""
    return StatefulDataLoader(
        dataset,
        batch_size=batch_size,
        sampler=SeededSampler(num_samples=len(dataset), seed=seed, shuffle=shuffle),  # type: ignore[arg-type]
        drop_last=shuffle,
        num_workers=num_workers,
        collate_fn=collate_fn,
        persistent_workers=num_workers > 0,
    )
