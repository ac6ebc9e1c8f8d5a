"""Run a worker on 2 (or more) CPU ranks under Gloo for the data-parallel tests: a helper, not
a test module (test modules load it by path:
``run_path(str(Path(__file__).parents[N] / "gloo_ranks.py"))``).

The parent calls :func:`spawn_ranks` with a module-level ``worker(rank, init_file, out_dir)``;
the worker joins the group with :func:`gloo_group` and ends with :func:`save_rank` (its
results written atomically, then a barrier), and the parent gets every rank's results in
rank order. Rendezvous is a ``FileStore`` in a temp dir: no ports.

Example::

    def _worker(rank: int, init_file: str, out_dir: str) -> None:
        with GLOO["gloo_group"](rank, init_file, world=2):
            GLOO["save_rank"]({"loss": ...}, out_dir, rank)

    results = GLOO["spawn_ranks"](_worker, tmp_path, world=2)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


@contextmanager
def gloo_group(rank: int, init_file: str, *, world: int) -> Iterator[None]:
    """Join the ``world``-rank Gloo group (1 thread per rank) for the ``with`` block."""
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=60),
    )
    try:
        yield
    finally:
        dist.destroy_process_group()


def save_rank(results: Any, out_dir: str, rank: int) -> None:
    """Save a rank's results where :func:`spawn_ranks` reads them (the file appears only once
    complete), then wait for every rank, so none tears down while another communicates."""
    path = os.path.join(out_dir, f"rank{rank}.pt")
    torch.save(results, path + ".tmp")
    os.replace(path + ".tmp", path)
    dist.barrier()


def spawn_ranks(worker: Callable[[int, str, str], None], tmp: Path, *, world: int) -> list[Any]:
    """Run ``worker(rank, init_file, out_dir)`` on ``world`` spawned ranks; their results.

    A rank that dies after every rank saved its complete results (seen once in ~80 runs, a
    SIGABRT likely in Gloo's teardown at exit) cannot affect them and is tolerated; any
    earlier death re-raises.
    """
    files = [tmp / f"rank{r}.pt" for r in range(world)]
    try:
        mp.start_processes(
            worker,
            args=(str(tmp / "rendezvous"), str(tmp)),
            nprocs=world,
            join=True,
            start_method="spawn",
        )
    except mp.ProcessExitedException:
        if not all(f.exists() for f in files):
            raise
    return [torch.load(f) for f in files]
