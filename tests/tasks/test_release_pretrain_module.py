"""Continued pretraining from a release: encoder and shipped MAE decoder loaded strictly and
reported; a release without a pretext head starts the given objectives fresh, said so."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from domainfm.core.objectives.mae import MAE
from domainfm.core.vit import VisionTransformerND
from domainfm.pretrained.registry import RELEASED, PretextHead, released_checkpoint
from domainfm.pretrained.report import CheckpointMismatchError
from domainfm.tasks.release_pretrain_module import ReleasePretrainModule

VIT = {"in_chans": 2, "spatial_dims": 2, "patch_size": 4, "embed_dim": 16, "depth": 1}
VIT |= {"num_heads": 2}
HEAD = {"decoder_dim": 8, "decoder_depth": 1, "decoder_heads": 2}
INPUT = {"kind": "raster", "bands": ["A", "B"], "channels": ["A", "B"]}


def _encoder(content: Mapping[str, Any]) -> dict[str, Tensor]:
    return dict(content["model"])


def _decoder(content: Mapping[str, Any]) -> dict[str, Tensor]:
    return {k.removeprefix("dec."): v for k, v in content["decoder"].items()}


@pytest.fixture
def releases() -> Iterator[None]:
    """A toy MAE release with its decoder, and the same encoder released without one."""
    released_checkpoint(
        name="toy-mae-with-decoder",
        architecture="vit_nd",
        kwargs=VIT,
        source_layout="{'model': encoder, 'decoder': {'dec.<MAE key>'}}",
        input=INPUT,
        license="CC-BY-4.0",
        drop=(),
        pretext=PretextHead(objective="mae", kwargs=HEAD, map_keys=_decoder),
    )(_encoder)
    released_checkpoint(
        name="toy-encoder-only",
        architecture="vit_nd",
        kwargs=VIT,
        source_layout="{'model': encoder}",
        input=INPUT,
        license="MIT",
    )(_encoder)
    yield
    RELEASED.remove("toy-mae-with-decoder")
    RELEASED.remove("toy-encoder-only")


def _release_file(tmp_path: Path) -> tuple[Path, VisionTransformerND, MAE]:
    torch.manual_seed(0)
    vit = VisionTransformerND(**VIT)  # type: ignore[arg-type]
    mae = MAE(**HEAD)
    mae.bind_backbone(vit)
    with torch.no_grad():
        for p in mae.parameters():
            p.normal_()  # not an initialization a fresh decoder could reproduce
    path = tmp_path / "toy.pth"
    decoder = {f"dec.{k}": v for k, v in mae.state_dict().items()}
    torch.save({"model": vit.state_dict(), "decoder": decoder}, path)
    return path, vit, mae


def test_encoder_and_decoder_continue_from_the_release(releases: None, tmp_path: Path) -> None:
    path, vit, mae = _release_file(tmp_path)
    module = ReleasePretrainModule(released="toy-mae-with-decoder", pretrained=str(path))
    assert set(module.objectives) == {"mae"}
    for key, value in mae.state_dict().items():
        torch.testing.assert_close(module.objectives["mae"].state_dict()[key], value)
    for key, value in vit.state_dict().items():
        torch.testing.assert_close(module.backbone.state_dict()[key], value)
    meta = module.export_metadata()
    assert meta["provenance"]["initialized_from"]["released"] == "toy-mae-with-decoder"
    assert meta["provenance"]["initialized_from"]["pretext_head"] == "loaded"
    assert meta["license"] == "CC-BY-4.0" and meta["input"]["bands"] == ["A", "B"]


def test_a_decoder_that_does_not_fit_is_refused_naming_keys(releases: None, tmp_path: Path) -> None:
    path, _, _ = _release_file(tmp_path)
    content = torch.load(path, weights_only=True)
    del content["decoder"]["dec.decoder_pred.bias"]
    torch.save(content, path)
    with pytest.raises(CheckpointMismatchError, match=r"decoder_pred\.bias"):
        ReleasePretrainModule(released="toy-mae-with-decoder", pretrained=str(path))


def test_a_release_without_decoder_starts_the_objective_fresh_and_says_so(
    releases: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, vit, _ = _release_file(tmp_path)
    with pytest.raises(ValueError, match=r"ships no pretext head.*give objectives"):
        ReleasePretrainModule(released="toy-encoder-only", pretrained=str(path))
    module = ReleasePretrainModule(
        released="toy-encoder-only", pretrained=str(path), objectives={"mae": MAE(**HEAD)}
    )
    assert "objectives ['mae'] start fresh" in capsys.readouterr().out
    assert module.export_metadata()["provenance"]["initialized_from"]["pretext_head"] == "fresh"
    torch.testing.assert_close(
        module.backbone.state_dict()["blocks.0.attn.qkv.weight"],
        vit.state_dict()["blocks.0.attn.qkv.weight"],
    )
