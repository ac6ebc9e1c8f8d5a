"""CROMA releases (one per modality encoder): TorchGeo's full-size files map strictly (meta
device; the other encoder, GAP-FFNs and joint encoder dropped by name), a shrunk TorchGeo
CROMA with seeded weights gives the same encodings through the registry, and other layouts
fail naming the keys."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import domainfm.domains.geospatial  # noqa: F401 - registers the releases
from domainfm.domains.geospatial.croma_vit import CROMAEncoder
from domainfm.pretrained.registry import RELEASED, load_released, mapped_release_state
from domainfm.pretrained.report import CheckpointMismatchError, compare_state_dict

NAMES = ("croma-base-s1", "croma-base-s2", "croma-large-s1", "croma-large-s2")
GROUPS = ("s1_encoder", "s1_GAP_FFN", "s2_encoder", "s2_GAP_FFN", "joint_encoder")


def _file(model: nn.Module) -> dict[str, Any]:
    """The released file: one state dict per part (TorchGeo ``load_weights`` reads these)."""
    return {g: getattr(model, g).state_dict() for g in GROUPS}


def _build(size: str) -> Callable[[str], tuple[Any, str]]:
    def build(device: str) -> tuple[Any, str]:
        from torchgeo.models import croma

        with torch.device(device):
            builder = croma.croma_base if size == "base" else croma.croma_large
            model = builder(image_size=8)  # tiny ALiBi buffer (not in the file)
        return _file(model), ".pt"

    return build


IDENTICAL_LAYOUTS = (
    frozenset({"croma-base-s1", "croma-base-s2"}),
    frozenset({"croma-large-s1", "croma-large-s2"}),
)
"""One CROMA file holds both modality encoders: each release reads its own from it."""

LAYOUT_FILES: dict[str, Callable[[str], tuple[Any, str]]] = {
    name: _build(name.split("-")[1]) for name in NAMES
}


@pytest.mark.parametrize("name", NAMES)
def test_full_size_file_maps_strictly(name: str) -> None:
    pytest.importorskip("torchgeo.models")
    content, _ = LAYOUT_FILES[name]("meta")
    entry = RELEASED.get(name)
    with torch.device("meta"):
        ours = CROMAEncoder(**entry.kwargs)
    mapped, dropped = mapped_release_state(entry, content, path="CROMA.pt")
    report = compare_state_dict(ours, mapped)
    assert report.ok and not report.unexpected, report
    encoder = "s1_encoder" if name.endswith("s1") else "s2_encoder"
    others = {g for g in GROUPS if g != encoder}
    assert {k.split(".")[0] for k in dropped} == others
    assert len(dropped) == sum(len(content[g]) for g in others)


@pytest.mark.parametrize("modality", ["sar", "optical"])
def test_reference_equality(modality: str, tmp_path: Path) -> None:
    tg = pytest.importorskip("torchgeo.models.croma")
    torch.manual_seed(0)
    ref = tg.CROMA(encoder_dim=64, encoder_depth=2, num_heads=16, image_size=32).eval()
    path = tmp_path / "CROMA_base.pt"
    torch.save(_file(ref), path)
    name, chans = ("croma-base-s1", 2) if modality == "sar" else ("croma-base-s2", 12)
    depth = 1 if modality == "sar" else 2
    model, report = load_released(name, path, model_kwargs={"embed_dim": 64, "depth": depth})
    assert report.ok and len(report.loaded) == len(model.state_dict())
    x = torch.randn(2, chans, 32, 32)
    with torch.no_grad():
        other = torch.randn(2, 14 - chans, 32, 32)
        pair = (x, other) if modality == "sar" else (other, x)
        out = ref(x_sar=pair[0], x_optical=pair[1])
        key = "sar_encodings" if modality == "sar" else "optical_encodings"
        tokens, grid = model.eval().forward_tokens(x)
        torch.testing.assert_close(tokens, out[key])
        assert grid.shape == (4, 4)
        keep = torch.tensor([[0, 5, 9], [2, 3, 15]])
        assert model.forward_tokens(x, keep)[0].shape == (2, 3, 64)


def test_wrong_layouts_fail_naming_keys(tmp_path: Path) -> None:
    torch.manual_seed(0)
    enc = CROMAEncoder(in_chans=12, embed_dim=64, depth=2)
    path = tmp_path / "flat.pt"
    torch.save(enc.state_dict(), path)  # a flat encoder, not CROMA's dict of parts
    with pytest.raises(ValueError, match=r"does not have the key layout.*s2_encoder"):
        load_released("croma-base-s2", path)
    state = enc.state_dict()
    state["transformer.layers.1.0.to_q.weight"] = state.pop("transformer.layers.1.0.to_qkv.weight")
    torch.save({"s2_encoder": state, "extra_head": {"w": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointMismatchError, match=r"to_q\.weight"):
        load_released("croma-base-s2", path, model_kwargs={"embed_dim": 64, "depth": 2})
