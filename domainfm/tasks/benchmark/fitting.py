"""Short, quiet Lightning fits for the domains' benchmark hooks (fine-tuning, adaptation).

A benchmark runs many fits of a few dozen steps under one progress bar, so
:func:`fit_steps` runs ``steps`` optimizer steps on a torch device name with nothing
written (no logger, checkpoints, progress bar, model summary or validation), Lightning's
start-up lines (:data:`~domainfm.core.cli_output.LIGHTNING_CHATTER`) and the warnings a user
cannot act on (few loader workers, no validation loop) silenced. :func:`seeded` seeds the
global RNG for a block (model init, dropout) and restores the caller's state after it;
:func:`fit_seeded` does both for a fresh module on a dataset, with the data modules' seeded
loader.

Example::

    >>> module = fit_seeded(
    ...     lambda: FinetuneModule(backbone=backbone.build(3), task="classification",
    ...                            num_classes=10),
    ...     clips, seed=3, steps=50, device="cpu", batch_size=32)
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import lightning as L
import torch
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch.utils.data import Dataset

from domainfm.core.cli_output import quiet_foreign_warnings
from domainfm.data.sampling import seeded_loader

LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric")
M = TypeVar("M", bound=L.LightningModule)


def lightning_device(device: str) -> tuple[str, list[int] | int]:
    """Lightning's ``accelerator`` and ``devices`` for a torch device name (``"cpu"``,
    ``"cuda"``, ``"cuda:1"``, ``"mps"``).

    Raises:
        ValueError: for another device name.
    """
    try:
        found = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"device {device!r}: {err}") from None
    if found.type == "cuda":
        return "gpu", [found.index or 0]
    if found.type in ("cpu", "mps"):
        return found.type, 1
    raise ValueError(f"device {device!r}: use cpu, cuda, cuda:N or mps")


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """The global RNG seeded with ``seed`` inside the block, the caller's CPU state restored
    after it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's information lines and the warnings about its own set-up off for the
    block (its other warnings still show)."""
    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    levels = [log.level for log in loggers]
    with warnings.catch_warnings():
        quiet_foreign_warnings()
        warnings.simplefilter("ignore", PossibleUserWarning)  # few workers, small batches
        for log in loggers:
            log.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for log, level in zip(loggers, levels, strict=True):
                log.setLevel(level)


def fit_steps(module: L.LightningModule, *, steps: int, device: str, **data: Any) -> None:
    """``steps`` optimizer steps of ``module`` on ``device``, quietly and writing nothing;
    ``data`` is what ``Trainer.fit`` takes (``train_dataloaders=`` or ``datamodule=``)."""
    accelerator, devices = lightning_device(device)
    with tempfile.TemporaryDirectory() as root, quiet_lightning():
        trainer = L.Trainer(
            max_steps=steps,
            accelerator=accelerator,
            devices=devices,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            default_root_dir=root,
        )
        trainer.fit(module, **data)


def fit_seeded(
    make: Callable[[], M],
    dataset: Dataset[Any],
    *,
    seed: int,
    steps: int,
    device: str,
    batch_size: int,
) -> M:
    """``make()``'s module, its weights drawn under :func:`seeded`, after ``steps`` steps on
    ``dataset`` in shuffled batches of ``batch_size`` (at most the dataset's size) from the
    data modules' seeded loader; returned on ``device`` in eval mode."""
    size = len(dataset)  # type: ignore[arg-type]
    with seeded(seed):
        module = make()
        loader = seeded_loader(dataset, batch_size=min(batch_size, size), seed=seed)
        fit_steps(module, steps=steps, device=device, train_dataloaders=loader)
    return module.to(device).eval()
