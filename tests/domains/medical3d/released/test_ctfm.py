"""Released CT-FM (flat safetensors of lighter-zoo's MONAI ``SegResEncoder`` / ``SegResNetDS``)
load strictly into SegResNetEncoder3D and compute MONAI's encoder features.

No file can be downloaded here: each test writes ``model.safetensors`` as huggingface_hub's
``PyTorchModelHubMixin`` does (the flat ``state_dict()``), full-size on the meta device for
names and shapes, shrunk on the CPU (saved with safetensors) for numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from monai.networks.nets import SegResNet, SegResNetDS
from monai.networks.nets.segresnet_ds import SegResEncoder
from safetensors.torch import save_file
from torch import nn

from domainfm.domains.medical3d.cnn import SegResNetEncoder3D
from domainfm.pretrained import CheckpointMismatchError, load_released
from domainfm.pretrained.registry import RELEASED, mapped_release_state
from domainfm.pretrained.report import compare_state_dict

CONFIG = {"spatial_dims": 3, "in_channels": 1, "init_filters": 32, "blocks_down": (1, 2, 2, 4, 4)}
"""The Hugging Face ``config.json`` of ct_fm_feature_extractor / ct_fm_segresnet."""
SMALL = {"init_filters": 8, "blocks_down": [1, 2, 1]}


def _encoder_release(device: str) -> tuple[Any, str]:
    with torch.device(device):
        return SegResEncoder(**CONFIG).state_dict(), ".safetensors"


def _segresnet_release(device: str) -> tuple[Any, str]:
    with torch.device(device):
        return SegResNetDS(**CONFIG).state_dict(), ".safetensors"


LAYOUT_FILES: dict[str, Callable[[str], tuple[Any, str]]] = {
    "ct-fm-segresnet-encoder": _encoder_release,
    "ct-fm-segresnet": _segresnet_release,
}


@pytest.mark.parametrize("name", sorted(LAYOUT_FILES))
def test_full_size_layout_maps_strictly(name: str) -> None:
    content, suffix = LAYOUT_FILES[name]("meta")
    prefix = "encoder." if name == "ct-fm-segresnet" else ""
    assert suffix == ".safetensors"
    assert tuple(content[f"{prefix}conv_init.weight"].shape) == (32, 1, 3, 3, 3)
    assert tuple(content[f"{prefix}layers.3.downsample.weight"].shape) == (512, 256, 3, 3, 3)
    assert tuple(content[f"{prefix}layers.4.blocks.3.norm2.running_var"].shape) == (512,)
    entry = RELEASED.get(name)
    state, dropped = mapped_release_state(entry, content, path=f"{name}/model.safetensors")
    with torch.device("meta"):
        model = SegResNetEncoder3D(**entry.kwargs)
    report = compare_state_dict(model, state, source=name)
    assert report.ok and not report.unexpected
    assert len(report.loaded) == sum(not k.startswith("up_layers.") for k in content)
    assert all(k.startswith("up_layers.") for k in dropped) and bool(dropped) == bool(prefix)
    assert model.feature_channels == (32, 64, 128, 256, 512) and model.embed_dim == 512


def _randomize_norms(module: nn.Module) -> None:
    """BatchNorm statistics and affine away from identity, so eval-mode features test them."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)


def _same_features(model: nn.Module, encoder: SegResEncoder) -> None:
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        ours = model.eval().forward_intermediates(x, indices=3)
        theirs = encoder.eval()(x)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b)


def test_feature_extractor_matches_monai_segresencoder(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ref = SegResEncoder(spatial_dims=3, in_channels=1, **SMALL)
    _randomize_norms(ref)
    save_file(ref.state_dict(), tmp_path / "model.safetensors")
    model, report = load_released(
        "ct-fm-segresnet-encoder", tmp_path / "model.safetensors", model_kwargs=SMALL
    )
    assert report.ok and not report.unexpected and not report.dropped
    assert len(report.loaded) == len(ref.state_dict())  # running statistics included
    _same_features(model, ref)


def test_segresnet_drops_decoder_and_matches_encoder(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ref = SegResNetDS(spatial_dims=3, in_channels=1, out_channels=2, **SMALL)
    _randomize_norms(ref)
    save_file(ref.state_dict(), tmp_path / "model.safetensors")
    model, report = load_released(
        "ct-fm-segresnet", tmp_path / "model.safetensors", model_kwargs=SMALL
    )
    assert report.ok and report.dropped
    assert sorted(report.dropped) == sorted(k for k in ref.state_dict() if k.startswith("up_"))
    _same_features(model, ref.encoder)


def test_wrong_layouts_fail_naming_keys(tmp_path: Path) -> None:
    torch.manual_seed(0)
    segresnet = SegResNet(init_filters=8, blocks_down=(1, 2, 1), blocks_up=(1, 1))  # SuPreM's
    save_file(segresnet.state_dict(), tmp_path / "segresnet.safetensors")
    with pytest.raises(CheckpointMismatchError, match=r"encoder\.conv_init\.weight") as info:
        load_released(
            "ct-fm-segresnet-encoder", tmp_path / "segresnet.safetensors", model_kwargs=SMALL
        )
    assert "encoder.convInit.conv.weight" in info.value.report.unexpected
    assert not info.value.report.loaded

    ds = SegResNetDS(spatial_dims=3, in_channels=1, **SMALL)  # a SegResNetDS as the encoder
    save_file(ds.state_dict(), tmp_path / "ds.safetensors")
    with pytest.raises(CheckpointMismatchError, match=r"encoder\.encoder\.conv_init") as info:
        load_released("ct-fm-segresnet-encoder", tmp_path / "ds.safetensors", model_kwargs=SMALL)
    assert "encoder.conv_init.weight" in info.value.report.missing


def test_input_contract() -> None:
    contract = RELEASED.get("ct-fm-segresnet-encoder").contract
    assert contract.orientation == "SPL" and contract.spacing == (3.0, 1.0, 1.0)
    assert contract.window == (-1024.0, 2048.0) and contract.crop_size == [32, 128, 128]
    assert contract.normalize(torch.tensor([[-2000.0, 512.0, 3000.0]])).tolist() == [
        [0.0, 0.5, 1.0]
    ]
