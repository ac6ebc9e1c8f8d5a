"""A backbone built from a user's file (an export's ``config.json``, a checkpoint's metadata, a
release with new kwargs) is sized before it is allocated: an absurd width or depth is refused
with the estimate, naming the file, and nothing real is built; a sane one builds exactly as
before (same bytes, same weights)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn.modules.module import register_module_parameter_registration_hook

import domainfm
from domainfm.core.backbone import build_backbone, estimate_module_bytes, module_bytes
from domainfm.core.size_guard import LIMIT_ENV, AllocationTooLarge
from domainfm.core.vit import VisionTransformerND
from domainfm.pretrained.registry import load_released

EXPORT = Path(__file__).resolve().parents[1] / "fixtures/legacy_0_1/export_vit3d"
SMALL = {"in_chans": 1, "spatial_dims": 3, "patch_size": 8, "num_heads": 2}


@pytest.fixture
def real_params() -> Iterator[list[nn.Parameter]]:
    """Every parameter registered on a real device while the test runs."""
    seen: list[nn.Parameter] = []

    def hook(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            seen.append(param)

    handle = register_module_parameter_registration_hook(hook)
    yield seen
    handle.remove()


def _export(tmp_path: Path, **kwargs: object) -> Path:
    export = tmp_path / "export"
    shutil.copytree(EXPORT, export)
    config = json.loads((export / "config.json").read_text())
    config["kwargs"].update(kwargs)
    (export / "config.json").write_text(json.dumps(config))
    return export


def test_an_absurd_width_is_refused_before_anything_is_allocated(
    tmp_path: Path, real_params: list[nn.Parameter]
) -> None:
    export = _export(tmp_path, embed_dim=10**6, depth=10**4)
    with pytest.raises(AllocationTooLarge, match=r"config\.json: the vit_nd backbone") as info:
        domainfm.load_backbone(export)
    assert str(export / "config.json") in str(info.value) and "TiB" in str(info.value)
    assert real_params == []  # refused on the estimate alone


def test_a_model_over_a_lowered_limit_is_refused_with_its_estimate(
    monkeypatch: pytest.MonkeyPatch, real_params: list[nn.Parameter]
) -> None:
    monkeypatch.setenv(LIMIT_ENV, str(1 / 1024))  # 1 MiB; this ViT needs about 3 MiB
    kwargs = {**SMALL, "embed_dim": 128, "depth": 4}
    with pytest.raises(AllocationTooLarge, match=r"^run/config\.json: .* above the 1\.0 MiB"):
        build_backbone("vit_nd", kwargs, source="run/config.json")
    assert real_params == []
    monkeypatch.setenv(LIMIT_ENV, "1")
    assert isinstance(build_backbone("vit_nd", kwargs, source="run/config.json"), nn.Module)


def test_an_absurd_depth_stops_the_estimate_early(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counted while the (meta) model is built: 20000 narrow blocks stop after about 50."""
    monkeypatch.setenv(LIMIT_ENV, str(1 / 1024))
    with pytest.raises(AllocationTooLarge, match=r"counted so far"):
        build_backbone("vit_nd", {**SMALL, "embed_dim": 8, "depth": 20000}, source="c.json")


def test_a_table_of_values_is_checked_before_it_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    """``torch.linspace(0, rate, depth).tolist()`` runs for real: its size (with the Python
    list it becomes) is checked before it is made, before any block is counted."""
    monkeypatch.setenv(LIMIT_ENV, str(1 / 1024))
    with pytest.raises(AllocationTooLarge, match=r"^c\.json: a table of the vit_nd backbone"):
        build_backbone("vit_nd", {**SMALL, "embed_dim": 8, "depth": 40000}, source="c.json")


def test_the_estimate_is_exact_and_leaves_the_build_unchanged() -> None:
    kwargs: dict[str, Any] = {
        **SMALL,
        **{"embed_dim": 32, "depth": 2, "pos_embed": "learned", "grid_size": 4},
    }
    estimate = estimate_module_bytes(lambda: VisionTransformerND(**kwargs), what="the ViT")
    torch.manual_seed(0)
    guarded = build_backbone("vit_nd", kwargs)
    torch.manual_seed(0)
    plain = VisionTransformerND(**kwargs)
    assert estimate == module_bytes(plain)
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(guarded.state_dict()[key], value, rtol=0, atol=0)


def test_checkpoint_metadata_and_release_kwargs_are_guarded(tmp_path: Path) -> None:
    ckpt = tmp_path / "huge.ckpt"
    meta = {"backbone": {"architecture": "vit_nd", "kwargs": {**SMALL, "embed_dim": 10**6}}}
    torch.save({"state_dict": {"backbone.w": torch.zeros(1)}, "domainfm": meta}, ckpt)
    with pytest.raises(AllocationTooLarge, match=r"huge\.ckpt: the vit_nd backbone"):
        domainfm.load_backbone(ckpt)
    weights = tmp_path / "vit.safetensors"
    save_file({"cls_token": torch.zeros(1, 1, 8)}, str(weights))
    with pytest.raises(AllocationTooLarge, match=r"vit\.safetensors as timm-vit"):
        load_released("timm-vit-small-patch16-224", weights, model_kwargs={"embed_dim": 6 * 10**5})


def test_weights_larger_than_the_limit_are_refused_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    export = _export(tmp_path)
    with open(export / "model.safetensors", "r+b") as handle:  # sparse: nothing written
        handle.truncate(3 * 1024**2)
    monkeypatch.setenv(LIMIT_ENV, str(1 / 1024))
    with pytest.raises(AllocationTooLarge, match=r"model\.safetensors: reading these weights"):
        domainfm.load_backbone(export)
