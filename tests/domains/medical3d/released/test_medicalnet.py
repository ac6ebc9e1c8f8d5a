"""Released MedicalNet 3D ResNets load strictly into ResNet3D and compute MedicalNet's trunk.

No file can be downloaded here: each test writes a checkpoint in the release's layout
(``{"state_dict": {"module.<key>"}}``) from MONAI's own ``ResNet`` (whose keys are
MedicalNet's: MONAI loads the real files strictly into it), full-size on the meta device for
key names and shapes, shrunk (``widen_factor``) on the CPU for numbers. Reference outputs come
from MONAI's ResNet (plain layout) and from a functional forward written from MedicalNet's
``models/resnet.py`` (dilated layout, the releases').
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets.resnet import ResNet, ResNetFeatures, get_inplanes
from torch import Tensor

from domainfm.domains.medical3d.released.medicalnet import SHORTCUT
from domainfm.domains.medical3d.resnet3d import ResNet3D
from domainfm.pretrained import CheckpointMismatchError, load_released
from domainfm.pretrained.registry import RELEASED, mapped_release_state
from domainfm.pretrained.report import compare_state_dict

BLOCKS = {  # MedicalNet models/resnet.py: resnet10 ... resnet200
    10: ("basic", [1, 1, 1, 1]),
    18: ("basic", [2, 2, 2, 2]),
    34: ("basic", [3, 4, 6, 3]),
    50: ("bottleneck", [3, 4, 6, 3]),
    101: ("bottleneck", [3, 4, 23, 3]),
    152: ("bottleneck", [3, 8, 36, 3]),
    200: ("bottleneck", [3, 24, 36, 3]),
}
SMALL = 0.125  # widen_factor of the numeric tests: widths 8, 16, 32, 64


def _monai_resnet(depth: int, *, widen: float = 1.0) -> ResNet:
    """MONAI's ResNet in MedicalNet's settings (one input channel, stride-2 stem, no fc)."""
    block, layers = BLOCKS[depth]
    return ResNet(
        block,
        layers,
        get_inplanes(),
        n_input_channels=1,
        conv1_t_stride=2,
        shortcut_type=SHORTCUT[depth],
        bias_downsample=False,
        feed_forward=False,
        widen_factor=widen,
    )


def _release_file(depth: int, device: str) -> tuple[Any, str]:
    """``resnet_{depth}.pth`` in its real nesting and shapes."""
    with torch.device(device):
        state = _monai_resnet(depth).state_dict()
    return {"state_dict": {f"module.{k}": v for k, v in state.items()}}, ".pth"


LAYOUT_FILES: dict[str, Callable[[str], tuple[Any, str]]] = {
    f"medicalnet-resnet{depth}": partial(_release_file, depth) for depth in BLOCKS
}


@pytest.mark.parametrize("depth", sorted(BLOCKS))
def test_full_size_layout_maps_strictly(depth: int) -> None:
    name = f"medicalnet-resnet{depth}"
    content, _ = LAYOUT_FILES[name]("meta")
    raw = content["state_dict"]
    assert tuple(raw["module.conv1.weight"].shape) == (64, 1, 7, 7, 7)
    expansion = 1 if depth < 50 else 4
    assert tuple(raw["module.layer4.0.bn1.weight"].shape) == (512,)
    assert tuple(raw[f"module.layer4.{BLOCKS[depth][1][3] - 1}.bn2.weight"].shape) == (512,)
    if SHORTCUT[depth] == "B":  # bias-free 1x1x1 conv + BN
        assert tuple(raw["module.layer4.0.downsample.0.weight"].shape) == (
            512 * expansion,
            256 * expansion,
            1,
            1,
            1,
        )
        assert "module.layer4.0.downsample.0.bias" not in raw
    else:  # type A: no shortcut parameters at all
        assert not any("downsample" in k for k in raw)
    entry = RELEASED.get(name)
    state, dropped = mapped_release_state(entry, content, path=f"resnet_{depth}.pth")
    with torch.device("meta"):
        model = ResNet3D(**entry.kwargs)
    report = compare_state_dict(model, state, source=name)
    assert report.ok and not report.unexpected and not dropped
    assert len(report.loaded) == len(raw)
    assert model.feature_strides == (2, 4, 8, 8, 8)  # dilated layer3/4
    assert model.embed_dim == 512 * expansion


def _bn(x: Tensor, s: dict[str, Tensor], p: str) -> Tensor:
    return F.batch_norm(
        x, s[f"{p}.running_mean"], s[f"{p}.running_var"], s[f"{p}.weight"], s[f"{p}.bias"],
        False, 0.0, 1e-5,
    )  # fmt: skip


def _medicalnet_forward(s: dict[str, Tensor], x: Tensor, depth: int) -> list[Tensor]:
    """MedicalNet's trunk (models/resnet.py, eval mode) as functional ops on a state dict
    without ``module.``: stem, layer1 (stride 1), layer2 (stride 2), layer3 / layer4 (stride
    1, dilation 2 / 4); type-A shortcut = zero-padded identity, type-B = 1x1x1 conv + BN."""
    block, layers = BLOCKS[depth]
    x = F.relu(_bn(F.conv3d(x, s["conv1.weight"], stride=2, padding=3), s, "bn1"))
    maps = [x]
    x = F.max_pool3d(x, kernel_size=3, stride=2, padding=1)
    for li, (n, stride, dil) in enumerate(zip(layers, (1, 2, 1, 1), (1, 1, 2, 4), strict=True)):
        for b in range(n):
            p = f"layer{li + 1}.{b}"
            st = stride if b == 0 else 1
            if block == "bottleneck":
                out = F.relu(_bn(F.conv3d(x, s[f"{p}.conv1.weight"]), s, f"{p}.bn1"))
                out = F.conv3d(out, s[f"{p}.conv2.weight"], stride=st, padding=dil, dilation=dil)
                out = F.relu(_bn(out, s, f"{p}.bn2"))
                out = _bn(F.conv3d(out, s[f"{p}.conv3.weight"]), s, f"{p}.bn3")
            else:
                out = F.conv3d(x, s[f"{p}.conv1.weight"], stride=st, padding=dil, dilation=dil)
                out = F.relu(_bn(out, s, f"{p}.bn1"))
                out = F.conv3d(out, s[f"{p}.conv2.weight"], padding=dil, dilation=dil)
                out = _bn(out, s, f"{p}.bn2")
            if f"{p}.downsample.0.weight" in s:
                res = _bn(F.conv3d(x, s[f"{p}.downsample.0.weight"], stride=st), s,
                          f"{p}.downsample.1")  # fmt: skip
            elif out.shape[1] != x.shape[1] or st != 1:
                res = F.avg_pool3d(x, kernel_size=1, stride=st)
                pad = out.shape[1] - res.shape[1]
                res = torch.cat([res, res.new_zeros(res.shape[0], pad, *res.shape[2:])], dim=1)
            else:
                res = x
            x = F.relu(out + res)
        maps.append(x)
    return maps


def _seeded(depth: int) -> ResNet:
    torch.manual_seed(depth)
    net = _monai_resnet(depth, widen=SMALL)
    with torch.no_grad():  # non-trivial BN statistics, so eval-mode BN is exercised
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()


@pytest.mark.parametrize("depth", [10, 18, 50])
def test_release_computes_medicalnets_dilated_trunk(tmp_path: Path, depth: int) -> None:
    """A shrunk file in the release's nesting (with a fine-tuned ``conv_seg`` head, dropped)
    loads through the registry and equals MedicalNet's forward written from its code."""
    net = _seeded(depth)
    state = net.state_dict()
    head = {  # models/resnet.py conv_seg: ConvTranspose3d, BN, ReLU, Conv3d, BN, ReLU, Conv3d
        "module.conv_seg.0.weight": torch.zeros(net.layer4[0].bn1.num_features, 32, 2, 2, 2),
        "module.conv_seg.0.bias": torch.zeros(32),
        "module.conv_seg.1.weight": torch.ones(32),
        "module.conv_seg.3.weight": torch.zeros(32, 32, 3, 3, 3),
        "module.conv_seg.6.weight": torch.zeros(2, 32, 1, 1, 1),
    }
    file = {"state_dict": {**{f"module.{k}": v for k, v in state.items()}, **head}}
    torch.save(file, tmp_path / f"resnet_{depth}.pth")
    model, report = load_released(
        f"medicalnet-resnet{depth}", tmp_path / f"resnet_{depth}.pth",
        model_kwargs={"widen_factor": SMALL},
    )  # fmt: skip
    assert report.ok and len(report.loaded) == len(state)
    assert report.dropped == sorted("encoder." + k.removeprefix("module.") for k in head)
    x = torch.randn(2, 1, 32, 24, 16)
    with torch.no_grad():
        ours = model.eval().forward_intermediates(x)
        ref = _medicalnet_forward(state, x, depth)
    assert [m.shape[2:] for m in ours] == [(16, 12, 8), (8, 6, 4), (4, 3, 2), (4, 3, 2), (4, 3, 2)]
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model(x), ref[-1].mean(dim=(2, 3, 4)), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("depth", [10, 18])
def test_plain_layout_equals_monai_resnet(tmp_path: Path, depth: int) -> None:
    """Reference equality with MONAI: ``dilated=False`` is MONAI's ResNet, map for map
    (``ResNetFeatures.forward``) and pooled (``ResNet(feed_forward=False)``)."""
    net = _seeded(depth)
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}},
               tmp_path / "plain.pth")  # fmt: skip
    model, report = load_released(
        f"medicalnet-resnet{depth}", tmp_path / "plain.pth",
        model_kwargs={"widen_factor": SMALL, "dilated": False},
    )  # fmt: skip
    assert report.ok
    x = torch.randn(2, 1, 32, 32, 32)
    with torch.no_grad():
        ours = model.eval().forward_intermediates(x)
        ref = ResNetFeatures.forward(net, x)  # type: ignore[arg-type]
        pooled = net(x)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(model(x), pooled, rtol=1e-5, atol=1e-6)


