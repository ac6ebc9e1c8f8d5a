"""BEATs releases: files in the real ``{'cfg', 'model'}`` layout (full size on the meta device,
shrunk for numbers) load strictly with the classifier dropped by name; the architecture is
checked against the file's ``cfg`` (a field that differs, or a ``cfg`` that leaves a field to
BEATs' defaults, fails naming it); BEATs' fbank is reproduced exactly."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from runpy import run_path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import Tensor

import domainfm.domains.audio  # noqa: F401 - registers the releases
from domainfm.domains.audio.beats_encoder import BEATS_ITER3_ARCH
from domainfm.domains.audio.release_frontends import BEATsFbankFrontend
from domainfm.pretrained.registry import RELEASED, load_released
from domainfm.pretrained.report import CheckpointMismatchError

released_files = SimpleNamespace(**run_path(str(Path(__file__).parents[3] / "released_files.py")))


def _load_sibling(name: str) -> Any:
    """The backbone test module (its release-layout state builder), by path."""
    path = Path(__file__).parents[1] / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_beats_sibling_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_SIBLING = _load_sibling("test_beats_encoder")
upstream_state = _SIBLING.upstream_state
SMALL: dict[str, Any] = _SIBLING.SMALL

ITER3_CFG: dict[str, Any] = {  # BEATs_iter3.pt's cfg: architecture plus training fields
    **BEATS_ITER3_ARCH,
    "layer_wise_gradient_decay_ratio": 0.6,
    "dropout": 0.0,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "encoder_layerdrop": 0.05,
    "dropout_input": 0.0,
    "finetuned_model": False,
}
NAMES = ("beats-iter3", "beats-iter3-plus-as2m", "beats-iter3-as2m-finetuned")


def _file(
    device: str, *, finetuned: bool, arch: dict[str, Any] = BEATS_ITER3_ARCH
) -> dict[str, Any]:
    state = upstream_state(arch, device=device)
    cfg = {**ITER3_CFG, "finetuned_model": finetuned}
    content: dict[str, Any] = {"cfg": cfg, "model": state}
    if finetuned:
        cfg.update(predictor_dropout=0.0, predictor_class=527)
        d = arch["encoder_embed_dim"]
        state["predictor.weight"] = torch.randn(527, d, device=device)
        state["predictor.bias"] = torch.randn(527, device=device)
        content["label_dict"] = {i: f"/m/{i:05d}" for i in range(527)}
    return content


def _pretrained(device: str) -> tuple[Any, str]:
    return _file(device, finetuned=False), ".pt"


def _finetuned(device: str) -> tuple[Any, str]:
    return _file(device, finetuned=True), ".pt"


IDENTICAL_LAYOUTS = (frozenset({"beats-iter3", "beats-iter3-plus-as2m"}),)
"""Same architecture and key layout (iter3 and iter3+ differ only in training data): a file
alone cannot tell them apart, so identification lists both."""

LAYOUT_FILES: dict[str, Callable[[str], tuple[Any, str]]] = {
    "beats-iter3": _pretrained,
    "beats-iter3-plus-as2m": _pretrained,
    "beats-iter3-as2m-finetuned": _finetuned,
}


@pytest.mark.parametrize("name", NAMES)
def test_full_size_layout_maps_strictly(name: str) -> None:
    entry = RELEASED.get(name)
    content, suffix = LAYOUT_FILES[name]("meta")
    _, _, dropped, report = released_files.full_size_report(name, content, f"file{suffix}")
    assert report.ok and not report.unexpected and not report.missing, report
    assert len(report.loaded) == len(content["model"]) - len(dropped) == 250
    assert dropped == (["predictor.bias", "predictor.weight"] if "finetuned" in name else [])
    assert entry.kwargs == BEATS_ITER3_ARCH


@pytest.mark.parametrize("name", NAMES)
def test_shrunk_file_loads_numerically(name: str, tmp_path: Path) -> None:
    content = _file("cpu", finetuned="finetuned" in name, arch=SMALL)
    path = tmp_path / "BEATs.pt"
    torch.save(content, path)  # cfg is the release's; the weights are a shrunk model's
    model, report = load_released(name, path, model_kwargs=SMALL)
    assert report.ok and len(report.loaded) == len(model.state_dict())
    own = model.state_dict()
    for key, value in content["model"].items():
        if key.startswith("predictor."):
            assert key in report.dropped
            continue
        key = key.replace(".weight_g", ".parametrizations.weight.original0")
        key = key.replace(".weight_v", ".parametrizations.weight.original1")
        torch.testing.assert_close(own[key], value)
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 1, 128, 64))).all()


@pytest.mark.parametrize(
    ("cfg_change", "field"),
    [
        ({"max_distance": 1280}, "max_distance"),
        ({"deep_norm": False}, "deep_norm"),
        ({"encoder_layers": 24}, "encoder_layers"),
        ({"finetuned_model": True}, "finetuned_model"),
    ],
)
def test_cfg_of_another_architecture_fails_naming_the_field(
    cfg_change: dict[str, Any], field: str, tmp_path: Path
) -> None:
    content = _file("cpu", finetuned=False, arch=SMALL)
    content["cfg"].update(cfg_change)
    torch.save(content, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=rf"other\.pt does not have the key layout.*{field}="):
        load_released("beats-iter3", tmp_path / "other.pt", model_kwargs=SMALL)


def test_cfg_leaving_a_field_to_defaults_fails(tmp_path: Path) -> None:
    """avex PR #162: without ``max_distance`` BEATsConfig would build 1280, not 800."""
    content = _file("cpu", finetuned=False, arch=SMALL)
    del content["cfg"]["max_distance"]
    torch.save(content, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match=r"max_distance=1280 \(release: 800\)"):
        load_released("beats-iter3", tmp_path / "partial.pt", model_kwargs=SMALL)


