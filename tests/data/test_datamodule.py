from __future__ import annotations

from typing import Any

import torch
from jsonargparse import ArgumentParser
from torch.utils.data import Dataset

from domainfm.data.datamodule import SeededDataModule


class _Indexed(Dataset[dict[str, Any]]):
    """Sample ``i`` (or ``(i, seed)``) is its index and seed."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, key: Any) -> dict[str, Any]:
        index, seed = key if isinstance(key, tuple) else (key, -1)
        return {"index": torch.tensor(index), "seed": torch.tensor(seed)}


class _Module(SeededDataModule):
    def __init__(self, *, size: int = 10, batch_size: int = 4, **kwargs: Any) -> None:
        super().__init__(batch_size=batch_size, **kwargs)
        self.size = size

    def setup(self, stage: str) -> None:
        self.train_set = _Indexed()


def _indices(dm: SeededDataModule) -> list[list[int]]:
    return [batch["index"].tolist() for batch in dm.train_dataloader()]


def test_training_batches_follow_the_seed() -> None:
    dm = _Module(seed=3)
    dm.setup("fit")
    first = _indices(dm)
    assert [len(b) for b in first] == [4, 4]  # the last incomplete batch is dropped
    assert _indices(dm) == first
    other = _Module(seed=4)
    other.setup("fit")
    assert _indices(other) != first
    evaluation = [b["index"].tolist() for b in dm.seeded_loader(dm.train_set, shuffle=False)]
    assert evaluation == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    plain = [b["index"].tolist() for b in dm.eval_loader(dm.train_set, batch_size=5)]
    assert plain == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


def test_subclass_arguments_include_the_base_s() -> None:
    """LightningCLI's parser sees the base's arguments through ``**kwargs``, with the
    subclass's own default where it redeclares one."""
    parser = ArgumentParser()
    parser.add_class_arguments(_Module, "data")
    defaults = parser.get_defaults().data
    assert dict(vars(defaults)) == {"size": 10, "batch_size": 4, "num_workers": 0, "seed": 0}
    dm = parser.instantiate(parser.parse_args(["--data.seed=7"])).data
    assert (dm.batch_size, dm.num_workers, dm.seed) == (4, 0, 7)
