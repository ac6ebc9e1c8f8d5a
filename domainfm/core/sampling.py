"""A sampler whose order and per-sample random seeds depend only on ``(seed, epoch)``.

Exact resume needs every random choice of the data pipeline (shuffle order, crop positions,
masks) to be a function of the position in training, not of which worker or process drew
it. :class:`SeededSampler` yields ``(index, sample_seed)`` pairs: a dataset seeds its random
crops from ``sample_seed`` and :class:`~domainfm.core.masking.MaskingCollate` seeds the
batch's mask from the samples' seeds. Lightning calls :meth:`SeededSampler.set_epoch` at each
epoch start; a resumable loader (torchdata's ``StatefulDataLoader``) fast-forwards it to the
saved batch on resume.

Example::

    >>> sampler = SeededSampler(num_samples=4, seed=0)
    >>> sampler.set_epoch(3)
    >>> [i for i, _ in sampler]
    [2, 3, 1, 0]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler
from torchdata.stateful_dataloader import StatefulDataLoader


class SeededSampler(Sampler[tuple[int, int]]):
    """Shuffled (or sequential) indices paired with reproducible per-sample seeds.

    Args:
        num_samples: dataset length.
        seed: base seed.
        shuffle: shuffle the order each epoch.
    """

    def __init__(self, *, num_samples: int, seed: int = 0, shuffle: bool = True) -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got num_samples={num_samples}")
        self.num_samples = num_samples
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and seeds the next iteration yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        n = self.num_samples
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        seeds = torch.randint(0, 2**62, (n,), generator=generator)  # one per index per epoch
        for index in order.tolist():
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
    """A resumable loader over ``dataset`` driven by a :class:`SeededSampler`: its position
    is saved in Lightning checkpoints and restored on resume. Shuffled loaders drop the last
    incomplete batch (training); sequential ones keep it (evaluation)."""
    return StatefulDataLoader(
        dataset,
        batch_size=batch_size,
        sampler=SeededSampler(num_samples=len(dataset), seed=seed, shuffle=shuffle),  # type: ignore[arg-type]
        drop_last=shuffle,
        num_workers=num_workers,
        collate_fn=collate_fn,
        persistent_workers=num_workers > 0,
    )
