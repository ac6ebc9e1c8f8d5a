"""Released SuPreM Swin UNETR and SegResNet load strictly into our encoders and compute the
encoder features of the upstream models.

No file can be downloaded here: each test writes ``{"net": <DDP state dict>, ...}`` as
SuPreM's ``supervised_pretraining/train.py`` saves it — the Universal model
(``module.backbone.<SwinUNETR key>`` plus its CLIP-driven heads) or MONAI's ``SegResNet``
(``module.<key>``) — full-size on the meta device for names and shapes, shrunk on the CPU for
numbers against MONAI's ``SwinUNETR`` (with SuPreM's patch-merging order) and ``SegResNet``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from runpy import run_path
from typing import Any

import pytest
import torch
from monai.networks.nets import SegResNet, SwinUNETR
from torch import Tensor

from domainfm.domains.medical3d.cnn import SegResNetEncoder3D
from domainfm.domains.medical3d.released.suprem import segresnet_to_encoder
from domainfm.domains.medical3d.swin_legacy import SwinViT3DLegacy
from domainfm.pretrained import CheckpointMismatchError, load_released
from domainfm.pretrained.registry import RELEASED, mapped_release_state
from domainfm.pretrained.report import compare_state_dict

_MERGING = run_path(str(Path(__file__).parents[1] / "monai_merging.py"))
CpuValues = _MERGING["CpuValues"]

NUM_CLASS = 25  # AbdomenAtlas 1.1 classes; only the dropped heads depend on it


# SuPreM's ``backbone/swinunetr.py`` (MONAI 0.9's) merges as MONAI < 1.5 does
SuPreMPatchMerging = _MERGING["MonaiPre15PatchMerging"]


def build_swin_unetr(device: str, **kwargs: Any) -> SwinUNETR:
    """MONAI's ``SwinUNETR`` (v1, as SuPreM's copy) on ``device``."""
    with torch.device(device), CpuValues():
        return SwinUNETR(in_channels=1, out_channels=3, **kwargs)


def _universal_heads(size: int) -> dict[str, Tensor]:
    """The Universal model's heads (``Universal_model.py``, swinunetr, rand_embedding)."""
    return {
        "precls_conv.0.weight": torch.ones(size),
        "precls_conv.0.bias": torch.zeros(size),
        "precls_conv.2.weight": torch.zeros(8, size, 1, 1, 1),
        "precls_conv.2.bias": torch.zeros(8),
        "GAP.0.weight": torch.ones(16 * size),
        "GAP.0.bias": torch.zeros(16 * size),
        "GAP.3.weight": torch.zeros(256, 16 * size, 1, 1, 1),
        "GAP.3.bias": torch.zeros(256),
        "controller.weight": torch.zeros(153, 512, 1, 1, 1),
        "controller.bias": torch.zeros(153),
        "organ_embedding.weight": torch.zeros(NUM_CLASS, 256),
    }


def suprem_swin_file(model: SwinUNETR, size: int) -> dict[str, Any]:
    """``{"net": ...}`` of the Universal model around ``model`` (no ``out`` block)."""
    net = {f"module.backbone.{k}": v for k, v in model.state_dict().items() if ".out." not in k}
    net = {k: v for k, v in net.items() if not k.startswith("module.backbone.out.")}
    with torch.device(next(iter(net.values())).device):
        net.update({f"module.{k}": v for k, v in _universal_heads(size).items()})
    return {"net": net, "optimizer": {}, "scheduler": {}, "epoch": 2000}


def suprem_segresnet_file(model: SegResNet) -> dict[str, Any]:
    net = {f"module.{k}": v for k, v in model.state_dict().items()}
    return {"net": net, "optimizer": {}, "scheduler": {}, "epoch": 2000}


def _monai_segresnet(init_filters: int) -> SegResNet:
    return SegResNet(
        blocks_down=(1, 2, 2, 4),
        blocks_up=(1, 1, 1),
        init_filters=init_filters,
        in_channels=1,
        out_channels=NUM_CLASS,
        dropout_prob=0.0,
    )


def _swin_release(device: str) -> tuple[Any, str]:
    model = build_swin_unetr(device, feature_size=48)
    return suprem_swin_file(model, 48), ".pth"


def _segresnet_release(device: str) -> tuple[Any, str]:
    with torch.device(device):
        return suprem_segresnet_file(_monai_segresnet(16)), ".pth"


LAYOUT_FILES: dict[str, Callable[[str], tuple[Any, str]]] = {
    "suprem-swinunetr": _swin_release,
    "suprem-segresnet": _segresnet_release,
}


def test_swinunetr_full_size_layout_maps_strictly() -> None:
    content, _ = LAYOUT_FILES["suprem-swinunetr"]("meta")
    net = content["net"]
    assert tuple(net["module.backbone.swinViT.patch_embed.proj.weight"].shape) == (48, 1, 2, 2, 2)
    assert "module.backbone.decoder1.conv_block.conv1.conv.weight" in net
    entry = RELEASED.get("suprem-swinunetr")
    state, dropped = mapped_release_state(entry, content, path="suprem_swinunetr.pth")
    with torch.device("meta"), CpuValues():
        model = SwinViT3DLegacy(**entry.kwargs)
    report = compare_state_dict(model, state, source="suprem-swinunetr")
    assert report.ok and not report.unexpected
    assert len(report.loaded) == sum(k.startswith("module.backbone.swinViT.") for k in net)
    assert len(report.loaded) + len(dropped) == len(net)
    assert {
        "controller.weight",
        "organ_embedding.weight",
        "backbone.encoder10.layer.conv1.conv.weight",
    } <= set(dropped)


