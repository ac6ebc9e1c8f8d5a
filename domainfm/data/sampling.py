"""A sampler whose order and per-sample random seeds depend only on ``(seed, epoch)``.

Exact resume needs every random choice of the data pipeline (shuffle order, crop positions,
masks) to be a function of the position in training, not of which worker or process drew
it. :class:`SeededSampler` yields ``(index, sample_seed)`` pairs: a dataset seeds its random
crops from ``sample_seed`` and :class:`~domainfm.core.masking.MaskingCollate` seeds the
batch's mask from the samples' seeds. Lightning calls :meth:`SeededSampler.set_epoch` at each
epoch start; a resumable loader (torchdata's ``StatefulDataLoader``) saves the sampler's
state (:meth:`SeededSampler.state_dict`) with each batch and restores it on resume.

**Resume in any epoch.** The saved state holds the epoch and how many samples of it were
drawn. Lightning builds the resumed loader's iterator *before* it calls ``set_epoch``, so a
sampler that the loader fast-forwards by drawing samples would replay epoch 0's order; this
one only remembers the position and skips to it when the first sample is drawn, in the
saved epoch (with loader workers the first samples are drawn as soon as the iterator exists).
A state saved after the epoch's last batch resumes at the start of the next epoch (Lightning
moves on to that epoch and draws it from the restored iterator).

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
        whole_batches_of: the loader's batch size when it drops the last incomplete batch:
            an epoch with fewer samples left than this is complete (for resume).

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
        whole_batches_of: int = 1,
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
        self.whole_batches_of = whole_batches_of
        self._drawing = 0  # the epoch being drawn (or last drawn) and how many samples of it
        self._yielded = 0
        self._resume: tuple[int, int] | None = None  # (epoch, samples to skip) after a load

    def state_dict(self) -> dict[str, int]:
        """The position: the epoch and how many of its samples were drawn."""
        return {"epoch": self._drawing, "yielded": self._yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume at a saved position (see "Resume in any epoch" in the module docstring)."""
        epoch, yielded = int(state["epoch"]), int(state["yielded"])
        if not 0 <= yielded <= self.num_samples:
            raise ValueError(f"saved sampler position {yielded} outside [0, {self.num_samples}]")
        if self.num_samples - yielded < self.whole_batches_of:  # the epoch was complete
            epoch, yielded = epoch + 1, 0
        self._resume = (epoch, yielded)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and seeds the next iteration yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        # a generator: the body (and the epoch it reads) runs when the first sample is drawn
        epoch, skip = self._resume if self._resume is not None else (self.epoch, 0)
        self._resume = None
        self.epoch = self._drawing = epoch
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        n = self.dataset_size
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        seeds = torch.randint(0, 2**62, (n,), generator=generator)  # one per index per epoch
        padded = order.repeat(math.ceil(self.total_size / n))[: self.total_size]
        self._yielded = skip
        for index in padded[self.rank :: self.num_replicas].tolist()[skip:]:
            self._yielded += 1
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
    batch (training); sequential ones keep it (evaluation). The loader draws its workers'
    base seeds from its own generator (:func:`own_generator`), never the global RNG."""
    return StatefulDataLoader(
        dataset,
        batch_size=batch_size,
        sampler=SeededSampler(
            num_samples=len(dataset),  # type: ignore[arg-type]
            seed=seed,
            shuffle=shuffle,
            whole_batches_of=batch_size if shuffle else 1,
        ),
        drop_last=shuffle,
        num_workers=num_workers,
        collate_fn=collate_fn,
        persistent_workers=num_workers > 0,
        generator=own_generator(seed),
    )


def own_generator(seed: int) -> torch.Generator:
    """A generator for a loader's worker base seeds, so that starting an epoch's (or an
    evaluation's) iterator never draws from the global RNG: the model's randomness (dropout,
    drop path) then follows from the checkpointed RNG state alone, also across epoch ends."""
    return torch.Generator().manual_seed(seed)
