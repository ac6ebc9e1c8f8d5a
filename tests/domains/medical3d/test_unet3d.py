from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from domainfm.core.backbone import BACKBONES, Backbone
from domainfm.core.registry import init_config
from domainfm.domains.medical3d.unet3d import BatchStatsNorm3d, UNet3DEncoder
from domainfm.pretrained.report import load_state_dict_with_report


def _net(**kw: object) -> UNet3DEncoder:
    torch.manual_seed(0)
    return UNet3DEncoder(base_channels=4, **kw)  # type: ignore[arg-type]


def test_contract_shapes_match_a_forward_pass() -> None:
    net = _net().eval()
    assert isinstance(net, Backbone)
    assert net.feature_channels == (8, 16, 32, 64) and net.feature_strides == (1, 2, 4, 8)
    assert net.embed_dim == 64 and net.patch_size == (8, 8, 8) and net.num_prefix_tokens == 0
    x = torch.randn(2, 1, 16, 32, 8)
    maps = net.forward_intermediates(x)
    for m, c, s in zip(maps, net.feature_channels, net.feature_strides, strict=True):
        assert m.shape == (2, c, 16 // s, 32 // s, 8 // s)
    tokens, grid = net.forward_tokens(x)
    assert grid.shape == (2, 4, 1) and tokens.shape == (2, 8, 64)
    assert torch.allclose(net(x), maps[-1].mean(dim=(2, 3, 4)), atol=1e-6)
    with pytest.raises(ValueError, match="keep_idx"):
        net.forward_tokens(x, keep_idx=torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(16, 12, 8\)"):
        net(torch.randn(1, 1, 16, 12, 8))


def test_first_level_equals_an_independent_computation() -> None:
    """Level 0 of the paper's U-Net: (3x3x3 conv with bias → BatchNorm over the batch →
    ReLU) twice, written with plain tensor ops."""
    net = _net().eval()
    unit0, unit1 = net.down_tr64.ops
    x = torch.randn(3, 1, 8, 8, 8)

    def unit(h: torch.Tensor, conv: torch.nn.Conv3d, bn: torch.nn.BatchNorm3d) -> torch.Tensor:
        h = F.conv3d(h, conv.weight, conv.bias, padding=1)
        mean = h.mean(dim=(0, 2, 3, 4), keepdim=True)
        var = h.var(dim=(0, 2, 3, 4), unbiased=False, keepdim=True)
        h = (h - mean) / torch.sqrt(var + bn.eps) * bn.weight.view(1, -1, 1, 1, 1)
        return torch.relu(h + bn.bias.view(1, -1, 1, 1, 1))

    with torch.no_grad():
        ref = unit(unit(x, unit0.conv1, unit0.bn1), unit1.conv1, unit1.bn1)
        ours = net.forward_intermediates(x, indices=[0])[0]
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)


def test_batch_statistics_in_eval_mode_as_upstream() -> None:
    stats, standard = _net(), _net(batch_stats_in_eval=False)
    standard.load_state_dict(stats.state_dict())
    assert isinstance(stats.down_tr64.ops[0].bn1, BatchStatsNorm3d)
    assert type(standard.down_tr64.ops[0].bn1) is torch.nn.BatchNorm3d
    x = torch.randn(2, 1, 8, 8, 8)
    with torch.no_grad():
        train_out = stats.train()(x)
        eval_out = stats.eval()(x)
        standard_eval = standard.eval()(x)
    torch.testing.assert_close(eval_out, train_out)  # batch statistics either way
    assert not torch.allclose(standard_eval, eval_out, atol=1e-3)  # running statistics


def test_activations_and_their_keys() -> None:
    prelu = _net(act="prelu")
    assert "down_tr64.ops.0.activation.weight" in prelu.state_dict()
    assert not any("activation" in k for k in _net(act="elu").state_dict())
    for bad, match in (({"act": "gelu"}, "act"), ({"base_channels": 0}, "base_channels")):
        with pytest.raises(ValueError, match=match):
            UNet3DEncoder(**bad)  # type: ignore[arg-type]


def test_registered_and_rebuilt_from_its_config() -> None:
    net = _net(act="prelu")
    config = init_config(net)
    assert config["architecture"] == "unet3d_encoder"
    assert BACKBONES.get("unet3d_encoder") is UNet3DEncoder
    rebuilt = UNet3DEncoder(**config["kwargs"])
    load_state_dict_with_report(rebuilt, net.state_dict()).check()
