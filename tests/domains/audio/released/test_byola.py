"""BYOL-A releases: the released files' layout (full size, meta device) loads strictly; a BYOL
training checkpoint loads its online encoder with the target encoder, projector and predictor
dropped by name (never silently); a stray key is reported. The reference forward is checked in
tests/domains/audio/test_ntt.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import domainfm.domains.audio  # noqa: F401 - registers the releases
from domainfm.core.backbone import build_backbone
from domainfm.pretrained.registry import RELEASED, load_released, mapped_release_state
from domainfm.pretrained.report import CheckpointMismatchError, compare_state_dict

DIMS = (512, 1024, 2048)


def byola_file(d: int, device: str = "cpu") -> dict[str, torch.Tensor]:
    """``AudioNTT2020-BYOLA-64x96d{d}.pth``: 3 x (conv 3x3 64 ch, BatchNorm2d) then
    ``fc.0`` (d, 512) and ``fc.3`` (d, d); random values of those names and shapes."""
    shapes: dict[str, tuple[int, ...]] = {}
    for conv, bn, cin in ((0, 1, 1), (4, 5, 64), (8, 9, 64)):
        shapes[f"features.{conv}.weight"] = (64, cin, 3, 3)
        shapes[f"features.{conv}.bias"] = (64,)
        for p in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"features.{bn}.{p}"] = (64,)
        shapes[f"features.{bn}.num_batches_tracked"] = ()
    shapes.update({"fc.0.weight": (d, 512), "fc.0.bias": (d,)})
    shapes.update({"fc.3.weight": (d, d), "fc.3.bias": (d,)})
    with torch.device(device):
        state = {k: torch.randn(s) * 0.1 for k, s in shapes.items()}
        for bn in (1, 5, 9):
            state[f"features.{bn}.running_var"] = torch.rand(64) + 0.5
            state[f"features.{bn}.num_batches_tracked"] = torch.tensor(100)
    return state


LAYOUT_FILES: dict[str, Callable[[str], tuple[Any, str]]] = {
    f"byola-audiontt2020-d{d}": (lambda device, d=d: (byola_file(d, device), ".pth")) for d in DIMS
}
"""The released files (see tests/pretrained/test_identify.py)."""


@pytest.mark.parametrize("d", DIMS)
def test_released_layout_full_size(d: int) -> None:
    name = f"byola-audiontt2020-d{d}"
    content, _ = LAYOUT_FILES[name]("meta")
    entry = RELEASED.get(name)
    state, dropped = mapped_release_state(entry, content, path=name)
    with torch.device("meta"):
        model = build_backbone(entry.architecture, entry.kwargs)
    report = compare_state_dict(model, state)
    assert report.ok and len(report.loaded) == len(model.state_dict()) == len(content)
    assert not dropped


def test_training_checkpoint_drops_byol_parts_by_name(tmp_path: Path) -> None:
    """byol-pytorch's BYOL under a Lightning ``state_dict``: online encoder (``net`` +
    ``projector``), EMA target encoder, predictor."""
    encoder = byola_file(512)
    state = {f"online_encoder.net.{k}": v for k, v in encoder.items()}
    state.update({f"target_encoder.net.{k}": v + 1 for k, v in encoder.items()})
    heads = {
        "online_encoder.projector.net.0.weight": (4096, 512),
        "target_encoder.projector.net.0.weight": (4096, 512),
        "online_predictor.net.0.weight": (4096, 256),
    }
    state.update({k: torch.zeros(s) for k, s in heads.items()})
    path = tmp_path / "byola_training.pth"
    torch.save({"state_dict": state, "epoch": 100}, path)
    model, report = load_released("byola-audiontt2020-d512", path)
    assert report.ok and len(report.loaded) == len(encoder)
    target = [k for k in state if k.startswith("target_encoder.")]
    assert report.dropped == sorted({*target, *heads})
    torch.testing.assert_close(model.state_dict()["fc.0.weight"], encoder["fc.0.weight"])
    state["online_encoder.extra.weight"] = torch.zeros(3)  # not a BYOL part: reported
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointMismatchError, match=r"unexpected +online_encoder\.extra\.weight"):
        load_released("byola-audiontt2020-d512", path)


def test_another_width_is_named(tmp_path: Path) -> None:
    path = tmp_path / "AudioNTT2020-BYOLA-64x96d1024.pth"
    torch.save(byola_file(1024), path)
    with pytest.raises(CheckpointMismatchError, match=r"mismatched.*fc\.0\.weight"):
        load_released("byola-audiontt2020-d512", path)
