"""The labels of geospatial benchmark tasks: which label value is which class, and the windows
of a label raster grouped by spatial block.

:class:`ClassTable` maps label values (as text: ``"8"`` for a raster value 8, ``"forest"``
for a CSV label) to class indices ``0 … K-1`` and names. Its classes come from the spec when
it declares them (a ``classes=`` file, a STAC catalog's ``label:classes`` or
``classification:classes``), else from the values found (sorted, numerically when they are
numbers). Ignored values (``ignore=0``) and a label raster's nodata are unlabeled. A value
that is neither a class nor ignored is refused, naming it and the file.

Pixel labels put the unlabeled pixels first, as the raster data modules do ("no data" is
class 0): :data:`UNLABELED` (0, the ``ignore_index`` and first class name of every
geospatial segmentation task), then class ``i`` of the table as ``i + 1``
(:meth:`ClassTable.lookup`).

:func:`label_windows` cuts a label raster into **blocks** of ``block`` pixels (a last block
narrower than a window is merged into the one before it) and each block into windows of
``window`` pixels lying wholly inside it (a regular grid, the last window shifted back onto
the block's edge, so every pixel of the block is in a window). A window's group is its block:
no two windows of different blocks share a pixel, so a split by group never puts one pixel on
both sides. Each window records the pixel count of every label value in it (one windowed read
per block).

Example::

    >>> windows = label_windows(Path("LULC.tif"), window=32, block=64)
    >>> {w.block for w in windows}
    {(0, 0), (0, 64), (64, 0), (64, 64)}
    >>> table = ClassTable.build(observed_values(windows), ignored={"0"}, source="LULC.tif")
    >>> table.names
    ('1', '2', '3', '4', '8')
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from domainfm.domains.geospatial.raster_reader import RasterReader
from domainfm.domains.geospatial.window_grid import window_starts

UNLABELED = 0
"""Pixel label of unlabeled pixels (ignored values, nodata, padding): the ``ignore_index`` of
geospatial segmentation tasks, whose first class it is."""
UNLABELED_NAME = "unlabeled"


def value_key(value: float) -> str:
    """A raster label value as text (labels are integers: the value is rounded)."""
    return str(int(np.rint(value)))


def _sort_key(value: str) -> tuple[int, float, str]:
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


@dataclass(frozen=True)
class ClassTable:
    """Label values (text), in class order, with their names; the ignored values.

    Attributes:
        values: label value of each class index.
        names: name of each class.
        ignored: values that mark unlabeled pixels / items.
    """

    values: tuple[str, ...]
    names: tuple[str, ...]
    ignored: frozenset[str] = frozenset()

    @classmethod
    def build(
        cls,
        observed: Iterable[str],
        *,
        source: str | Path,
        declared: Sequence[tuple[str, str]] | None = None,
        ignored: Iterable[str] = (),
    ) -> ClassTable:
        """The table of the ``observed`` values: the ``declared`` ``(value, name)`` pairs in
        their order when the spec gives them, else the observed values that are not
        ``ignored``, sorted.

        Raises:
            ValueError: naming ``source``, for an observed value that is neither declared nor
                ignored, or a table of fewer than 2 classes.
        """
        skip = frozenset(ignored)
        seen = sorted(set(observed) - skip, key=_sort_key)
        if declared is not None:
            pairs = [(v, n) for v, n in declared if v not in skip]
            known = {v for v, _ in pairs}
            unknown = [v for v in seen if v not in known]
            if unknown:
                raise ValueError(
                    f"{source}: label values {unknown} are not among the declared classes "
                    f"{sorted(known, key=_sort_key)}; declare them or pass ignore="
                    f"{','.join(unknown)}"
                )
        else:
            pairs = [(v, v) for v in seen]
        if len(pairs) < 2:
            raise ValueError(
                f"{source}: {len(pairs)} class(es) {[v for v, _ in pairs]} after ignoring "
                f"{sorted(skip)}; a task needs at least 2"
            )
        return cls(
            values=tuple(v for v, _ in pairs), names=tuple(n for _, n in pairs), ignored=skip
        )

    def index(self, value: str) -> int | None:
        """The class index of ``value``; ``None`` when it is ignored or no class."""
        return self._positions.get(value)

    @cached_property
    def _positions(self) -> dict[str, int]:
        return {v: i for i, v in enumerate(self.values)}

    def lookup(self, raw: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Pixel labels (int64) of raster label values ``raw``: ``i + 1`` for class ``i``,
        :data:`UNLABELED` where ``valid`` is False or the value is ignored or no class."""
        ints = np.rint(np.nan_to_num(raw, nan=0.0)).astype(np.int64)
        out = np.full(ints.shape, UNLABELED, dtype=np.int64)
        for i, value in enumerate(self.values):
            out[(ints == int(value)) & valid] = i + 1
        return out

    def metadata(self) -> dict[str, Any]:
        """What a task records of the table (JSON values)."""
        return {"label_values": list(self.values), "ignore_values": sorted(self.ignored)}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> ClassTable:
        """The table a task recorded with :meth:`metadata` (the values as names)."""
        values = tuple(str(v) for v in metadata["label_values"])
        ignored = frozenset(str(v) for v in metadata.get("ignore_values", ()))
        return cls(values=values, names=values, ignored=ignored)


