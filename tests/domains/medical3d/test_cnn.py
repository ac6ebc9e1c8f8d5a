from __future__ import annotations

import pytest
import torch
from monai.networks.nets.segresnet_ds import SegResNetDS

from domainfm.core.backbone import BACKBONES, Backbone
from domainfm.core.registry import init_config
from domainfm.domains.medical3d.cnn import SegResNetEncoder3D
from domainfm.pretrained.report import CheckpointMismatchError, load_state_dict_with_report


def _cnn(**kw: object) -> SegResNetEncoder3D:
    torch.manual_seed(0)
    return SegResNetEncoder3D(in_chans=1, init_filters=8, **kw)  # type: ignore[arg-type]


def test_contract_shapes_match_a_forward_pass() -> None:
    cnn = _cnn().eval()
    assert isinstance(cnn, Backbone)
    assert cnn.feature_channels == (8, 16, 32, 64)
    assert cnn.feature_strides == (1, 2, 4, 8)
    assert cnn.embed_dim == 64 and cnn.patch_size == (8, 8, 8) and cnn.num_prefix_tokens == 0
    x = torch.randn(2, 1, 16, 32, 24)
    maps = cnn.forward_intermediates(x, indices=len(cnn.feature_channels))
    for m, c, s in zip(maps, cnn.feature_channels, cnn.feature_strides, strict=True):
        assert m.shape == (2, c, 16 // s, 32 // s, 24 // s)
    grid = cnn.token_grid(x.shape[2:])
    assert grid.shape == (2, 4, 3)
    tokens, grid2 = cnn.forward_tokens(x)
    assert grid2 == grid and tokens.shape == (2, 24, 64)
    # tokens are the last map flattened in C order (last axis fastest)
    assert torch.allclose(tokens, maps[-1].flatten(2).transpose(1, 2))
    assert torch.allclose(tokens[:, 1], maps[-1][:, :, 0, 0, 1])
    assert torch.allclose(cnn(x), maps[-1].mean(dim=(2, 3, 4)), atol=1e-6)
    assert torch.allclose(cnn.pool_tokens(tokens), cnn(x), atol=1e-6)


def test_intermediate_selection() -> None:
    cnn = _cnn(blocks_down=(1, 1, 1)).eval()
    x = torch.randn(1, 1, 8, 8, 8)
    everything = cnn.forward_intermediates(x)
    assert [m.shape[1] for m in everything] == [8, 16, 32]
    last_two = cnn.forward_intermediates(x, indices=2)
    assert [m.shape[1] for m in last_two] == [16, 32]
    assert torch.equal(last_two[1], everything[2])
    picked = cnn.forward_intermediates(x, indices=[0, 2])
    assert torch.equal(picked[0], everything[0]) and torch.equal(picked[1], everything[2])
    for bad in (0, 4, [3]):
        with pytest.raises(ValueError, match="indices"):
            cnn.forward_intermediates(x, indices=bad)


def test_refuses_keep_idx_bad_shapes_and_bad_arguments() -> None:
    cnn = _cnn()
    x = torch.randn(1, 1, 16, 16, 16)
    with pytest.raises(ValueError, match="keep_idx"):
        cnn.forward_tokens(x, keep_idx=torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(16, 20, 16\)"):
        cnn(torch.randn(1, 1, 16, 20, 16))
    with pytest.raises(ValueError, match="3 spatial dims"):
        cnn(torch.randn(1, 1, 16, 16))
    with pytest.raises(ValueError, match="blocks_down"):
        SegResNetEncoder3D(in_chans=1, blocks_down=())
    with pytest.raises(ValueError, match="init_filters"):
        SegResNetEncoder3D(in_chans=1, init_filters=0)


def test_registered_and_rebuilt_from_its_config() -> None:
    cnn = _cnn(blocks_down=(1, 2), norm="instance")
    config = init_config(cnn)
    assert config["architecture"] == "segresnet_encoder_3d"
    assert BACKBONES.get("segresnet_encoder_3d") is SegResNetEncoder3D
    rebuilt = SegResNetEncoder3D(**config["kwargs"])
    load_state_dict_with_report(rebuilt, cnn.state_dict()).check()


def test_loads_monai_segresnetds_encoder_weights_strictly() -> None:
    """``SegResNetDS``'s ``encoder.*`` keys are this adapter's keys, unchanged."""
    torch.manual_seed(1)
    net = SegResNetDS(init_filters=8, in_channels=1, out_channels=3, blocks_down=(1, 2, 2, 4))
    with torch.no_grad():  # non-default BatchNorm statistics, so they must load too
        for name, buf in net.named_buffers():
            if name.endswith("running_var"):
                buf.uniform_(0.5, 2.0)
            elif name.endswith("running_mean"):
                buf.normal_()
    net.eval()
    cnn = _cnn().eval()
    x = torch.randn(1, 1, 16, 16, 16)
    assert not torch.allclose(cnn(x), net.encoder(x)[-1].mean(dim=(2, 3, 4)))

    state = net.state_dict()
    encoder_state = {k: v for k, v in state.items() if k.startswith("encoder.")}
    assert len(encoder_state) < len(state)  # the decoder (up_layers.*) is left out
    report = load_state_dict_with_report(cnn, encoder_state, source="SegResNetDS").check()
    assert len(report.loaded) == len(encoder_state)

    with torch.no_grad():
        ours = cnn.forward_intermediates(x)
        theirs = net.encoder(x)
    assert len(ours) == len(theirs) == 4
    for a, b in zip(ours, theirs, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_monai_weights_of_another_width_do_not_load() -> None:
    net = SegResNetDS(init_filters=16, in_channels=1, out_channels=2)
    state = {k: v for k, v in net.state_dict().items() if k.startswith("encoder.")}
    with pytest.raises(CheckpointMismatchError):
        load_state_dict_with_report(_cnn(), state).check()
