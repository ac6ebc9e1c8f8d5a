"""Streaming training samples from prepared shards (LitData), split across ranks and workers.

:class:`StreamingSamples` reads the chunks written by
:func:`~domainfm.data.shards.prepare_shards` with ``litdata.StreamingDataset``: chunks are
shuffled and spread over every DDP rank × dataloader worker (each item once per epoch; under
DDP LitData drops the last ``< world_size × batch_size`` items so that every rank runs the
same number of steps, a different remainder each shuffled epoch), items are shuffled within
a window, and ``litdata.StreamingDataLoader`` saves the position in Lightning checkpoints so
that a resumed run continues at the exact next sample. Chunks stream from a local folder or
object storage (``s3://``, ``gs://``; cached locally up to ``max_cache_size``).

A domain turns each prepared item into training samples with a **sample maker**
``(item, generator) -> sample | list[sample]`` (the same views and augmentations as its
file-based path). The generator is seeded from ``(seed, epoch, item index)`` only, so a
sample is the same whichever rank or worker draws it and after a resume; every sample gets
a ``"seed"`` (from which :class:`~domainfm.core.masking.MaskingCollate` draws the batch's
mask) and its item ``"index"``. A sample maker that fails on an item (``ValueError``) has
the item skipped and counted (``skipped``), not the run stopped.

Example::

    >>> ds = StreamingSamples(shards="prepared/ct", sample_maker=crop_maker, seed=0)
    >>> loader = streaming_loader(ds, batch_size=8, num_workers=4, collate_fn=collate)
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")  # no PyPI call at run time
from litdata import StreamingDataLoader, StreamingDataset
from torch.utils.data import default_collate

from domainfm.data.datamodule import SeededDataModule
from domainfm.data.manifest import read_manifest
from domainfm.data.sampling import own_generator

SampleMaker = Callable[[dict[str, Any], torch.Generator], "dict[str, Any] | list[dict[str, Any]]"]


def derive_seed(*parts: int) -> int:
    """A 62-bit seed from integers (stable across processes, unlike ``hash``)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 2


def _release_previous_epochs() -> None:
    """Drop LitData's per-epoch shuffler memo (0.2.x: ``functools.lru_cache(maxsize=10)`` on
    shuffler methods keeps the last 10 epochs' shufflers, and through them their caches and
    chunk readers, alive: memory then grows for 10 epochs and with the chunk sizes)."""
    from litdata.streaming import shuffle

    for cls in vars(shuffle).values():
        if isinstance(cls, type) and issubclass(cls, shuffle.Shuffle):
            for name in ("get_len", "get_chunks_and_intervals_per_workers"):
                clear = getattr(cls.__dict__.get(name), "cache_clear", None)
                if clear is not None:
                    clear()


class SampleSkippedWarning(UserWarning):
    """A prepared item could not be turned into a sample; it was skipped."""


class StreamingSamples(StreamingDataset):
    """Samples made from the items of a prepared dataset, streamed.

    Args:
        shards: the prepared folder (local path or ``s3://``/``gs://`` URL).
        sample_maker: ``(item, generator) -> sample or list of samples``.
        seed: seed of the chunk/item order and of every sample's randomness.
        shuffle: shuffle chunks and items each epoch.
        drop_last: drop the remainder so every rank gets the same number of items
            (default: ``True`` under DDP, else ``False``).
        cache_dir: local cache for remote shards.
        max_cache_size: cache budget for remote shards (e.g. ``"50GB"``).

    Attributes:
        skipped: items skipped in this process (a failing sample maker).
    """

    def __init__(
        self,
        *,
        shards: str | Path,
        sample_maker: SampleMaker,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool | None = None,
        cache_dir: str | None = None,
        max_cache_size: str | None = None,
    ) -> None:
        location = str(shards)
        if "://" not in location:
            read_manifest(location)  # a clear error for a folder `domainfm prepare` did not write
        cache: dict[str, Any] = {"cache_dir": cache_dir}
        if max_cache_size is not None:  # LitData's default budget otherwise
            cache["max_cache_size"] = max_cache_size
        super().__init__(
            input_dir=location, shuffle=shuffle, drop_last=drop_last, seed=seed, **cache
        )
        self.sample_maker = sample_maker
        self.skipped = 0

    def __iter__(self) -> StreamingSamples:
        _release_previous_epochs()
        super().__iter__()
        return self

    def __getitem__(self, index: Any) -> list[dict[str, Any]]:
        """The samples of item ``index`` (a LitData ``ChunkedIndex`` or an int); ``[]`` when
        the sample maker rejected the item."""
        item = super().__getitem__(index)
        position = int(getattr(index, "index", index))
        base = derive_seed(self.seed, self.current_epoch, position)
        try:
            made = self.sample_maker(item, torch.Generator().manual_seed(base))
        except ValueError as err:
            self.skipped += 1
            warnings.warn(
                f"skipped prepared item {position} ({item.get('source', '?')}): {err}",
                SampleSkippedWarning,
                stacklevel=2,
            )
            return []
        samples = made if isinstance(made, list) else [made]
        for k, sample in enumerate(samples):
            sample["seed"] = torch.tensor(derive_seed(base, k))
            sample["index"] = torch.tensor(position)
        return samples