def test_segresnet_full_size_layout_maps_strictly() -> None:
    content, _ = LAYOUT_FILES["suprem-segresnet"]("meta")
    net = content["net"]
    assert tuple(net["module.convInit.conv.weight"].shape) == (16, 1, 3, 3, 3)
    assert tuple(net["module.down_layers.3.0.conv.weight"].shape) == (128, 64, 3, 3, 3)
    entry = RELEASED.get("suprem-segresnet")
    state, dropped = mapped_release_state(entry, content, path="suprem_segresnet.pth")
    with torch.device("meta"):
        model = SegResNetEncoder3D(**entry.kwargs)
    report = compare_state_dict(model, state, source="suprem-segresnet")
    assert report.ok and not report.unexpected
    assert len(report.loaded) == sum(k.startswith(("module.convInit", "module.down_")) for k in net)
    assert dropped and all(
        k.startswith(("up_layers.", "up_samples.", "conv_final.")) for k in dropped
    )
    assert round(sum(v.numel() for v in net.values()) / 1e6, 2) == 4.70  # the README's 4.70M


def test_segresnet_key_map() -> None:
    assert segresnet_to_encoder("convInit.conv.weight") == "encoder.conv_init.weight"
    assert (
        segresnet_to_encoder("down_layers.2.0.conv.weight") == "encoder.layers.1.downsample.weight"
    )
    assert (
        segresnet_to_encoder("down_layers.3.4.conv2.conv.weight")
        == "encoder.layers.3.blocks.3.conv2.weight"
    )
    assert (
        segresnet_to_encoder("down_layers.0.1.norm1.bias") == "encoder.layers.0.blocks.0.norm1.bias"
    )
    assert segresnet_to_encoder("up_layers.0.0.norm1.bias") == "up_layers.0.0.norm1.bias"


def test_swinunetr_matches_suprem_swin_unetr(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ref = SwinUNETR(
        in_channels=1, out_channels=3, feature_size=12, downsample=SuPreMPatchMerging
    ).eval()
    torch.save(suprem_swin_file(ref, 12), tmp_path / "supervised_suprem_swinunetr_2100.pth")
    model, report = load_released(
        "suprem-swinunetr",
        tmp_path / "supervised_suprem_swinunetr_2100.pth",
        model_kwargs={"feature_size": 12},
    )
    assert report.ok and not report.unexpected
    assert "precls_conv.2.weight" in report.dropped
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        ours = model.eval().forward_intermediates(x, indices=5)
        theirs = ref.swinViT(x, normalize=True)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b)


def test_segresnet_matches_monai_segresnet_encoder(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ref = _monai_segresnet(8).eval()
    with torch.no_grad():  # GroupNorm affine away from identity, so a swapped norm shows
        for name, p in ref.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5) if name.endswith("weight") else p.uniform_(-0.5, 0.5)
    torch.save(suprem_segresnet_file(ref), tmp_path / "supervised_suprem_segresnet_2100.pth")
    model, report = load_released(
        "suprem-segresnet",
        tmp_path / "supervised_suprem_segresnet_2100.pth",
        model_kwargs={"init_filters": 8},
    )
    assert report.ok and not report.unexpected
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        ours = model.eval().forward_intermediates(x, indices=4)
        _, theirs = ref.encode(x)
    assert [m.shape[1] for m in ours] == [8, 16, 32, 64]
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b)


def test_wrong_layouts_fail_naming_keys(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ref = _monai_segresnet(8)
    flat = {f"module.{k}": v for k, v in ref.state_dict().items()}
    torch.save(flat, tmp_path / "no_net.pth")  # the state dict without the 'net' level
    with pytest.raises(ValueError, match=r"no_net\.pth does not have the key layout .*'net'"):
        load_released("suprem-segresnet", tmp_path / "no_net.pth")

    renamed = suprem_segresnet_file(ref)
    renamed["net"]["module.down_layer.1.1.conv1.conv.weight"] = renamed["net"].pop(
        "module.down_layers.1.1.conv1.conv.weight"
    )
    torch.save(renamed, tmp_path / "renamed.pth")
    with pytest.raises(CheckpointMismatchError, match=r"down_layer\.1\.1") as info:
        load_released(
            "suprem-segresnet", tmp_path / "renamed.pth", model_kwargs={"init_filters": 8}
        )
    assert info.value.report.missing == ["encoder.layers.1.blocks.0.conv1.weight"]

    torch.save(suprem_segresnet_file(ref), tmp_path / "segresnet.pth")  # SegResNet as Swin
    with pytest.raises(CheckpointMismatchError, match=r"swinViT\.patch_embed") as info:
        load_released(
            "suprem-swinunetr", tmp_path / "segresnet.pth", model_kwargs={"feature_size": 12}
        )
    assert "convInit.conv.weight" in info.value.report.unexpected


def test_input_contracts() -> None:
    for name in LAYOUT_FILES:
        contract = RELEASED.get(name).contract
        assert contract.window == (-175.0, 250.0) and contract.spacing == (1.5, 1.5, 1.5)
        assert contract.crop_size == [96, 96, 96] and contract.orientation == "RAS"
        assert "CC BY-NC-ND" in RELEASED.get(name).license