def test_file_without_batchnorm_counters_loads_and_says_so(tmp_path: Path) -> None:
    net = _seeded(10)
    state = {f"module.{k}": v for k, v in net.state_dict().items() if "num_batches" not in k}
    torch.save({"state_dict": state}, tmp_path / "resnet_10.pth")
    _, report = load_released(
        "medicalnet-resnet10", tmp_path / "resnet_10.pth", model_kwargs={"widen_factor": SMALL}
    )
    assert report.ok and report.allowed_missing
    assert all(k.endswith(".num_batches_tracked") for k in report.allowed_missing)


def test_wrong_layout_fails_naming_keys_and_file(tmp_path: Path) -> None:
    small = {"widen_factor": SMALL}
    # a shortcut-A ResNet-18 file given as ResNet-10 (shortcut B): downsample keys missing
    torch.save({"state_dict": {f"module.{k}": v for k, v in _seeded(18).state_dict().items()}},
               tmp_path / "resnet_18.pth")  # fmt: skip
    with pytest.raises(CheckpointMismatchError) as info:
        load_released("medicalnet-resnet10", tmp_path / "resnet_18.pth", model_kwargs=small)
    report = info.value.report
    assert "encoder.layer2.0.downsample.0.weight" in report.missing
    assert "encoder.layer1.1.conv1.weight" in report.unexpected
    # a renamed key is named, not skipped
    state = {f"module.{k}": v for k, v in _seeded(10).state_dict().items()}
    state["module.layer3.0.conv_1.weight"] = state.pop("module.layer3.0.conv1.weight")
    torch.save({"state_dict": state}, tmp_path / "renamed.pth")
    with pytest.raises(CheckpointMismatchError, match=r"layer3\.0\.conv_1\.weight"):
        load_released("medicalnet-resnet10", tmp_path / "renamed.pth", model_kwargs=small)
    # a bare state dict (no 'state_dict' nesting) is refused naming the file and the layout
    torch.save(dict(state), tmp_path / "bare.pth")
    with pytest.raises(ValueError, match=r"bare\.pth does not have the key layout of "):
        load_released("medicalnet-resnet10", tmp_path / "bare.pth", model_kwargs=small)


def test_entries_record_medicalnets_settings_and_input() -> None:
    for depth, shortcut in SHORTCUT.items():
        entry = RELEASED.get(f"medicalnet-resnet{depth}")
        assert entry.kwargs["shortcut_type"] == shortcut and entry.kwargs["dilated"] is True
        assert entry.kwargs["bias_downsample"] is False and entry.kwargs["conv1_t_stride"] == 2
        assert entry.input["normalization"]["type"] == "zscore_nonzero"
        assert "TencentMedicalNet/MedicalNet-Resnet" in entry.reference
    assert [d for d, s in SHORTCUT.items() if s == "A"] == [18, 34]
