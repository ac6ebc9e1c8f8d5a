"""Size guards: estimate an allocation and refuse it, naming the file, before it is made.

A hostile or mistaken input (a 10 MB sparse GeoTIFF of 200000² pixels, a gzip NIfTI that
decodes to gigabytes, voxel sizes that resample to terabytes, a ``config.json`` with an absurd
width) must fail up front with the estimate, not with a ``MemoryError`` traceback after the
machine starts swapping. Every place that allocates in proportion to its input calls
:func:`check_allocation` with its estimate first.

The limit is per allocation, :data:`DEFAULT_LIMIT_GB` GiB unless the environment variable
:data:`LIMIT_ENV` (GiB, a float) says otherwise; the CLI's ``--max-alloc-gb N`` sets it.

Example::

    >>> check_allocation(4 * 512**3, what="the resampled volume", source="ct.nii.gz")
"""

from __future__ import annotations

import os
from pathlib import Path

LIMIT_ENV = "DOMAINFM_MAX_ALLOC_GB"
"""Environment variable holding the per-allocation limit in GiB (a positive float)."""

DEFAULT_LIMIT_GB = 8.0
"""The limit when :data:`LIMIT_ENV` is unset."""

_GIB = 1024**3


class AllocationTooLarge(ValueError):
    """An estimated allocation exceeds the limit; the message names the file and the bytes."""


def allocation_limit() -> int:
    """The per-allocation limit in bytes (from :data:`LIMIT_ENV`, else the default)."""
    raw = os.environ.get(LIMIT_ENV)
    if raw is None or raw.strip() == "":
        return int(DEFAULT_LIMIT_GB * _GIB)
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{LIMIT_ENV}={raw!r}: expected a positive number of GiB")
    return int(value * _GIB)


def format_bytes(nbytes: float) -> str:
    """``nbytes`` in the largest binary unit that keeps it at or above 1 (``"3.2 GiB"``)."""
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def check_allocation(nbytes: float, *, what: str, source: str | Path | None = None) -> None:
    """Refuse with :class:`AllocationTooLarge` when ``nbytes`` exceeds :func:`allocation_limit`.

    Args:
        nbytes: the estimate (a float so that products of huge shapes never overflow).
        what: what would be allocated, e.g. ``"the 200000 x 200000 x 4 window"``.
        source: the file whose content asks for it, named first in the message.
    """
    limit = allocation_limit()
    if nbytes != nbytes or nbytes > limit:  # NaN counts as too large
        where = f"{source}: " if source is not None else ""
        raise AllocationTooLarge(
            f"{where}{what} would need about {format_bytes(nbytes)}, above the "
            f"{format_bytes(limit)} limit per allocation; if that is intended, raise it with "
            f"--max-alloc-gb N (or {LIMIT_ENV}=N)"
        )
