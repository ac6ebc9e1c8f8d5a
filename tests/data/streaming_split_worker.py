"""One rank of the 2-rank x 2-worker split test (run by ``torchrun``; not a test module).

Usage: ``torchrun --standalone --nproc_per_node 2 streaming_split_worker.py SHARDS OUT_DIR``.
Each rank streams two epochs of prepared geospatial chips through a 2-worker
``StreamingDataLoader``, then replays epoch 0 stopped after 2 batches and resumed from the
loader state in a fresh loader, and writes the item indices it saw to ``OUT_DIR/rank<r>.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from domainfm.data.streaming import StreamingSamples, streaming_loader
from domainfm.domains.geospatial.shards import ChipWindows

BATCH = 3


def _dataset(shards: str, drop_last: bool | None) -> StreamingSamples:
    stats = json.loads((Path(shards) / "manifest.json").read_text())["stats"]
    maker = ChipWindows(size=16, mean=stats["mean"], std=stats["std"])
    return StreamingSamples(shards=shards, sample_maker=maker, seed=7, drop_last=drop_last)


def _indices(batch: dict[str, torch.Tensor]) -> list[int]:
    return [int(i) for i in batch["index"]]


def main() -> None:
    shards, out = sys.argv[1], Path(sys.argv[2])
    drop_last = {"none": None, "false": False}[sys.argv[3]]
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    loader = streaming_loader(_dataset(shards, drop_last), batch_size=BATCH, num_workers=2)
    epochs = [[i for b in loader for i in _indices(b)] for _ in range(2)]
    seeds = {}
    for b in loader:  # a third epoch: per-sample seeds, to compare across ranks
        seeds.update({int(i): int(s) for i, s in zip(b["index"], b["seed"], strict=True)})

    first = streaming_loader(_dataset(shards, drop_last), batch_size=BATCH, num_workers=2)
    before: list[int] = []
    for k, b in enumerate(first):
        before += _indices(b)
        if k == 1:
            state = first.state_dict()
            break
    second = streaming_loader(_dataset(shards, drop_last), batch_size=BATCH, num_workers=2)
    second.load_state_dict(state)
    after = [i for b in second for i in _indices(b)]
    out.joinpath(f"rank{rank}.json").write_text(
        json.dumps({"epochs": epochs, "resumed": before + after, "seeds": seeds})
    )
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
