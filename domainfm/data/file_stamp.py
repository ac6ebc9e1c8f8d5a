"""A file's stamp: its size and modification time, what caches compare to notice a change.

The file indexes and statistics caches (audio index, raster band statistics, volume index)
and the prepared-shards manifest reuse what they computed for a file whose stamp is
unchanged, and recompute it otherwise.

Example::

    >>> stamp = file_stamp("scan.nii.gz")
    >>> stamp.size, stamp.mtime_ns
    (1048576, 1718000000123456789)
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple


class FileStamp(NamedTuple):
    """Size in bytes and modification time in ns of a file."""

    size: int
    mtime_ns: int


def file_stamp(path: str | Path) -> FileStamp:
    """The :class:`FileStamp` of ``path`` (``OSError`` when it cannot be stat'ed)."""
    stat = Path(path).stat()
    return FileStamp(size=stat.st_size, mtime_ns=stat.st_mtime_ns)
