"""Export → load_backbone round trips, key mismatch reports, and refusal of code-running pickles."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import domainfm
from domainfm.core.checkpoint_io import UnsafeCheckpointError, load_safetensors, save_safetensors
from domainfm.core.objectives.mae import MAE
from domainfm.core.vit import VisionTransformerND
from domainfm.pretrained import CheckpointMismatchError, load_state_dict_with_report
from domainfm.pretrained.export import export_checkpoint
from domainfm.tasks.pretrain_module import PretrainModule


def _module(pos_embed: str = "sincos") -> PretrainModule:
    torch.manual_seed(0)
    vit = VisionTransformerND(
        in_chans=1,
        spatial_dims=3,
        patch_size=8,
        embed_dim=32,
        depth=2,
        num_heads=4,
        pos_embed=pos_embed,
        grid_size=2,
    )  # type: ignore[arg-type]
    mae = MAE(
        embed_dim=32,
        in_chans=1,
        patch_size=(8, 8, 8),
        decoder_dim=32,
        decoder_depth=1,
        decoder_heads=4,
    )
    return PretrainModule(backbone=vit, objectives={"mae": mae}, domain="medical3d")


def _ckpt(tmp_path: Path, module: PretrainModule) -> Path:
    """A checkpoint as Lightning writes it: state_dict, counters and the module's additions."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "model.ckpt"
    checkpoint = {"state_dict": module.state_dict(), "global_step": 7, "epoch": 1}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return path


def test_export_roundtrip_bit_identical(tmp_path: Path) -> None:
    module = _module().eval()
    ckpt = _ckpt(tmp_path, module)
    out = export_checkpoint(ckpt, tmp_path / "export")
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "vit_nd" and config["domain"] == "medical3d"
    assert config["kwargs"]["embed_dim"] == 32 and config["patch_size"] == 8
    assert config["provenance"]["global_step"] == 7
    assert config["recipe"]["objectives"]["mae"]["class"] == "MAE"
    model, report = domainfm.load_backbone(out)
    assert report.ok and not report.missing and len(report.loaded) == len(model.state_dict())
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), module.backbone(x))
    # a training checkpoint loads the same way
    model2, _ = domainfm.load_backbone(ckpt)
    with torch.no_grad():
        assert torch.equal(model2.eval()(x), module.backbone(x))


def test_learned_positions_resampled_and_reported(tmp_path: Path) -> None:
    module = _module("learned")
    out = export_checkpoint(_ckpt(tmp_path, module), tmp_path / "export")
    model, report = domainfm.load_backbone(out, model_kwargs={"grid_size": 4})
    assert [r[0] for r in report.resampled] == ["pos_embed"]
    assert report.resampled[0][1:] == ((1, 9, 32), (1, 65, 32))
    assert model.pos_embed.shape == (1, 65, 32)


def _damaged_export(tmp_path: Path) -> Path:
    out = export_checkpoint(_ckpt(tmp_path, _module()), tmp_path / "export")
    state, meta = load_safetensors(out / "model.safetensors")
    state["blocks.0.attn.qkv_renamed.weight"] = state.pop("blocks.0.attn.qkv.weight")
    del state["norm.bias"]
    state["blocks.1.mlp.fc1.weight"] = state["blocks.1.mlp.fc1.weight"][:64]
    save_safetensors(out / "model.safetensors", state, metadata=meta)
    return out


def test_mismatched_keys_are_named_and_fail_loudly(tmp_path: Path) -> None:
    out = _damaged_export(tmp_path)
    with pytest.raises(CheckpointMismatchError) as info:
        domainfm.load_backbone(out)
    report = info.value.report
    assert set(report.missing) == {"blocks.0.attn.qkv.weight", "norm.bias"}
    assert report.unexpected == ["blocks.0.attn.qkv_renamed.weight"]
    assert report.mismatched == [("blocks.1.mlp.fc1.weight", (128, 32), (64, 32))]
    text = str(info.value)
    for key in ("blocks.0.attn.qkv.weight", "qkv_renamed", "norm.bias", "(128, 32)"):
        assert key in text
    assert report.as_dict()["ok"] is False


def test_allow_missing_patterns() -> None:
    vit = VisionTransformerND(
        in_chans=1, spatial_dims=2, patch_size=8, embed_dim=32, depth=1, num_heads=4
    )
    state = {k: v for k, v in vit.state_dict().items() if not k.startswith("norm.")}
    report = load_state_dict_with_report(vit, state, source="test")
    with pytest.raises(CheckpointMismatchError):
        load_state_dict_with_report(vit, state, source="test").check()
    report.check(allow_missing=("norm.*",))
    assert report.ok and sorted(report.allowed_missing) == ["norm.bias", "norm.weight"]


def test_inspect_cli_exit_codes(tmp_path: Path) -> None:
    good = export_checkpoint(_ckpt(tmp_path, _module()), tmp_path / "good")
    bad = _damaged_export(tmp_path / "b")
    run = [sys.executable, "-m", "domainfm.cli", "inspect"]
    ok = subprocess.run([*run, str(good)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "clean" in ok.stdout and '"architecture": "vit_nd"' in ok.stdout
    fail = subprocess.run([*run, str(bad)], capture_output=True, text=True, timeout=120)
    assert fail.returncode == 1
    assert "qkv_renamed" in fail.stdout and "mismatched" in fail.stdout
    absent = subprocess.run([*run, str(tmp_path / "nothing")], capture_output=True, text=True)
    assert absent.returncode == 2 and "does not exist" in absent.stderr


class _Exploit:
    def __reduce__(self) -> tuple:
        return (os.system, ("echo pwned > /dev/null",))


def test_code_executing_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.ckpt"
    with open(path, "wb") as handle:
        pickle.dump({"state_dict": {}, "payload": _Exploit()}, handle)
    with pytest.raises(UnsafeCheckpointError, match=r"refusing to load .*evil\.ckpt"):
        domainfm.load_backbone(path)
    proc = subprocess.run(
        [sys.executable, "-m", "domainfm.cli", "inspect", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "refusing to load" in proc.stderr
    # also through torch.save's zip format
    zipped = tmp_path / "evil_zip.ckpt"
    torch.save({"state_dict": {}, "payload": _Exploit()}, zipped)
    with pytest.raises(UnsafeCheckpointError):
        domainfm.load_backbone(zipped)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"architecture": "nope_arch"}, "unknown backbone architecture 'nope_arch'"),
        ({"kwargs": {"bogus": 3}}, "vit_nd cannot be built from"),
        ({"architecture": None}, "names no backbone"),
    ],
)
def test_a_config_naming_a_wrong_backbone_is_refused_naming_the_file(
    tmp_path: Path, edit: dict[str, object], message: str
) -> None:
    fixture = Path(__file__).resolve().parents[1] / "fixtures/legacy_0_1/export_vit3d"
    export = tmp_path / "export"
    shutil.copytree(fixture, export)
    config = json.loads((export / "config.json").read_text())
    if "kwargs" in edit:
        config["kwargs"].update(edit["kwargs"])  # type: ignore[arg-type]
    else:
        config.update(edit)
    (export / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=message) as info:
        domainfm.load_backbone(export)
    assert str(export) in str(info.value)
