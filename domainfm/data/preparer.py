"""What a domain plugs into :func:`~domainfm.data.shards.prepare_shards`, and what it reports.

* :class:`Preparer`: a domain's deterministic preprocessing (its settings, its sources, the
  items of one source, the values entering the per-channel statistics);
* :class:`SourceResult`: the outcome of one source, passed from a worker to the parent;
* :class:`PrepareSummary`: the outcome of a run, with a human-readable :meth:`~PrepareSummary.
  describe`;
* :func:`parse_chunk_bytes`: a shard size as LitData takes it (``--chunk-bytes``), checked
  before any worker starts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

CHUNK_UNITS = {"tb": 1000**4, "gb": 1000**3, "mb": 1000**2, "kb": 1000, "b": 1}
"""The size units of ``--chunk-bytes`` (LitData's, decimal; also without the ``b``)."""

_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*")


def parse_chunk_bytes(text: str) -> str:
    """A shard size such as ``64MB``, ``1.5GB`` or ``1000000`` (bytes), in the spelling
    LitData's ``optimize(chunk_bytes=...)`` takes.

    Raises:
        ValueError: naming the value, when it is no size or not at least one byte.
    """
    found = _SIZE.fullmatch(text.lower())
    unit = found.group(2) if found else ""
    units = {**CHUNK_UNITS, **{k[0]: v for k, v in CHUNK_UNITS.items() if k != "b"}, "": 1}
    if found is None or unit not in units:
        raise ValueError(
            f"{text!r} is not a size: give bytes or a number with a unit, e.g. 64MB "
            f"(units: {', '.join(u.upper() for u in CHUNK_UNITS)})"
        )
    nbytes = float(found.group(1)) * units[unit]
    if not (math.isfinite(nbytes) and nbytes >= 1):
        raise ValueError(f"{text!r}: a shard holds at least one byte")
    return text.strip() if unit else f"{int(nbytes)}b"


@runtime_checkable
class Preparer(Protocol):
    """A domain's deterministic preprocessing, run once per source by
    :func:`~domainfm.data.shards.prepare_shards`.

    Attributes:
        domain: the domain name recorded in the manifest (``"medical3d"``, ...).
    """

    domain: str

    def settings(self) -> dict[str, Any]:
        """Every setting that changes the prepared items (JSON-serializable)."""
        ...

    def sources(self, src_dir: Path) -> list[tuple[Path, ...]]:
        """The units of work under ``src_dir``: each a tuple of paths prepared together."""
        ...

    def items(self, paths: tuple[Path, ...]) -> Iterator[dict[str, Any]]:
        """The prepared items of one source (dicts of numpy arrays, ints, floats, strings;
        the same keys and types for every item). Raises ``ValueError`` naming the file and
        the problem for a bad source."""
        ...

    def channel_values(self, item: dict[str, Any]) -> np.ndarray | None:
        """``(C, M)`` values of ``item`` that enter the per-channel statistics (``None``:
        none)."""
        ...


@dataclass
class SourceResult:
    """What preparing one source gave (written by a LitData worker, read by the parent)."""

    key: str
    status: str  # "ok" or "skipped"
    reason: str = ""
    items: int = 0
    shapes: dict[str, list[list[int]]] = field(default_factory=dict)
    channel_count: list[float] = field(default_factory=list)
    channel_sum: list[float] = field(default_factory=list)
    channel_sumsq: list[float] = field(default_factory=list)


@dataclass
class PrepareSummary:
    """The outcome of :func:`~domainfm.data.shards.prepare_shards`.

    Attributes:
        out_dir: the prepared folder.
        prepared: sources prepared in this run.
        unchanged: sources already prepared earlier (left as they were).
        skipped: ``(source, reason)`` of every source that failed in this run.
        skipped_earlier: ``(source, reason)`` of unchanged sources that failed before.
        changed: sources whose files changed since they were prepared (kept as prepared).
        items_added: items written in this run.
        total_items: items in the folder after the run.
        recovered: a previous interrupted run was rolled back.
        notes: other things the user should know (e.g. another source folder than before).
        seconds: wall time.
    """

    out_dir: Path
    prepared: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    skipped_earlier: list[tuple[str, str]] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    items_added: int = 0
    total_items: int = 0
    recovered: bool = False
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """A human-readable summary, one line per skipped or changed source."""
        head = (
            f"prepared {len(self.prepared)} new sources ({self.items_added} items) into "
            f"{self.out_dir}; {len(self.unchanged)} unchanged, {len(self.skipped)} skipped, "
            f"{len(self.changed)} changed since prepared; {self.total_items} items in total "
            f"({self.seconds:.1f} s)"
        )
        if not self.prepared and not self.skipped:
            head = f"nothing new to prepare in {self.out_dir} ({self.total_items} items)"
        lines = [head]
        if self.recovered:
            lines.append("  rolled back an interrupted earlier run (its sources were redone)")
        lines += [f"  note: {note}" for note in self.notes]
        lines += [f"  skipped {source}: {reason}" for source, reason in self.skipped]
        lines += [
            f"  skipped {source} (in an earlier run, unchanged since): {reason}"
            for source, reason in self.skipped_earlier
        ]
        lines += [
            f"  changed {source}: kept the prepared version (prepare into a new folder to "
            "replace it)"
            for source in self.changed
        ]
        return "\n".join(lines)
