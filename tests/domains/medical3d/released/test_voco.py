"""Released VoCo B/L/H (Swin UNETR v2) load strictly into SwinViT3DLegacy and compute the
encoder features of MONAI's Swin UNETR v2 as VoCo trained it (MONAI 1.3's patch merging).

No file can be downloaded here: each test writes the release's layout (a flat dict of the
145 ``swinViT.*`` / ``encoder{1,2,3,4,10}.*`` tensors of MONAI's ``SwinUNETR(use_v2=True)``,
Luffy03/Large-Scale-Medical#40) full-size on the meta device for names and shapes, shrunk
(``feature_size=12``) on the CPU for numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from runpy import run_path
from typing import Any

import pytest
import torch
from monai.networks.nets import SwinUNETR
from torch import Tensor

from domainfm.domains.medical3d.released.voco import FEATURE_SIZES
from domainfm.domains.medical3d.swin_legacy import SwinViT3DLegacy
from domainfm.pretrained import CheckpointMismatchError, load_released
from domainfm.pretrained.registry import RELEASED, mapped_release_state
from domainfm.pretrained.report import compare_state_dict

_MERGING = run_path(str(Path(__file__).parents[1] / "monai_merging.py"))
CpuValues = _MERGING["CpuValues"]

ENCODERS = ("encoder1.", "encoder2.", "encoder3.", "encoder4.", "encoder10.")
SMALL = {"feature_size": 12}


# MONAI 1.3.0 (the release's training code) merges as MONAI < 1.5 does
Monai13PatchMerging = _MERGING["MonaiPre15PatchMerging"]


def build_swin_unetr(device: str, **kwargs: Any) -> SwinUNETR:
    """MONAI's ``SwinUNETR`` on ``device`` (the meta device without allocating)."""
    with torch.device(device), CpuValues():
        return SwinUNETR(in_channels=1, out_channels=21, **kwargs)


def voco_state(model: SwinUNETR) -> dict[str, Tensor]:
    """The published file's content: ``swinViT.*`` and the five ``encoder*`` blocks."""
    return {k: v for k, v in model.state_dict().items() if k.startswith(("swinViT.", *ENCODERS))}


def _release_file(name: str, device: str) -> tuple[Any, str]:
    """``VoCo_{B,L,H}_SSL_head.pt`` in its real nesting and shapes."""
    model = build_swin_unetr(device, feature_size=FEATURE_SIZES[name], use_v2=True)
    return voco_state(model), ".pt"


LAYOUT_FILES: dict[str, Callable[[str], tuple[Any, str]]] = {
    name: partial(_release_file, name) for name in FEATURE_SIZES
}


@pytest.mark.parametrize("name", sorted(FEATURE_SIZES))
def test_full_size_layout_maps_strictly(name: str) -> None:
    content, suffix = LAYOUT_FILES[name]("meta")
    size = FEATURE_SIZES[name]
    assert suffix == ".pt" and len(content) == 145  # as reported for VoCo_B_SSL_head.pt
    assert tuple(content["swinViT.patch_embed.proj.weight"].shape) == (size, 1, 2, 2, 2)
    assert tuple(content["swinViT.layers4c.0.layer.conv1.conv.weight"].shape) == (
        8 * size,
        8 * size,
        3,
        3,
        3,
    )
    assert content["encoder10.layer.conv1.conv.weight"].shape[0] == 16 * size
    entry = RELEASED.get(name)
    state, dropped = mapped_release_state(entry, content, path=f"{name}.pt")
    with torch.device("meta"), CpuValues():
        model = SwinViT3DLegacy(**entry.kwargs)
    report = compare_state_dict(model, state, source=name)
    assert report.ok and not report.unexpected
    assert len(report.loaded) == 134 and len(dropped) == 11
    assert all(k.startswith(ENCODERS) for k in dropped)
    assert model.embed_dim == 16 * size


@pytest.fixture(scope="module")
def voco_small() -> SwinUNETR:
    """A shrunk VoCo model with MONAI 1.3's merging (seeded random weights)."""
    torch.manual_seed(0)
    return SwinUNETR(
        in_channels=1, out_channels=21, use_v2=True, downsample=Monai13PatchMerging, **SMALL
    ).eval()


