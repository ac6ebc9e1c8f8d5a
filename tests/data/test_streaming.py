"""Streaming from prepared shards: every item exactly once per epoch across 2 DDP ranks × 2
loader workers (torchrun, gloo), exact mid-epoch resume, per-sample seeds independent of
the rank/worker that draws them, skipped items counted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from domainfm.data.shards import prepare_shards
from domainfm.data.streaming import StreamCollate, StreamingSamples, derive_seed, streaming_loader
from domainfm.domains.geospatial.shards import ChipPreparer, ChipWindows

WORKER = Path(__file__).with_name("streaming_split_worker.py")
BATCH = 3  # the worker's batch size
WORLD = 2


def _chips(data_root: Path, out: Path, stride: int) -> Path:
    """The 5 real S2 dates cut into 32 px chips with ``stride`` (36 chips at 16, 16 at 32)."""
    src = out.parent / f"src_{stride}"
    src.mkdir()
    for tif in sorted(
        (data_root / "geospatial/eolearn_s2_slovenia_patch/s2_l1c_13band").glob("*.tif")
    ):
        (src / tif.name).symlink_to(tif)
    prepare_shards(ChipPreparer(chip_size=32, stride=stride), src, out, chunk_bytes="1MB")
    return out


class _Prepared:
    """Chip shards by stride, prepared on first use (once per module)."""

    def __init__(self, root: Path, data_root: Path) -> None:
        self.root, self.data_root, self.made = root, data_root, {}

    def __getitem__(self, stride: int) -> Path:
        if stride not in self.made:
            self.made[stride] = _chips(self.data_root, self.root / f"chips_{stride}", stride)
        return self.made[stride]


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> _Prepared:
    return _Prepared(tmp_path_factory.mktemp("streaming"), data_root)


def _items(path: Path) -> int:
    return int(json.loads((path / "manifest.json").read_text())["totals"]["items"])


def _torchrun(shards: Path, out: Path, drop_last: str) -> list[dict[str, Any]]:
    out.mkdir()
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={WORLD}",
        str(WORKER),
        str(shards),
        str(out),
        drop_last,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]


def test_two_ranks_two_workers_see_every_item_once_per_epoch(
    shards: _Prepared, tmp_path: Path
) -> None:
    n = _items(shards[16])
    assert n % (WORLD * BATCH) == 0, n  # divisible: nothing to drop
    ranks = _torchrun(shards[16], tmp_path / "out", "none")
    for epoch in range(2):
        seen = [r["epochs"][epoch] for r in ranks]
        assert len(seen[0]) == len(seen[1]) == n // WORLD  # same steps on every rank
        assert sorted(seen[0] + seen[1]) == list(range(n))  # each item exactly once
    assert ranks[0]["epochs"][0] != ranks[0]["epochs"][1]  # reshuffled per epoch
    for r in ranks:
        # stopped after 2 batches, resumed in a fresh loader: the same sequence
        assert r["resumed"] == r["epochs"][0]
        # a sample's seed follows from (seed, epoch, item) only, not from rank or worker
        for index, seed in r["seeds"].items():
            assert seed == derive_seed(derive_seed(7, 3, int(index)), 0)


@pytest.mark.slow
def test_uneven_split_drops_less_than_one_global_batch_under_ddp(
    shards: _Prepared, tmp_path: Path
) -> None:
    n = _items(shards[32])
    assert n % (WORLD * BATCH) != 0, n
    ranks = _torchrun(shards[32], tmp_path / "default", "none")
    seen = [r["epochs"][0] for r in ranks]
    assert len(seen[0]) == len(seen[1])  # equal steps: no rank waits on a collective
    union = seen[0] + seen[1]
    assert len(set(union)) == len(union)  # no duplicates
    assert 0 < n - len(union) < WORLD * BATCH
    # without drop_last every item is seen exactly once (evaluation)
    kept = _torchrun(shards[32], tmp_path / "keep", "false")
    union = kept[0]["epochs"][0] + kept[1]["epochs"][0]
    assert sorted(union) == list(range(n))


def _maker(stats: dict[str, Any]) -> ChipWindows:
    return ChipWindows(size=16, mean=stats["mean"], std=stats["std"])


def test_samples_do_not_depend_on_worker_count(shards: _Prepared) -> None:
    stats = json.loads((shards[16] / "manifest.json").read_text())["stats"]
    by_workers = []
    for workers in (0, 2):
        dataset = StreamingSamples(shards=shards[16], sample_maker=_maker(stats), seed=3)
        loader = streaming_loader(dataset, batch_size=4, num_workers=workers)
        got = {}
        for batch in loader:
            for i, x in zip(batch["index"].tolist(), batch["input"], strict=True):
                got[i] = x
        by_workers.append(got)
    assert sorted(by_workers[0]) == list(range(_items(shards[16])))
    for i, x in by_workers[0].items():
        assert torch.equal(x, by_workers[1][i]), i


class _RejectLeftColumn:
    """Rejects the chips of the place's first column (x origin ``x0``)."""

    def __init__(self, inner: ChipWindows, x0: float) -> None:
        self.inner, self.x0 = inner, x0

    def __call__(self, item: dict[str, Any], generator: torch.Generator) -> dict[str, Any]:
        if float(item["transform"][2]) == self.x0:
            raise ValueError("rejected: first column")
        return self.inner(item, generator)


