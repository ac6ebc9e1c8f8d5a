"""What a domain plugs into :func:`~domainfm.data.shards.prepare_shards`, and what it reports.

* :class:`Preparer`: a domain's deterministic preprocessing (its settings, its sources, the
  items of one source, the values entering the per-channel statistics);
* :class:`SourceResult`: the outcome of one source, passed from a worker to the parent;
* :class:`PrepareSummary`: the outcome of a run, with a human-readable :meth:`~PrepareSummary.
  describe`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np


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
