"""Export folders carry a Hugging Face model card, and load offline from a Hugging Face cache
layout (snapshot folder or ``models--ORG--NAME`` folder)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from domainfm.core.objectives.mae import MAE
from domainfm.core.vit import VisionTransformerND
from domainfm.pretrained.export import CONFIG_NAME, WEIGHTS_NAME, export_checkpoint
from domainfm.pretrained.hf_cache import resolve_snapshot
from domainfm.pretrained.load import load_backbone
from domainfm.pretrained.model_card import MODEL_CARD_NAME
from domainfm.tasks.pretrain_module import PretrainModule


def _export(tmp_path: Path) -> tuple[Path, PretrainModule]:
    torch.manual_seed(0)
    vit = VisionTransformerND(
        in_chans=1, spatial_dims=3, patch_size=8, embed_dim=32, depth=1, num_heads=4
    )
    mae = MAE(decoder_dim=32, decoder_depth=1, decoder_heads=4)
    module = PretrainModule(backbone=vit, objectives={"mae": mae}, domain="medical3d")
    ckpt = tmp_path / "model.ckpt"
    checkpoint = {"state_dict": module.state_dict(), "global_step": 3, "epoch": 0}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, ckpt)
    return export_checkpoint(ckpt, tmp_path / "export"), module


def test_export_writes_a_model_card_with_hub_metadata_and_the_contract(tmp_path: Path) -> None:
    out, _ = _export(tmp_path)
    text = (out / MODEL_CARD_NAME).read_text()
    front = yaml.safe_load(text.split("---")[1])
    assert front["library_name"] == "domainfm"
    assert "medical3d" in front["tags"] and "vit_nd" in front["tags"]
    for section in ("## Input contract", "## Provenance", "## Licence", "## Intended use"):
        assert section in text
    assert "model.ckpt" in text  # provenance names the source checkpoint


def test_a_foreign_readme_in_the_export_folder_is_never_replaced(tmp_path: Path) -> None:
    (tmp_path / "export").mkdir()
    mine = tmp_path / "export" / MODEL_CARD_NAME
    mine.write_text("# my notes\n")
    with pytest.warns(UserWarning, match="not a domainfm model card"):
        _export(tmp_path)
    assert mine.read_text() == "# my notes\n"


def _hf_cache(tmp_path: Path, export: Path, *, ref: bool = True) -> Path:
    """The export laid out as huggingface_hub caches a repository (files as symlinks to
    blobs)."""
    repo = tmp_path / "hub" / "models--acme--ct-mae"
    snap = repo / "snapshots" / "0123abcd"
    blobs = repo / "blobs"
    snap.mkdir(parents=True)
    blobs.mkdir()
    for name in (CONFIG_NAME, WEIGHTS_NAME, MODEL_CARD_NAME):
        blob = blobs / f"blob-{name}"
        shutil.copy(export / name, blob)
        (snap / name).symlink_to(blob)
    if ref:
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text("0123abcd")
    return repo


@pytest.mark.parametrize("ref", [True, False])
def test_load_backbone_reads_a_hugging_face_cache_folder_offline(tmp_path: Path, ref: bool) -> None:
    out, module = _export(tmp_path)
    repo = _hf_cache(tmp_path, out, ref=ref)
    for where in (repo, repo / "snapshots" / "0123abcd"):
        model, report = load_backbone(where)
        assert report.ok and len(report.loaded) == len(module.backbone.state_dict())
        x = torch.randn(1, 1, 16, 16, 16)
        torch.testing.assert_close(model.eval()(x), module.backbone.eval()(x))


def test_a_cache_ref_to_a_missing_snapshot_is_named(tmp_path: Path) -> None:
    out, _ = _export(tmp_path)
    repo = _hf_cache(tmp_path, out)
    (repo / "refs" / "main").write_text("feedbeef")
    with pytest.raises(FileNotFoundError, match=r"feedbeef.*not in the cache"):
        resolve_snapshot(repo)