def test_rejected_items_are_skipped_and_counted(shards: _Prepared) -> None:
    from litdata import StreamingDataset

    stats = json.loads((shards[16] / "manifest.json").read_text())["stats"]
    raw = StreamingDataset(str(shards[16]))
    x0 = min(float(raw[i]["transform"][2]) for i in range(len(raw)))
    expected = sum(float(raw[i]["transform"][2]) == x0 for i in range(len(raw)))
    assert 0 < expected < len(raw)
    maker = _RejectLeftColumn(_maker(stats), x0)
    dataset = StreamingSamples(shards=shards[16], sample_maker=maker, seed=0, shuffle=False)
    with pytest.warns(UserWarning, match="first column"):
        samples = [s for batch in streaming_loader(dataset, batch_size=4) for s in [batch]]
    assert dataset.skipped == expected
    assert sum(b["input"].shape[0] for b in samples if b is not None) == len(raw) - expected
    assert StreamCollate()([[], []]) is None  # a batch of only skipped items


@pytest.mark.filterwarnings(
    "ignore::FutureWarning"
)  # gc.get_objects meets torch's deprecated aliases
def test_earlier_epochs_release_their_chunk_readers(shards: _Prepared) -> None:
    """LitData keeps the last 10 epochs' readers (and their decoded rows) alive unless its
    shuffler memo is dropped: memory would grow over epochs."""
    import gc

    from litdata.streaming.reader import BinaryReader

    stats = json.loads((shards[16] / "manifest.json").read_text())["stats"]
    dataset = StreamingSamples(shards=shards[16], sample_maker=_maker(stats), seed=0)
    for _ in range(3):  # without the fix, 3 readers would stay alive
        assert sum(len(item) for item in dataset) == _items(shards[16])
    gc.collect()
    assert sum(type(o) is BinaryReader for o in gc.get_objects()) <= 1


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("cut", ["mid-epoch", "last batch"])
def test_resumed_loader_replays_its_position_once(
    shards: _Prepared, workers: int, cut: str
) -> None:
    """As Lightning drives it: an epoch ends after ``len(loader)`` batches (the iterator is
    not exhausted), a resumed loader replays the saved position, and the next epoch starts
    from its first batch — never an empty epoch, never the restored one again."""
    stats = json.loads((shards[16] / "manifest.json").read_text())["stats"]

    def loader() -> Any:
        dataset = StreamingSamples(shards=shards[16], sample_maker=_maker(stats), seed=1)
        return streaming_loader(dataset, batch_size=4, num_workers=workers)

    def epoch(it: Any, n: int) -> list[list[int]]:
        return [next(it)["index"].tolist() for _ in range(n)]

    full = loader()
    n = len(full)
    at = n // 2 if cut == "mid-epoch" else n
    first = epoch(iter(full), n)
    assert len(first) == n
    second = iter(full)
    done = epoch(second, at)
    state = full.state_dict()
    rest = epoch(second, n - at)
    third = epoch(iter(full), n)

    resumed = loader()
    resumed.load_state_dict(state)
    again = iter(resumed)
    assert epoch(again, n - at) == rest
    assert epoch(iter(resumed), n) == third, "the epoch after the resumed one"
    assert done + rest != third
