from __future__ import annotations

from pathlib import Path

import pytest
import torch

from domainfm.tasks.checkpoint_plugin import safe_checkpoint_io


def test_checkpoint_io_saves_in_place_and_loads_safely(tmp_path: Path) -> None:
    io = safe_checkpoint_io()
    path = tmp_path / "ckpts" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}, "global_step": 3}, path)
    loaded = io.load_checkpoint(path)
    assert loaded["global_step"] == 3 and torch.equal(loaded["state_dict"]["w"], torch.ones(2))
    with pytest.raises(FileNotFoundError, match="not found"):
        io.load_checkpoint(tmp_path / "absent.ckpt")