class StreamCollate:
    """Flatten the per-item sample lists of a streamed batch, then collate them.

    Args:
        collate: the batch collate (e.g. :class:`~domainfm.core.masking.MaskingCollate`);
            ``None``: ``default_collate``.
    """

    def __init__(self, collate: Callable[[list[Any]], Any] | None = None) -> None:
        self.collate = collate or default_collate

    def __call__(self, items: list[list[dict[str, Any]]]) -> Any:
        """The collated samples; ``None`` when every item was skipped (the training step
        then skips the batch)."""
        samples = [s for item in items for s in item]
        return self.collate(samples) if samples else None


class ResumedStreamingLoader(StreamingDataLoader):
    """``litdata.StreamingDataLoader`` whose restored position is replayed once.

    LitData replays a loaded state on every new iterator until one runs to its end. Lightning
    ends an epoch after ``len(loader)`` batches without exhausting the iterator, so after a
    resume the next epoch replayed the (finished) restored epoch again: an empty epoch, the
    trainer's epoch count one ahead of the data's, and the run no longer the uninterrupted
    one. Here an iterator started after the restored one (or on a restored state whose epoch
    was already complete) begins the next epoch.
    """

    _replayed = False
    restore: bool  # LitData's: a loaded state is to be replayed

    def __iter__(self) -> Any:
        # a generator: this runs when the first batch is drawn, as LitData's own checks do
        if self.restore and (self._replayed or self._restored_epoch_complete()):
            self.restore = False
        self._replayed = self.restore
        yield from super().__iter__()

    def _restored_epoch_complete(self) -> bool:
        return self._num_samples_yielded_streaming >= len(self) * int(self.batch_size or 1)


def streaming_loader(
    dataset: StreamingSamples,
    *,
    batch_size: int,
    num_workers: int = 0,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> Any:
    """A resumable loader of ``batch_size`` items per batch (:class:`ResumedStreamingLoader`:
    its position is saved in Lightning checkpoints and restored on resume; its workers' base
    seeds come from its own generator, never the global RNG)."""
    return ResumedStreamingLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=StreamCollate(collate_fn),
        persistent_workers=num_workers > 0,
        generator=own_generator(dataset.seed),
    )


class ShardDataModule(SeededDataModule):
    """Base of the domains' streaming data modules: training (and optional validation)
    batches streamed from prepared folders.

    Subclasses define :meth:`sample_maker` (from the manifest), :attr:`collate` and
    :meth:`input_contract`; they take this class's arguments through ``**kwargs``.

    Args:
        shards: the prepared training folder (``domainfm prepare``).
        val_shards: a prepared folder for validation (optional; not shuffled).
        cache_dir, max_cache_size: local cache of remote shards.
        manifest: a local copy of the prepared folder's ``manifest.json``; needed when
            ``shards`` is remote (``s3://``, ``gs://``), read from the folder otherwise.
        **kwargs: ``batch_size`` (items per batch), ``num_workers``, ``seed`` (order and
            sample seed): see :class:`~domainfm.data.datamodule.SeededDataModule`.
    """

    domain = ""

    def __init__(
        self,
        *,
        shards: str,
        val_shards: str | None = None,
        cache_dir: str | None = None,
        max_cache_size: str | None = None,
        manifest: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.shards = shards
        self.manifest_path = manifest
        self.val_shards = val_shards
        self.streamed = partial(
            StreamingSamples, cache_dir=cache_dir, max_cache_size=max_cache_size
        )
        """:class:`StreamingSamples` of a prepared folder through this module's cache."""
        self.manifest: dict[str, Any] = {}
        self.train_set: StreamingSamples | None = None
        self.val_set: StreamingSamples | None = None

    def sample_maker(self, manifest: dict[str, Any]) -> SampleMaker:
        raise NotImplementedError

    def _read_manifest(self, shards: str) -> dict[str, Any]:
        if "://" not in shards:
            return read_manifest(shards)
        if self.manifest_path is None:
            raise ValueError(
                f"shards={shards} is remote: pass manifest= (a local copy of its manifest.json)"
            )
        return read_manifest(Path(self.manifest_path).parent, name=Path(self.manifest_path).name)

    def _dataset(self, shards: str, *, shuffle: bool) -> StreamingSamples:
        manifest = self._read_manifest(shards)
        if manifest["domain"] != self.domain:
            raise ValueError(
                f"{shards} was prepared for {manifest['domain']}, not {self.domain}; prepare it "
                f"with `domainfm prepare {self.domain} ...`"
            )
        if not self.manifest:
            self.manifest = manifest
        return self.streamed(
            shards=shards, sample_maker=self.sample_maker(manifest), seed=self.seed, shuffle=shuffle
        )

    def setup(self, stage: str) -> None:
        if self.train_set is None:
            self.train_set = self._dataset(self.shards, shuffle=True)
        if self.val_shards and self.val_set is None:
            self.val_set = self._dataset(self.val_shards, shuffle=False)

    def _loader(self, dataset: StreamingSamples) -> Any:
        return streaming_loader(
            dataset,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=self.collate,
        )

    def train_dataloader(self) -> Any:
        assert self.train_set is not None, "call setup('fit') first"
        return self._loader(self.train_set)

    def val_dataloader(self) -> Any:
        return [] if self.val_set is None else self._loader(self.val_set)

    def prepared_contract(self) -> dict[str, object]:
        """The prepared data's domain and preprocessing settings, recorded beside the domain's
        input contract (``extra``) in checkpoints."""
        return {"prepared": {"domain": self.domain, **self.manifest.get("settings", {})}}