def test_wrong_layouts_fail_naming_keys(tmp_path: Path) -> None:
    content = _file("cpu", finetuned=False, arch=SMALL)
    torch.save(content["model"], tmp_path / "bare.pt")  # a state dict without cfg
    with pytest.raises(ValueError, match=r"bare\.pt does not have the key layout.*'cfg'"):
        load_released("beats-iter3", tmp_path / "bare.pt", model_kwargs=SMALL)
    state = content["model"]
    state["encoder.layers.1.self_attn.in_proj.weight"] = state.pop(
        "encoder.layers.1.self_attn.q_proj.weight"
    )
    torch.save(content, tmp_path / "renamed.pt")
    with pytest.raises(CheckpointMismatchError) as err:
        load_released("beats-iter3", tmp_path / "renamed.pt", model_kwargs=SMALL)
    assert err.value.report.missing == ["encoder.layers.1.self_attn.q_proj.weight"]
    assert err.value.report.unexpected == ["encoder.layers.1.self_attn.in_proj.weight"]
    # a fine-tuned file read as the pre-trained release: cfg says so
    torch.save(_file("cpu", finetuned=True, arch=SMALL), tmp_path / "ft.pt")
    with pytest.raises(ValueError, match="finetuned_model=True"):
        load_released("beats-iter3", tmp_path / "ft.pt", model_kwargs=SMALL)


def test_fbank_is_beats_preprocess() -> None:
    """BEATs.preprocess: kaldi.fbank(wave * 2**15, num_mel_bins=128, sample_frequency=16000,
    frame_length=25, frame_shift=10) with torchaudio's other defaults, (x - 15.41663) /
    (2 * 6.55582)."""
    from torchaudio.compliance.kaldi import fbank

    contract = RELEASED.get("beats-iter3").contract
    assert contract.sample_rate == 16000 and contract.frames == 998
    assert contract.frontend["architecture"] == "beats_fbank"
    wave = torch.rand(2, 16000) * 0.2 - 0.1
    expected = torch.stack(
        [
            fbank(
                w[None] * 2**15,
                num_mel_bins=128,
                sample_frequency=16000,
                frame_length=25,
                frame_shift=10,
            )
            for w in wave
        ]
    )
    expected = (expected - 15.41663) / (2 * 6.55582)
    torch.testing.assert_close(contract.normalize(wave), expected.transpose(1, 2))
    assert BEATsFbankFrontend().num_frames(160000) == 998


def _weights(state: dict[str, Tensor]) -> int:
    return sum(v.numel() for v in state.values())


def test_full_size_parameter_count() -> None:
    """About 90 M parameters, as the BEATs paper reports for its base model."""
    state = upstream_state(BEATS_ITER3_ARCH, device="meta")
    shared = (BEATS_ITER3_ARCH["encoder_layers"] - 1) * 320 * 12  # the table saved 12 times
    assert 89e6 < _weights(state) - shared < 92e6
