"""Scale-MAE release: TorchGeo's full-size layout maps strictly (meta device; the unused
stored ``pos_embed`` dropped), a shrunk TorchGeo ScaleMAE with seeded weights gives the same
tokens through the registry at any GSD ratio, and other layouts fail naming the keys."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import timm
import torch

import domainfm.domains.geospatial  # noqa: F401 - registers the releases
from domainfm.domains.geospatial.scale_mae_vit import ScaleMAEViT
from domainfm.pretrained.registry import RELEASED, load_released, mapped_release_state
from domainfm.pretrained.report import CheckpointMismatchError, compare_state_dict

NAME = "scale-mae-large"
SMALL = {"img_size": 64, "patch_size": 16, "embed_dim": 64, "depth": 2, "num_heads": 4}


def _build(device: str) -> tuple[Any, str]:
    """The release's keys: a timm ViT-L/16 state dict (TorchGeo's ScaleMAE is one)."""
    with torch.device(device):
        model = timm.create_model("vit_large_patch16_224", num_classes=0)
    return model.state_dict(), ".pth"


LAYOUT_FILES: dict[str, Callable[[str], tuple[Any, str]]] = {NAME: _build}


def test_full_size_layout_maps_strictly() -> None:
    tg = pytest.importorskip("torchgeo.models")
    with torch.device("meta"):
        state = tg.scalemae_large_patch16(num_classes=0).state_dict()
        ours = ScaleMAEViT(**RELEASED.get(NAME).kwargs)
    mapped, dropped = mapped_release_state(RELEASED.get(NAME), state, path="smae.pth")
    report = compare_state_dict(ours, mapped)
    assert report.ok and not report.unexpected, report
    assert dropped == ["pos_embed"] and state["pos_embed"].shape == (1, 197, 1024)
    assert set(LAYOUT_FILES[NAME]("meta")[0]) == set(state)
    assert RELEASED.get(NAME).pretext is None


@pytest.mark.parametrize("res", [1.0, 0.35])
def test_reference_equality(res: float, tmp_path: Path) -> None:
    tg = pytest.importorskip("torchgeo.models.scale_mae")
    torch.manual_seed(0)
    ref = tg.ScaleMAE(res=res, num_classes=0, **SMALL).eval()
    path = tmp_path / "scalemae.pth"
    torch.save(ref.state_dict(), path)
    model, report = load_released(NAME, path, model_kwargs={**SMALL, "gsd_ratio": res})
    assert report.ok and report.dropped == ["pos_embed"]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.eval().forward_tokens(x)[0], ref.forward_features(x))
        torch.testing.assert_close(model(x), ref(x))
        assert model(torch.randn(1, 3, 96, 48)).shape == (1, 64)  # any grid: computed table


def test_wrong_layouts_fail_naming_keys(tmp_path: Path) -> None:
    path = tmp_path / "x.pth"
    torch.save({"encoder.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match=r"does not have the key layout.*patch_embed"):
        load_released(NAME, path)
    torch.manual_seed(0)
    state = ScaleMAEViT(in_chans=3, **SMALL).state_dict()
    state["norm_final.weight"] = state.pop("norm.weight")
    torch.save(state, path)
    with pytest.raises(CheckpointMismatchError, match=r"norm_final\.weight"):
        load_released(NAME, path, model_kwargs=SMALL)
