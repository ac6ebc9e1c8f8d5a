"""SoftCon releases: the DINOv2 ViTs (layer scale) load as timm ``vit_*_patch14_dinov2`` and
give timm's tokens; the ResNet-50s load as TorchGeo's/torchvision's ResNet-50; contracts match
TorchGeo's enums; other layouts fail naming the keys."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import timm
import torch

import domainfm.domains.geospatial  # noqa: F401 - registers the releases
from domainfm.core.backbone import BACKBONES
from domainfm.domains.geospatial.timm_vit import TimmViT
from domainfm.pretrained.registry import RELEASED, load_released, mapped_release_state
from domainfm.pretrained.report import CheckpointMismatchError, compare_state_dict

VITS = {
    "softcon-vit-b14-s2": ("vit_base_patch14_dinov2", 13),
    "softcon-vit-s14-s2": ("vit_small_patch14_dinov2", 13),
    "softcon-vit-b14-s1": ("vit_base_patch14_dinov2", 2),
    "softcon-vit-s14-s1": ("vit_small_patch14_dinov2", 2),
}
RN50 = {"softcon-rn50-s2": 13, "softcon-rn50-s1": 2}
SMALL = {"img_size": 56, "embed_dim": 64, "depth": 2, "num_heads": 4}


def _vit_file(arch: str, chans: int) -> Callable[[str], tuple[Any, str]]:
    def build(device: str) -> tuple[Any, str]:
        with torch.device(device):
            model = timm.create_model(arch, img_size=224, in_chans=chans, num_classes=0)
        return model.state_dict(), ".pth"

    return build


def _rn50_file(chans: int) -> Callable[[str], tuple[Any, str]]:
    def build(device: str) -> tuple[Any, str]:
        with torch.device(device):
            state = timm.create_model("resnet50", in_chans=chans).state_dict()
        return {k: v for k, v in state.items() if not k.startswith("fc.")}, ".pth"

    return build


LAYOUT_FILES: dict[str, Callable[[str], tuple[Any, str]]] = {
    **{name: _vit_file(*spec) for name, spec in VITS.items()},
    **{name: _rn50_file(chans) for name, chans in RN50.items()},
}


@pytest.mark.parametrize("name", list(LAYOUT_FILES))
def test_full_size_layout_maps_strictly(name: str) -> None:
    entry = RELEASED.get(name)
    content, _ = LAYOUT_FILES[name]("meta")
    with torch.device("meta"):
        ours = BACKBONES.get(entry.architecture)(**entry.kwargs)
    mapped, dropped = mapped_release_state(entry, content, path="softcon.pth")
    report = compare_state_dict(ours, mapped)
    assert report.ok and not report.unexpected and not dropped, report
    if name in VITS:
        assert mapped["pos_embed"].shape[1] == 257 and "blocks.0.ls1.gamma" in mapped


def test_dinov2_vit_reference_equality(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ref = timm.create_model("vit_base_patch14_dinov2", in_chans=13, num_classes=0, **SMALL).eval()
    state = {**ref.state_dict(), "mask_token": torch.zeros(1, 64)}  # DINOv2's, dropped
    path = tmp_path / "B13_vitb14_softcon_enc.pth"
    torch.save(state, path)
    model, report = load_released("softcon-vit-b14-s2", path, model_kwargs=SMALL)
    assert report.ok and report.dropped == ["mask_token"]
    assert isinstance(model, TimmViT)
    x = torch.randn(2, 13, 56, 56)
    with torch.no_grad():
        torch.testing.assert_close(model.eval().forward_tokens(x)[0], ref.forward_features(x))
        torch.testing.assert_close(model(x), ref(x))
        maps = model.forward_intermediates(x, 2)
        assert [tuple(m.shape) for m in maps] == [(2, 64, 4, 4)] * 2
        keep = torch.tensor([[0, 7], [3, 15]])
        assert model.forward_tokens(x, keep)[0].shape == (2, 3, 64)


def test_rn50_reference_equality(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ref = timm.create_model("resnet50", in_chans=13).eval()
    path = tmp_path / "B13_rn50_softcon.pth"
    torch.save({k: v for k, v in ref.state_dict().items() if not k.startswith("fc.")}, path)
    model, report = load_released("softcon-rn50-s2", path)
    assert report.ok and len(report.loaded) == len(model.state_dict())
    x = torch.randn(1, 13, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(
            model.eval().forward_intermediates(x)[-1], ref.forward_features(x)
        )


def _ours(band: str) -> str:
    digits = band[1:].upper()
    return "B" + (digits.zfill(2) if digits.isdigit() else digits)


@pytest.mark.parametrize("name", ["softcon-vit-b14-s2", "softcon-rn50-s2", "softcon-vit-s14-s1"])
def test_contract_matches_torchgeo(name: str) -> None:
    tg = pytest.importorskip("torchgeo.models")
    enum = (
        tg.ResNet50_Weights
        if "rn50" in name
        else tg.ViTBase14_DINOv2_Weights
        if "b14" in name
        else tg.ViTSmall14_DINOv2_Weights
    )
    weights = enum["SENTINEL1_GRD_SOFTCON" if name.endswith("s1") else "SENTINEL2_ALL_SOFTCON"]
    entry = RELEASED.get(name)
    bands = weights.meta["bands"]
    assert [b if b in ("VV", "VH") else _ours(b) for b in bands] == entry.input["bands"]
    [normalize] = [m for m in weights.transforms if type(m).__name__ == "Normalize"]
    assert list(normalize.mean) == entry.input["normalization"]["mean"]
    assert list(normalize.std) == entry.input["normalization"]["std"]
    assert weights.url.rsplit("/", 1)[1] in entry.reference


def test_wrong_layouts_fail_naming_keys(tmp_path: Path) -> None:
    path = tmp_path / "x.pth"
    torch.save({"model": {"a": torch.zeros(1)}}, path)
    with pytest.raises(ValueError, match="does not have the key layout"):
        load_released("softcon-vit-b14-s2", path)
    ref = timm.create_model("vit_base_patch14_dinov2", in_chans=13, num_classes=0, **SMALL)
    state = ref.state_dict()
    state["blocks.0.ls1.weight"] = state.pop("blocks.0.ls1.gamma")
    torch.save(state, path)
    with pytest.raises(CheckpointMismatchError, match=r"blocks\.0\.ls1\.weight"):
        load_released("softcon-vit-b14-s2", path, model_kwargs=SMALL)
