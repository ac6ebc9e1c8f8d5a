from __future__ import annotations

import pytest
import torch
from monai.networks.nets.resnet import ResNet, ResNetFeatures, get_inplanes

from domainfm.core.backbone import BACKBONES, Backbone
from domainfm.core.registry import init_config
from domainfm.domains.medical3d.resnet3d import ResNet3D
from domainfm.pretrained.report import load_state_dict_with_report
from domainfm.tasks.heads.unet_decoder import UNetDecoder

W = 0.125  # widths 8, 16, 32, 64


def _net(**kw: object) -> ResNet3D:
    torch.manual_seed(0)
    return ResNet3D(widen_factor=W, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "strides"),
    [({"dilated": True}, (2, 4, 8, 8, 8)), ({"dilated": False}, (2, 4, 8, 16, 32))],
)
def test_contract_shapes_match_a_forward_pass(kw: dict[str, bool], strides: tuple[int]) -> None:
    net = _net(depth=10, **kw).eval()
    assert isinstance(net, Backbone)
    assert net.feature_channels == (8, 8, 16, 32, 64) and net.feature_strides == strides
    assert net.embed_dim == 64 and net.patch_size == (strides[-1],) * 3
    x = torch.randn(2, 1, 32, 64, 32)
    maps = net.forward_intermediates(x)
    for m, c, s in zip(maps, net.feature_channels, net.feature_strides, strict=True):
        assert m.shape == (2, c, 32 // s, 64 // s, 32 // s)
    tokens, grid = net.forward_tokens(x)
    assert grid.shape == tuple(n // strides[-1] for n in (32, 64, 32))
    assert torch.allclose(tokens, maps[-1].flatten(2).transpose(1, 2))
    assert torch.allclose(net(x), maps[-1].mean(dim=(2, 3, 4)), atol=1e-6)


def test_bottleneck_channels_and_stem_options() -> None:
    net = _net(depth=50, no_max_pool=True, conv1_t_stride=1, dilated=True)
    assert net.feature_channels == (8, 32, 64, 128, 256)
    assert net.feature_strides == (1, 1, 2, 2, 2)
    maps = net.eval().forward_intermediates(torch.randn(1, 1, 8, 8, 8))
    assert [tuple(m.shape[2:]) for m in maps] == [(8, 8, 8)] * 2 + [(4, 4, 4)] * 3


def test_intermediate_selection_and_refusals() -> None:
    net = _net(depth=18, shortcut_type="A", dilated=True).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    everything = net.forward_intermediates(x)
    last_two = net.forward_intermediates(x, indices=2)
    assert torch.equal(last_two[1], everything[4]) and torch.equal(last_two[0], everything[3])
    with pytest.raises(ValueError, match="keep_idx"):
        net.forward_tokens(x, keep_idx=torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(16, 20, 16\)"):
        net(torch.randn(1, 1, 16, 20, 16))
    for bad, match in (
        ({"depth": 11}, "depth"),
        ({"shortcut_type": "C"}, "shortcut_type"),
        ({"in_chans": 0}, "in_chans"),
        ({"widen_factor": 0.001}, "widen_factor"),
        ({"conv1_t_stride": 0}, "conv1_t_stride"),
    ):
        with pytest.raises(ValueError, match=match):
            ResNet3D(**bad)  # type: ignore[arg-type]


def test_registered_and_rebuilt_from_its_config() -> None:
    net = _net(depth=10, dilated=True)
    config = init_config(net)
    assert config["architecture"] == "resnet_3d" and BACKBONES.get("resnet_3d") is ResNet3D
    rebuilt = ResNet3D(**config["kwargs"])
    load_state_dict_with_report(rebuilt, net.state_dict()).check()
    x = torch.randn(1, 1, 16, 16, 16)
    torch.testing.assert_close(rebuilt.eval()(x), net.eval()(x))


def test_dilation_changes_no_parameter() -> None:
    plain, dilated = _net(depth=50), _net(depth=50, dilated=True)
    assert {k: v.shape for k, v in plain.state_dict().items()} == {
        k: v.shape for k, v in dilated.state_dict().items()
    }


def test_loads_monai_resnet_weights_and_matches_it() -> None:
    """MONAI's ``ResNet(feed_forward=False)`` keys under ``encoder.``; same maps as MONAI's
    ``ResNetFeatures.forward`` (here bottlenecks with a biased type-B shortcut)."""
    torch.manual_seed(3)
    ref = ResNet(
        "bottleneck", [3, 4, 6, 3], get_inplanes(), n_input_channels=2, conv1_t_stride=2,
        shortcut_type="B", bias_downsample=True, feed_forward=False, widen_factor=W,
    ).eval()  # fmt: skip
    net = ResNet3D(in_chans=2, depth=50, bias_downsample=True, widen_factor=W).eval()
    state = {f"encoder.{k}": v for k, v in ref.state_dict().items()}
    assert "encoder.layer1.0.downsample.0.bias" in state
    report = load_state_dict_with_report(net, state).check()
    assert len(report.loaded) == len(state)
    x = torch.randn(1, 2, 32, 32, 32)
    with torch.no_grad():
        for a, b in zip(net.forward_intermediates(x), ResNetFeatures.forward(ref, x), strict=True):  # type: ignore[arg-type]
            torch.testing.assert_close(a, b)
        torch.testing.assert_close(net(x), ref(x), rtol=1e-5, atol=1e-6)


def test_feeds_the_unet_decoder_and_trains() -> None:
    """The maps of the dilated layout (strides 2, 4, 8, 8, 8) fit the U-Net decoder the
    fine-tuning module builds, and gradients reach the stem."""
    net = _net(depth=10, dilated=True)
    decoder = UNetDecoder(
        spatial_dims=3,
        feature_channels=net.feature_channels,
        feature_strides=net.feature_strides,
        in_chans=1,
        num_classes=2,
        hidden=(8, 8, 8, 8, 8),
    )
    x = torch.randn(1, 1, 16, 16, 16)
    logits = decoder(net.forward_intermediates(x), x)
    assert logits.shape == (1, 2, 16, 16, 16)
    logits.mean().backward()
    assert net.encoder.conv1.weight.grad is not None
