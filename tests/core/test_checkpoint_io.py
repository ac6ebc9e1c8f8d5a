from __future__ import annotations

from pathlib import Path

import pytest
import torch

from domainfm.core.checkpoint_io import atomic_write, safe_checkpoint_io


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "model.ckpt"
    atomic_write(target, lambda tmp: tmp.write_bytes(b"old"))

    def crash(tmp: Path) -> None:
        tmp.write_bytes(b"half a new fi")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, crash)
    assert target.read_bytes() == b"old"
    assert [p.name for p in target.parent.iterdir()] == ["model.ckpt"]  # no temp left behind


def test_checkpoint_io_saves_in_place_and_loads_safely(tmp_path: Path) -> None:
    io = safe_checkpoint_io()
    path = tmp_path / "ckpts" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}, "global_step": 3}, path)
    loaded = io.load_checkpoint(path)
    assert loaded["global_step"] == 3 and torch.equal(loaded["state_dict"]["w"], torch.ones(2))
    with pytest.raises(FileNotFoundError, match="not found"):
        io.load_checkpoint(tmp_path / "absent.ckpt")
