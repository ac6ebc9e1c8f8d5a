"""A fourth domain that lives only in the test folder: 1D signals stored as ``.npy``.

It registers an input contract, a preparer and a segmentation hook through the public plugin
API and nothing else, to show that a domain is one module and one registration: the CLI and
the layers below learn about it only through :mod:`domainfm.domains.plugin`.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from domainfm.core.checkpoint_io import atomic_write
from domainfm.core.contract import CONTRACTS, InputContract
from domainfm.data.shards import Preparer
from domainfm.domains.plugin import DomainPlugin, SegmentRequest, register_domain
from domainfm.tasks.finetune_module import FinetuneModule


@CONTRACTS.register("toy_signal")
@dataclass(frozen=True, kw_only=True)
class ToySignalContract(InputContract):
    kind: ClassVar[str] = "toy_signal"

    window: int
    scale: float = 1.0

    def normalize(self, x: Tensor) -> Tensor:
        return x / self.scale


class ToyPreparer:
    domain = "toy"

    def __init__(self, window: int) -> None:
        self.window = window

    def settings(self) -> dict[str, Any]:
        return {"window": self.window}

    def sources(self, src_dir: Path) -> list[tuple[Path, ...]]:
        return [(p,) for p in sorted(src_dir.rglob("*.npy"))]

    def items(self, paths: tuple[Path, ...]) -> Iterator[dict[str, Any]]:
        signal = np.load(paths[0]).astype(np.float32)
        if signal.ndim != 1 or not np.all(np.isfinite(signal)):
            raise ValueError(f"{paths[0]}: not a finite 1D signal")
        for start in range(0, signal.size - self.window + 1, self.window):
            yield {"signal": signal[start : start + self.window]}

    def channel_values(self, item: dict[str, Any]) -> np.ndarray | None:
        values: np.ndarray = item["signal"][None]
        return values


@register_domain
class ToyPlugin(DomainPlugin):
    name = "toy"
    summary = "1D toy signals (.npy)"
    contract = ToySignalContract
    segment_suffixes = (".npy",)

    def add_prepare_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--window", type=int, default=8)

    def preparer(self, args: argparse.Namespace) -> Preparer:
        return ToyPreparer(args.window)

    def segment(
        self, module: FinetuneModule, contract: InputContract, request: SegmentRequest
    ) -> str:
        assert isinstance(contract, ToySignalContract)
        signal = torch.from_numpy(np.load(request.input).astype(np.float32))
        x = contract.normalize(signal)[None, None]  # (1, 1, L)
        with torch.no_grad():
            labels = module(x).argmax(1)[0].numpy().astype(np.uint8)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.save(handle, labels)

        atomic_write(request.output, write)
        return f"{request.output} ({labels.size} samples)"
