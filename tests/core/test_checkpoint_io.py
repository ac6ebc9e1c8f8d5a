from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from domainfm.core.checkpoint_io import atomic_write, atomic_write_json, read_json_document


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


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("this would run at load time",))


def test_safe_load_allows_argparse_namespace_and_nothing_else(tmp_path: Path) -> None:
    import argparse

    from domainfm.core.checkpoint_io import UnsafeCheckpointError, safe_torch_load

    research = tmp_path / "dino.pth"  # research checkpoints keep their CLI args
    torch.save({"args": argparse.Namespace(arch="vit_small", lr=0.1), "w": torch.ones(2)}, research)
    loaded = safe_torch_load(research)
    assert loaded["args"].arch == "vit_small" and torch.equal(loaded["w"], torch.ones(2))
    evil = tmp_path / "evil.pth"
    torch.save({"payload": _Evil()}, evil)
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pth"):
        safe_torch_load(evil)


def test_read_json_document_checks_json_and_format(tmp_path: Path) -> None:
    doc = atomic_write_json(tmp_path / "doc.json", {"format": 2, "x": [1]})
    assert read_json_document(doc, 2, what="test document") == {"format": 2, "x": [1]}
    with pytest.raises(ValueError, match=r"not a test document of format 3 \(its format is 2\)"):
        read_json_document(doc, 3, what="test document")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="its format is None"):
        read_json_document(tmp_path / "list.json", 2, what="test document")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match=r"bad\.json: unreadable test document"):
        read_json_document(tmp_path / "bad.json", 2, what="test document")


def test_a_killed_writers_temp_file_is_removed_by_the_next_write(tmp_path: Path) -> None:
    """SIGKILL leaves ``atomic_write``'s temporary file behind; the next write of the same
    target removes it (its process is gone), never a live writer's or another target's."""
    script = (
        "import os, signal, sys\n"
        "from domainfm.core.checkpoint_io import atomic_write\n"
        "def write(tmp):\n"
        "    tmp.write_bytes(b'half')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "atomic_write(sys.argv[1], write)\n"
    )
    target = tmp_path / "out.nii.gz"
    proc = subprocess.run([sys.executable, "-c", script, str(target)], check=False)
    assert proc.returncode == -signal.SIGKILL
    (left,) = tmp_path.glob(".out.nii.gz.*.tmp")
    live = tmp_path / f".out.nii.gz.{os.getpid()}.abcd.tmp"  # a writer that still runs
    live.write_bytes(b"")
    other = tmp_path / ".other.tif.999999999.abcd.tmp"
    other.write_bytes(b"")
    atomic_write(target, lambda tmp: tmp.write_bytes(b"whole"))
    assert target.read_bytes() == b"whole"
    assert not left.exists()
    assert live.exists() and other.exists()
