"""DOFA releases: TorchGeo's full-size key layout maps strictly (meta device), a shrunk
TorchGeo DOFA with seeded weights loads through the registry and gives its tokens for any
wavelengths, and files of another layout fail naming the keys."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from torch import Tensor

import domainfm.domains.geospatial  # noqa: F401 - registers the releases
from domainfm.domains.geospatial.contract import RasterContract
from domainfm.domains.geospatial.dofa_vit import DOFAViT
from domainfm.domains.geospatial.released.dofa import DOFA_BASE, DOFA_LARGE, dofa_kwargs
from domainfm.pretrained.registry import RELEASED, load_released, mapped_release_state
from domainfm.pretrained.report import CheckpointMismatchError, compare_state_dict

SIZES = {"dofa-base-patch16-224": DOFA_BASE, "dofa-large-patch16-224": DOFA_LARGE}
SMALL = {"img_size": 64, "patch_size": 16, "embed_dim": 64, "depth": 2, "num_heads": 4}
WAVES = [0.49, 0.56, 0.665, 0.842]


def _layout(kwargs: dict[str, Any]) -> Callable[[str], tuple[Any, str]]:
    def build(device: str) -> tuple[Any, str]:
        with torch.device(device):
            return DOFAViT(**kwargs).state_dict(), ".pth"  # keys = TorchGeo's (tested below)

    return build


LAYOUT_FILES: dict[str, Callable[[str], tuple[Any, str]]] = {
    name: _layout(kwargs) for name, kwargs in SIZES.items()
}


@pytest.mark.parametrize("name", list(SIZES))
def test_torchgeo_full_size_layout_maps_strictly(name: str) -> None:
    tg = pytest.importorskip("torchgeo.models")
    builder = tg.dofa_base_patch16_224 if "base" in name else tg.dofa_large_patch16_224
    with torch.device("meta"):
        state = builder(num_classes=10).state_dict()  # with TorchGeo's fc_norm and head
        ours = DOFAViT(**RELEASED.get(name).kwargs)
    entry = RELEASED.get(name)
    mapped, dropped = mapped_release_state(entry, state, path="dofa.pth")
    report = compare_state_dict(ours, mapped)
    assert report.ok and not report.unexpected, report
    assert dropped == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    assert mapped["pos_embed"].shape == (1, 197, SIZES[name]["embed_dim"])
    content, suffix = LAYOUT_FILES[name]("meta")
    assert suffix == ".pth" and set(content) == set(state) - set(dropped)


@pytest.fixture(scope="module")
def reference() -> torch.nn.Module:
    tg = pytest.importorskip("torchgeo.models.dofa")
    torch.manual_seed(0)
    return tg.DOFA(num_classes=0, **SMALL).eval()


def _ref_tokens(ref: torch.nn.Module, x: Tensor, waves: list[float]) -> Tensor:
    seen: dict[str, Tensor] = {}
    hook = ref.blocks[-1].register_forward_hook(lambda m, i, o: seen.setdefault("t", o))
    with torch.no_grad():
        ref.forward_features(x, waves)
    hook.remove()
    return seen["t"]


def test_reference_equality_for_any_wavelengths(reference: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "dofa_base_patch16_224.pth"
    torch.save(reference.state_dict(), path)  # TorchGeo's model: + fc_norm (dropped)
    model, report = load_released(
        "dofa-base-patch16-224", path, model_kwargs={**SMALL, "wavelengths_um": WAVES}
    )
    assert report.ok and report.dropped == ["fc_norm.bias", "fc_norm.weight"]
    assert len(report.loaded) == len(model.state_dict())
    x = torch.randn(2, 4, 64, 64)
    with torch.no_grad():
        tokens, grid = model.eval().forward_tokens(x)
        torch.testing.assert_close(tokens, _ref_tokens(reference, x, WAVES))
        assert grid.shape == (4, 4)
        other = [0.665, 1.61]  # per call: any band list
        got = model.forward_tokens(x[:, :2], wavelengths_um=other)[0]
        torch.testing.assert_close(got, _ref_tokens(reference, x[:, :2], other))
        pooled = torch.nn.functional.layer_norm(tokens[:, 1:].mean(1), (64,), eps=1e-6)
        torch.testing.assert_close(pooled, reference.forward_features(x, WAVES))
        assert model(x).shape == (2, 64)


def test_wavelengths_from_the_data_contract(reference: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "dofa.pth"
    torch.save(reference.state_dict(), path)
    contract = RasterContract(bands=["B02", "B03", "B04", "B08"])
    assert dofa_kwargs(contract) == {"wavelengths_um": WAVES}
    model, _ = load_released(
        "dofa-base-patch16-224", path, model_kwargs={**SMALL, **dofa_kwargs(contract)}
    )
    x = torch.randn(1, 4, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(
            model.eval().forward_tokens(x)[0], _ref_tokens(reference, x, WAVES)
        )
    with pytest.raises(ValueError, match="wavelength"):
        dofa_kwargs(RasterContract(bands=["red", "nir"]))
    assert RELEASED.get("dofa-base-patch16-224").input["wavelengths_required"]


def test_wrong_layouts_fail_naming_keys(reference: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "vit.pth"
    torch.save(timm.create_model("vit_tiny_patch16_224").state_dict(), path)
    with pytest.raises(ValueError, match=r"does not have the key layout.*fclayer"):
        load_released("dofa-base-patch16-224", path)
    state = reference.state_dict()
    state["blocks.1.norm3.weight"] = state.pop("blocks.1.norm2.weight")
    torch.save(state, path)
    with pytest.raises(CheckpointMismatchError, match=r"blocks\.1\.norm3\.weight"):
        load_released("dofa-base-patch16-224", path, model_kwargs=SMALL)
