from __future__ import annotations

import os
from pathlib import Path

import pytest

from domainfm.data.file_stamp import FileStamp, file_stamp


def test_stamp_is_size_and_mtime_ns(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    path.write_bytes(b"12345")
    os.utime(path, ns=(1_000, 2_000_000_123))
    assert file_stamp(path) == FileStamp(size=5, mtime_ns=2_000_000_123)
    assert file_stamp(str(path)) == (5, 2_000_000_123)
    path.write_bytes(b"123456")
    assert file_stamp(path).size == 6
    with pytest.raises(FileNotFoundError):
        file_stamp(tmp_path / "missing")