@dataclass(frozen=True)
class LabeledWindow:
    """A window of a label raster: its top-left pixel, its block's top-left pixel and the
    pixel count of each label value in it (valid pixels only)."""

    row: int
    col: int
    block: tuple[int, int]
    counts: Mapping[str, int]

    def labeled(self, table: ClassTable) -> Counter[int]:
        """Pixels per class index (unlabeled values left out)."""
        out: Counter[int] = Counter()
        for value, count in self.counts.items():
            index = table.index(value)
            if index is not None:
                out[index] += count
        return out


def dominant(counts: Counter[int]) -> int | None:
    """The class with the most pixels (ties: the smaller index); ``None`` when empty."""
    if not counts:
        return None
    return min(counts, key=lambda c: (-counts[c], c))


def block_edges(length: int, block: int, window: int) -> list[int]:
    """Edges ``0 = e0 < e1 < … = length`` of the blocks along an axis, every block at least
    ``window`` long (a shorter last block joins the one before)."""
    edges = [*range(0, length, block), length]
    if len(edges) > 2 and edges[-1] - edges[-2] < window:
        del edges[-2]
    return edges


def label_windows(label: Path, *, window: int, block: int) -> list[LabeledWindow]:
    """The windows of ``label`` (band 1) in blocks (see the module docstring).

    Raises:
        ValueError: naming ``label``, for a raster smaller than a window or unreadable.
    """
    reader = RasterReader()
    try:
        info = reader.info(label)
        if info.height < window or info.width < window:
            raise ValueError(
                f"{label} is {info.height}x{info.width} px, smaller than the window {window}; "
                "pass a smaller window="
            )
        out: list[LabeledWindow] = []
        rows = block_edges(info.height, block, window)
        cols = block_edges(info.width, block, window)
        for (r0, r1), (c0, c1) in itertools.product(
            itertools.pairwise(rows), itertools.pairwise(cols)
        ):
            raster = reader.read(label, (r0, c0, r1 - r0, c1 - c0), [1], require_valid=False)
            ints = np.rint(np.nan_to_num(raster.array[0])).astype(np.int64)
            for r in window_starts(r1 - r0, window, window):
                for c in window_starts(c1 - c0, window, window):
                    part = ints[r : r + window, c : c + window]
                    valid = raster.mask[r : r + window, c : c + window]
                    values, counts = np.unique(part[valid], return_counts=True)
                    out.append(
                        LabeledWindow(
                            row=r0 + r,
                            col=c0 + c,
                            block=(r0, c0),
                            counts=dict(
                                zip(map(str, values.tolist()), counts.tolist(), strict=True)
                            ),
                        )
                    )
        return out
    finally:
        reader.close()


def observed_values(windows: Iterable[LabeledWindow]) -> set[str]:
    """Every label value found in ``windows``."""
    return {value for w in windows for value in w.counts}
