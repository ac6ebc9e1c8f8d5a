"""The base of the domains' data modules: batch size, loader workers and seed, and the
seeded, resumable loaders built from them.

Every data module trains from a :func:`~domainfm.data.sampling.seeded_loader`: the sample
order and every sample's randomness (crop positions, masks) follow from ``seed`` and the
epoch only, split across DDP ranks, and the loader's position is saved in Lightning
checkpoints and restored on resume (exactly resumable). A subclass sets ``train_set`` (and
whatever evaluation sets it has) in ``setup`` and ``collate`` (how samples become a batch)
when it is not PyTorch's default; :meth:`SeededDataModule.train_dataloader` is then done.

Subclasses take the base's arguments through ``**kwargs`` (LightningCLI's jsonargparse
resolves them from this signature), redeclaring only those whose default differs::

    class VolumeSegDataModule(SeededDataModule):
        def __init__(self, *, images: Sequence[str], batch_size: int = 2, **kwargs: Any):
            super().__init__(batch_size=batch_size, **kwargs)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
from torch.utils.data import Dataset
from torchdata.stateful_dataloader import StatefulDataLoader

from domainfm.data.sampling import own_generator, seeded_loader


class SeededDataModule(L.LightningDataModule):
    """Batches of seeded, resumable loaders (see the module docstring).

    Args:
        batch_size: samples per batch.
        num_workers: loader worker processes.
        seed: seed of the sample order and of every sample's randomness (exactly
            resumable).

    Attributes:
        train_set: the training dataset (``None`` until ``setup``).
    """

    collate: Callable[[list[Any]], Any] | None = None
    """How samples become a batch (``None``: PyTorch's default)."""

    def __init__(self, *, batch_size: int = 8, num_workers: int = 0, seed: int = 0) -> None:
        super().__init__()
        if not batch_size >= 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        if not num_workers >= 0:
            raise ValueError(f"num_workers must be >= 0 (0: the main process), got {num_workers!r}")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.train_set: Any = None

    def seeded_loader(
        self, dataset: Dataset[Any], *, shuffle: bool = True, seed: int | None = None
    ) -> StatefulDataLoader:
        """A resumable loader of ``dataset`` in ``batch_size`` batches, ``num_workers``
        workers and :attr:`collate` (split across DDP ranks): shuffled by ``seed`` (default:
        the module's) for training, in order (last batch kept) for evaluation."""
        return seeded_loader(
            dataset,
            batch_size=self.batch_size,
            seed=self.seed if seed is None else seed,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=self.collate,
        )

    def eval_loader(
        self, dataset: Dataset[Any], *, batch_size: int | None = None
    ) -> StatefulDataLoader:
        """A plain loader of ``dataset`` in order, in the main process (evaluation sets
        whose samples are fixed), with :attr:`collate`."""
        return StatefulDataLoader(
            dataset,
            batch_size=self.batch_size if batch_size is None else batch_size,
            num_workers=0,
            collate_fn=self.collate,
            generator=own_generator(self.seed),
        )

    def train_dataloader(self) -> StatefulDataLoader:
        """A resumable loader: its position is saved in checkpoints and restored on resume."""
        assert self.train_set is not None, "call setup('fit') first"
        return self.seeded_loader(self.train_set)
