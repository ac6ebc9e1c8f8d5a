"""SeededSampler: the epoch order and per-sample seeds follow from (seed, epoch) only; under
data parallelism the ranks' shares are disjoint, cover the epoch and keep each sample's seed;
Lightning's DDP keeps the sampler (does not wrap it) and each rank trains on its share."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, DistributedSampler
from torchdata.stateful_dataloader import StatefulDataLoader

from domainfm.data.sampling import SeededSampler, seeded_loader


def _reference(n: int, seed: int, epoch: int, shuffle: bool = True) -> list[tuple[int, int]]:
    """The single-process epoch: the formula the sampler documents."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=g) if shuffle else torch.arange(n)
    seeds = torch.randint(0, 2**62, (n,), generator=g)
    return [(int(i), int(seeds[i])) for i in order]


@pytest.mark.parametrize("shuffle", [True, False])
def test_single_process_order_and_seeds_follow_seed_and_epoch(shuffle: bool) -> None:
    sampler = SeededSampler(num_samples=7, seed=3, shuffle=shuffle)
    for epoch in (0, 1, 5):
        sampler.set_epoch(epoch)
        assert list(sampler) == _reference(7, 3, epoch, shuffle)
    assert len(sampler) == 7
    sampler.set_epoch(0)
    other = SeededSampler(num_samples=7, seed=4, shuffle=shuffle)
    assert list(sampler) != list(other)  # the seed matters (orders or seeds differ)


@pytest.mark.parametrize("n,world", [(8, 2), (7, 2), (10, 3), (2, 4)])
def test_rank_shares_are_disjoint_cover_the_epoch_and_keep_seeds(n: int, world: int) -> None:
    reference = _reference(n, seed=1, epoch=2)
    shares = []
    for rank in range(world):
        sampler = SeededSampler(num_samples=n, seed=1, num_replicas=world, rank=rank)
        sampler.set_epoch(2)
        share = list(sampler)
        assert len(share) == len(sampler) == -(-n // world)  # same steps on every rank
        shares.append(share)
    # interleaving the shares gives back the epoch order, padded by wrapping around
    merged = [s[i] for i in range(len(shares[0])) for s in shares]
    assert merged[:n] == reference
    assert merged[n:] == reference[: len(merged) - n]
    if n % world == 0:
        flat = [k for s in shares for k in s]
        assert sorted(flat) == sorted(reference)  # exactly once each


def test_bad_rank_is_refused() -> None:
    with pytest.raises(ValueError, match="rank=2"):
        SeededSampler(num_samples=4, num_replicas=2, rank=2)


class _Keys(Dataset[dict[str, Tensor]]):
    def __len__(self) -> int:
        return 12

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Tensor]:
        index, seed = key
        return {"index": torch.tensor(index), "seed": torch.tensor(seed), "x": torch.ones(2)}


class _Recorder(L.LightningModule):
    def __init__(self, out: str) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)
        self.out = out
        self.seen: list[list[int]] = []

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        self.seen += [[int(i), int(s)] for i, s in zip(batch["index"], batch["seed"], strict=True)]
        return self.layer(batch["x"]).sum()

    def on_train_epoch_end(self) -> None:
        sampler = self.trainer.train_dataloader.sampler  # type: ignore[union-attr]
        record = {"seen": self.seen, "sampler": type(sampler).__name__}
        Path(self.out, f"rank{self.global_rank}.json").write_text(json.dumps(record))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> object:
        return seeded_loader(_Keys(), batch_size=3, seed=5)


def test_lightning_ddp_keeps_the_sampler_and_splits_the_epoch(tmp_path: Path) -> None:
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(_Recorder(str(tmp_path)))
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert {r["sampler"] for r in records} == {"SeededSampler"}  # not Lightning's wrapper
    assert issubclass(SeededSampler, DistributedSampler)
    seen = [tuple(k) for r in records for k in r["seen"]]
    assert len(records[0]["seen"]) == len(records[1]["seen"]) == 6
    assert sorted(seen) == sorted(_reference(12, seed=5, epoch=0))  # each sample exactly once


class _Thirteen(Dataset[Tensor]):
    def __len__(self) -> int:
        return 13  # batches of 2 drop one sample per epoch

    def __getitem__(self, key: tuple[int, int]) -> Tensor:
        return torch.tensor(key[0])


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("cut", [0, 2, 6])  # epoch start, mid-epoch, after its last batch
def test_resume_in_a_later_epoch_in_lightnings_order(workers: int, cut: int) -> None:
    """Lightning builds the resumed loader's iterator before it calls ``set_epoch`` (with
    workers, the first indices are drawn right then): the restored position must still be
    the saved epoch's, and a state saved after an epoch's last batch resumes at the start of
    the next epoch."""

    def loader() -> StatefulDataLoader:
        return seeded_loader(_Thirteen(), batch_size=2, seed=0, num_workers=workers)

    full = loader()
    full.sampler.set_epoch(0)  # type: ignore[attr-defined]
    list(full)
    full.sampler.set_epoch(1)  # type: ignore[attr-defined]
    it = iter(full)
    for _ in range(cut):
        next(it)
    state = full.state_dict()
    expected = [b.tolist() for b in it]
    if cut == 6:  # epoch 1 was complete: the resumed run goes on with epoch 2
        full.sampler.set_epoch(2)  # type: ignore[attr-defined]
        expected = [b.tolist() for b in full]

    resumed = loader()
    resumed.load_state_dict(state)
    it = iter(resumed)  # Lightning: the iterator first ...
    resumed.sampler.set_epoch(2 if cut == 6 else 1)  # type: ignore[attr-defined]  # ... then the epoch
    assert [b.tolist() for b in it] == expected
