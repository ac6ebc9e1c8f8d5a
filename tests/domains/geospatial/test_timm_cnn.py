"""TimmCNN: shapes of a 13-band ResNet-18, tokens vs maps, a strict load of a plain timm state
dict (same numbers as timm), the U-Net fine-tuning path, export kwargs, clear errors."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from einops import rearrange

from domainfm.core.backbone import Backbone, build_backbone
from domainfm.core.jsonable import to_jsonable
from domainfm.core.registry import init_config
from domainfm.domains.geospatial.timm_cnn import TimmCNN, timm_to_backbone_keys
from domainfm.pretrained.report import CheckpointMismatchError, load_state_dict_with_report
from domainfm.tasks.finetune_module import FinetuneModule


@pytest.fixture(scope="module")
def cnn() -> TimmCNN:
    torch.manual_seed(0)
    return TimmCNN(model_name="resnet18", in_chans=13).eval()


def test_resnet18_13_bands_shapes(cnn: TimmCNN) -> None:
    x = torch.randn(2, 13, 64, 64)
    assert isinstance(cnn, Backbone)
    assert cnn.feature_channels == (64, 64, 128, 256, 512)
    assert cnn.feature_strides == (2, 4, 8, 16, 32)
    assert (cnn.embed_dim, cnn.patch_size, cnn.num_prefix_tokens) == (512, (32, 32), 0)
    with torch.no_grad():
        maps = cnn.forward_intermediates(x)
        assert [tuple(m.shape) for m in maps] == [
            (2, 64, 32, 32),
            (2, 64, 16, 16),
            (2, 128, 8, 8),
            (2, 256, 4, 4),
            (2, 512, 2, 2),
        ]
        assert [m.shape[1] for m in cnn.forward_intermediates(x, indices=2)] == [256, 512]
        assert [m.shape[1] for m in cnn.forward_intermediates(x, indices=[0, -1])] == [64, 512]
        assert cnn(x).shape == (2, 512)
        assert cnn(torch.randn(1, 13, 70, 65)).shape == (1, 512)  # pooling takes any size
    assert cnn.token_grid((64, 64)).shape == (2, 2)
    with pytest.raises(ValueError, match="does not divide"):
        cnn.forward_tokens(torch.randn(1, 13, 70, 64))
    with pytest.raises(ValueError, match="indices"):
        cnn.forward_intermediates(x, indices=6)


def test_tokens_are_the_last_map(cnn: TimmCNN) -> None:
    x = torch.randn(2, 13, 64, 96)
    with torch.no_grad():
        last = cnn.forward_intermediates(x, indices=1)[0]  # (2, 512, 2, 3)
        tokens, grid = cnn.forward_tokens(x)
        assert grid.shape == (2, 3) and tokens.shape == (2, 6, 512)
        torch.testing.assert_close(tokens, rearrange(last, "b d h w -> b (h w) d"))
        # token (i, j) of the grid is pixel (i, j) of the map, row-major
        torch.testing.assert_close(tokens[:, 1 * 3 + 2], last[:, :, 1, 2])
        keep = torch.tensor([[5, 0], [3, 4]])
        kept, _ = cnn.forward_tokens(x, keep_idx=keep)
        torch.testing.assert_close(kept, torch.stack([tokens[0, [5, 0]], tokens[1, [3, 4]]]))
        torch.testing.assert_close(cnn(x), cnn.pool_tokens(tokens))
        torch.testing.assert_close(cnn(x), last.mean(dim=(2, 3)))
    with pytest.raises(ValueError, match=r"keep_idx must index tokens 0\.\.5"):
        cnn.forward_tokens(x, keep_idx=torch.tensor([[6], [0]]))
    with pytest.raises(ValueError, match=r"keep_idx must be \(B, K\)"):
        cnn.forward_tokens(x, keep_idx=torch.tensor([0, 1]))


def test_plain_timm_state_dict_loads_strictly_with_the_same_numbers(cnn: TimmCNN) -> None:
    torch.manual_seed(1)
    plain = timm.create_model("resnet18", pretrained=False, in_chans=13).eval()
    state = plain.state_dict()
    mapped = timm_to_backbone_keys(state, cnn)
    assert "encoder.conv1.weight" in mapped and "fc.weight" not in mapped  # classifier dropped
    report = load_state_dict_with_report(cnn, mapped).check()
    assert report.ok and len(report.loaded) == len(cnn.state_dict()) == len(state) - 2
    x = torch.randn(2, 13, 64, 64)
    with torch.no_grad():
        maps = cnn.forward_intermediates(x)
        stem = plain.act1(plain.bn1(plain.conv1(x)))  # timm's first stage, by hand
        torch.testing.assert_close(maps[0], stem)
        torch.testing.assert_close(maps[-1], plain.forward_features(x))
        torch.testing.assert_close(cnn(x), plain.forward_head(plain.forward_features(x), True))
    # a key this model does not have is not dropped silently: the strict check names it
    extra = {**mapped, "encoder.layer5.0.conv1.weight": torch.zeros(1)}
    with pytest.raises(CheckpointMismatchError, match=r"encoder\.layer5\.0\.conv1\.weight"):
        load_state_dict_with_report(cnn, extra).check()
    missing = {k: v for k, v in mapped.items() if k != "encoder.layer4.1.bn2.weight"}
    with pytest.raises(CheckpointMismatchError, match=r"encoder\.layer4\.1\.bn2\.weight"):
        load_state_dict_with_report(cnn, missing).check()


def test_flattened_stage_names_of_a_convnext_map_back() -> None:
    """timm's feature wrapper renames ``stages.0`` to ``stages_0``; the mapping undoes it."""
    torch.manual_seed(2)
    plain = timm.create_model("convnext_atto", pretrained=False, in_chans=4).eval()
    cnn = TimmCNN(model_name="convnext_atto", in_chans=4).eval()
    mapped = timm_to_backbone_keys(plain.state_dict(), cnn)
    assert "encoder.stages_0.blocks.0.conv_dw.weight" in mapped
    load_state_dict_with_report(cnn, mapped).check()
    x = torch.randn(1, 4, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(cnn.forward_intermediates(x)[-1], plain.forward_features(x))


def test_out_indices_select_stages() -> None:
    cnn = TimmCNN(model_name="resnet18", in_chans=3, out_indices=[1, 2, 3])
    assert cnn.feature_channels == (64, 128, 256) and cnn.feature_strides == (4, 8, 16)
    assert cnn.patch_size == (16, 16) and cnn.embed_dim == 256
    with torch.no_grad():
        tokens, grid = cnn.forward_tokens(torch.randn(1, 3, 32, 32))
    assert grid.shape == (2, 2) and tokens.shape == (1, 4, 256)


def test_finetune_segmentation_uses_the_unet_decoder(cnn: TimmCNN) -> None:
    module = FinetuneModule(backbone=cnn, task="segmentation", num_classes=3, decoder_dim=16)
    assert module.map_indices == 5  # every map goes to the U-Net decoder
    module.eval()
    with torch.no_grad():
        assert module(torch.randn(2, 13, 64, 64)).shape == (2, 3, 64, 64)


def test_kwargs_are_json_and_rebuild_the_same_model() -> None:
    cnn = TimmCNN(
        model_name="resnet18", in_chans=6, out_indices=(1, 2), timm_kwargs={"drop_path_rate": 0.1}
    )
    config = json.loads(json.dumps(to_jsonable(init_config(cnn))))
    assert config == {
        "architecture": "timm_cnn",
        "kwargs": {
            "in_chans": 6,
            "model_name": "resnet18",
            "out_indices": [1, 2],
            "timm_kwargs": {"drop_path_rate": 0.1},
        },
    }
    rebuilt = build_backbone(config["architecture"], config["kwargs"])
    assert list(rebuilt.state_dict()) == list(cnn.state_dict())
    assert rebuilt.feature_channels == cnn.feature_channels


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="in_chans must be >= 1, got in_chans=0"):
        TimmCNN(model_name="resnet18", in_chans=0)
    with pytest.raises(ValueError, match="model_name='resnet_nope' is not a timm model"):
        TimmCNN(model_name="resnet_nope", in_chans=3)
    with pytest.raises(ValueError, match="timm cannot build model_name='resnet18'"):
        TimmCNN(model_name="resnet18", in_chans=3, out_indices=[9])