def _same_features(model: torch.nn.Module, ref: SwinUNETR) -> None:
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        ours = model.eval().forward_intermediates(x, indices=5)
        theirs = ref.swinViT(x, normalize=True)
    assert len(ours) == len(theirs) == 5
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b)


def test_published_layout_matches_monai_swin_unetr_v2(
    tmp_path: Path, voco_small: SwinUNETR
) -> None:
    path = tmp_path / "VoCo_B_SSL_head.pt"
    torch.save(voco_state(voco_small), path)
    model, report = load_released("voco-b", path, model_kwargs=SMALL)
    assert report.ok and not report.unexpected and len(report.loaded) == 134
    assert sorted(report.dropped) == sorted(k for k in voco_state(voco_small) if "encoder" in k)
    assert isinstance(model, SwinViT3DLegacy)
    _same_features(model, voco_small)


def test_current_monai_merging_computes_other_features(voco_small: SwinUNETR) -> None:
    """Why the legacy backbone: MONAI >= 1.5's merging, same weights, other features."""
    torch.manual_seed(0)
    current = SwinUNETR(in_channels=1, out_channels=21, use_v2=True, **SMALL).eval()
    current.load_state_dict(voco_small.state_dict())
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        old, new = voco_small.swinViT(x), current.swinViT(x)
    torch.testing.assert_close(old[0], new[0])  # the patch embedding: the same
    assert not torch.allclose(old[1], new[1], atol=1e-3)  # after the first merging


def test_training_checkpoint_drops_heads(tmp_path: Path, voco_small: SwinUNETR) -> None:
    """voco_train.py's own checkpoint: DDP ``module.backbone.*`` and the projection heads."""
    state = {f"module.backbone.{k}": v for k, v in voco_state(voco_small).items()}
    for head in ("student", "teacher"):
        state[f"module.{head}.layer1.0.weight"] = torch.zeros(1024, 2304)
        state[f"module.{head}.layer3.0.bias"] = torch.zeros(1024)
    torch.save({"global_step": 3, "state_dict": state}, tmp_path / "model_current_epoch.pt")
    model, report = load_released("voco-l", tmp_path / "model_current_epoch.pt", model_kwargs=SMALL)
    assert report.ok and len(report.dropped) == 15
    assert "student.layer1.0.weight" in report.dropped
    _same_features(model, voco_small)


def test_wrong_layouts_fail_naming_keys(tmp_path: Path, voco_small: SwinUNETR) -> None:
    torch.manual_seed(1)
    v1 = SwinUNETR(in_channels=1, out_channels=21, **SMALL)  # Swin UNETR v1: no layersNc
    torch.save(voco_state(v1), tmp_path / "v1.pt")
    with pytest.raises(CheckpointMismatchError, match=r"layers1c\.0\.layer\.conv1") as info:
        load_released("voco-b", tmp_path / "v1.pt", model_kwargs=SMALL)
    assert "swinViT.layers4c.0.layer.conv2.conv.weight" in info.value.report.missing

    renamed = voco_state(voco_small)
    renamed["swinViT.layers2.0.blocks.1.attn.qkv_renamed.weight"] = renamed.pop(
        "swinViT.layers2.0.blocks.1.attn.qkv.weight"
    )
    torch.save(renamed, tmp_path / "renamed.pt")
    with pytest.raises(CheckpointMismatchError, match=r"qkv_renamed") as info:
        load_released("voco-b", tmp_path / "renamed.pt", model_kwargs=SMALL)
    assert info.value.report.missing == ["swinViT.layers2.0.blocks.1.attn.qkv.weight"]

    torch.save(voco_state(voco_small), tmp_path / "VoCo_B_SSL_head.pt")  # B file, L model
    with pytest.raises(CheckpointMismatchError, match=r"mismatched.*patch_embed\.proj\.weight"):
        load_released("voco-l", tmp_path / "VoCo_B_SSL_head.pt", model_kwargs={"feature_size": 24})

    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match=r"list\.pt does not have the key layout of 'voco-b'"):
        load_released("voco-b", tmp_path / "list.pt")


def test_input_contract() -> None:
    contract = RELEASED.get("voco-b").contract
    assert contract.to_dict()["hu_window"] == [-175.0, 250.0]
    assert contract.spacing == (1.5, 1.5, 1.5) and contract.crop_size == [64, 64, 64]
    assert RELEASED.get("voco-h").kwargs["feature_size"] == 192
