"""wav2vec 2.0 / HuBERT base: torchaudio's files (old weight_g/weight_v names or the current
parametrization names) and fairseq's files load strictly, pretraining parts dropped by name,
and give torchaudio's own model's numbers; other layouts fail naming keys or the file."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
import torchaudio
from torch import Tensor, nn
from torchaudio.models.wav2vec2.utils.import_fairseq import _map_key

import domainfm.domains.audio  # noqa: F401 - registers the releases
from domainfm.domains.audio.wav2vec2_encoder import WAV2VEC2_BASE_CONFIG, Wav2Vec2Encoder
from domainfm.pretrained.registry import RELEASED, load_released, mapped_release_state
from domainfm.pretrained.report import CheckpointMismatchError, compare_state_dict

SMALL: dict[str, Any] = {
    **WAV2VEC2_BASE_CONFIG,
    "extractor_conv_layer_config": [[16, 10, 5]] + [[16, 3, 2]] * 4 + [[16, 2, 2]] * 2,
    "encoder_embed_dim": 32,
    "encoder_num_heads": 2,
    "encoder_num_layers": 2,
    "encoder_ff_interm_features": 64,
    "encoder_pos_conv_kernel": 16,
    "encoder_pos_conv_groups": 4,
}
NEW_WN = ("parametrizations.weight.original0", "parametrizations.weight.original1")
WAV2VEC2_EXTRA = {"quantizer.vars": "1,640,128", "quantizer.weight_proj.weight": "640,512",
                  "quantizer.weight_proj.bias": "640", "project_q.weight": "256,256",
                  "project_q.bias": "256", "final_proj.weight": "256,D", "final_proj.bias": "256",
                  "mask_emb": "D"}  # fmt: skip
HUBERT_EXTRA = {"final_proj.weight": "256,D", "final_proj.bias": "256",
                "label_embs_concat": "504,256", "mask_emb": "D"}  # fmt: skip


def old_names(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """torchaudio's state with the pre-parametrization weight-norm names (published files)."""
    return {
        k.replace(NEW_WN[0], "weight_g").replace(NEW_WN[1], "weight_v"): v for k, v in state.items()
    }


def to_fairseq(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """torchaudio keys → fairseq ``Wav2Vec2Model``/``HubertModel`` keys (written from
    fairseq's module names; checked against torchaudio's ``_map_key`` below)."""
    out = {}
    for key, value in old_names(state).items():
        k = key.replace("encoder.transformer.pos_conv_embed.conv.", "encoder.pos_conv.0.")
        k = k.replace("encoder.feature_projection.projection.", "post_extract_proj.")
        k = k.replace("encoder.feature_projection.layer_norm.", "layer_norm.")
        k = k.replace(
            "feature_extractor.conv_layers.0.layer_norm.", "feature_extractor.conv_layers.0.2."
        )
        k = k.replace(".conv.weight", ".0.weight").replace("encoder.transformer.", "encoder.")
        k = k.replace(".attention.", ".self_attn.").replace(
            ".feed_forward.intermediate_dense.", ".fc1."
        )
        k = k.replace(".feed_forward.output_dense.", ".fc2.")
        if ".layers." in k and ".layer_norm." in k:
            k = k.replace(".layer_norm.", ".self_attn_layer_norm.")
        out[k] = value
    return out


def extras(spec: dict[str, str], dim: int, device: str) -> dict[str, Tensor]:
    return {
        k: torch.randn([dim if s == "D" else int(s) for s in shape.split(",")], device=device)
        for k, shape in spec.items()
    }


def fairseq_file(state: dict[str, Tensor], spec: dict[str, str], device: str) -> dict[str, Any]:
    """A fairseq checkpoint: ``{"args", "model", "optimizer_history", "extra_state"}``."""
    dim = state["encoder.feature_projection.projection.weight"].shape[0]
    model = {**to_fairseq(state), **extras(spec, dim, device)}
    return {"args": None, "model": model, "optimizer_history": [], "extra_state": {}}


def torchaudio_base(builder: Callable[[], nn.Module], device: str) -> dict[str, Tensor]:
    with torch.device(device):
        return dict(builder().state_dict())


def build_torchaudio(builder: Callable[[], nn.Module], device: str) -> tuple[Any, str]:
    """``wav2vec2_fairseq_base_ls960.pth`` / ``hubert_fairseq_base_ls960.pth``."""
    return old_names(torchaudio_base(builder, device)), ".pth"


def build_fairseq(builder: Callable[[], nn.Module], spec: dict[str, str], device: str):
    """``wav2vec_small.pt`` / ``hubert_base_ls960.pt``."""
    return fairseq_file(torchaudio_base(builder, device), spec, device), ".pt"


IDENTICAL_LAYOUTS = (frozenset({"hubert-base", "wav2vec2-base"}),)
"""torchaudio's wav2vec 2.0 and HuBERT base models have the same keys and shapes."""

LAYOUT_FILES: dict[str, Callable[[str], tuple[Any, str]]] = {
    "wav2vec2-base": partial(build_torchaudio, torchaudio.models.wav2vec2_base),
    "hubert-base": partial(build_torchaudio, torchaudio.models.hubert_base),
    "wav2vec2-base-fairseq": partial(
        build_fairseq, torchaudio.models.wav2vec2_base, WAV2VEC2_EXTRA
    ),
    "hubert-base-fairseq": partial(build_fairseq, torchaudio.models.hubert_base, HUBERT_EXTRA),
}
DROPPED = {
    "wav2vec2-base": set(),
    "hubert-base": set(),
    "wav2vec2-base-fairseq": set(WAV2VEC2_EXTRA),
    "hubert-base-fairseq": set(HUBERT_EXTRA),
}


def test_kwargs_are_torchaudio_pipelines() -> None:
    from torchaudio.pipelines import HUBERT_BASE, WAV2VEC2_BASE

    for bundle in (WAV2VEC2_BASE, HUBERT_BASE):
        params = {k: v for k, v in bundle._params.items() if k != "aux_num_out"}
        params["extractor_conv_layer_config"] = [
            list(c) for c in params["extractor_conv_layer_config"]
        ]
        assert params == WAV2VEC2_BASE_CONFIG
        assert bundle.sample_rate == 16000 and not bundle._normalize_waveform


@pytest.mark.parametrize("name", sorted(LAYOUT_FILES))
def test_full_size_layout_loads_strictly(name: str) -> None:
    entry = RELEASED.get(name)
    content, _ = LAYOUT_FILES[name]("meta")
    state, dropped = mapped_release_state(entry, content, path=name)
    with torch.device("meta"):
        model = Wav2Vec2Encoder(**entry.kwargs)
    report = compare_state_dict(model, state)
    assert report.ok and not report.unexpected and len(report.loaded) == len(state)
    assert set(dropped) == DROPPED[name] and entry.pretext is None


def test_fairseq_renames_agree_with_torchaudio_import() -> None:
    content, _ = LAYOUT_FILES["wav2vec2-base-fairseq"]("meta")
    ours = RELEASED.get("wav2vec2-base-fairseq").map_keys(content)
    for fairseq_key, our_key in zip(content["model"], ours, strict=True):
        expected = _map_key(fairseq_key)  # torchaudio's (None: skipped pretraining part)
        if expected is None:
            assert our_key in WAV2VEC2_EXTRA
        else:
            assert our_key == expected.replace("weight_g", NEW_WN[0]).replace("weight_v", NEW_WN[1])


@pytest.fixture(scope="module")
def reference() -> nn.Module:
    torch.manual_seed(0)
    config = {
        **SMALL,
        "extractor_conv_layer_config": [tuple(c) for c in SMALL["extractor_conv_layer_config"]],
    }
    model = torchaudio.models.wav2vec2_model(**config, aux_num_out=None).eval()
    with torch.no_grad():  # weight_g away from |v| so that a swapped g/v would show
        g = model.encoder.transformer.pos_conv_embed.conv.parametrizations.weight.original0
        g.mul_(torch.rand_like(g) + 0.5)
    return model


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("wav2vec2-base", lambda s: old_names(s)),
        ("hubert-base", lambda s: s),  # current parametrization names
        ("wav2vec2-base-fairseq", lambda s: fairseq_file(s, WAV2VEC2_EXTRA, "cpu")),
        ("hubert-base-fairseq", lambda s: fairseq_file(s, HUBERT_EXTRA, "cpu")),
    ],
)
def test_equals_torchaudio_model(
    name: str, make: Callable[[dict[str, Tensor]], Any], reference: nn.Module, tmp_path: Path
) -> None:
    path = tmp_path / "weights.pt"
    torch.save(make(dict(reference.state_dict())), path)
    model, report = load_released(name, path, model_kwargs=SMALL)
    assert report.ok and len(report.loaded) == len(model.state_dict())
    x = torch.randn(2, 1, 4000)
    with torch.no_grad():
        tokens, grid = model.eval().forward_tokens(x)
        expected, _ = reference(x[:, 0])
        torch.testing.assert_close(tokens, expected)
        layers, _ = reference.extract_features(x[:, 0])
        maps = model.forward_intermediates(x, indices=[0, 1])
        for ours, theirs in zip(maps, layers, strict=True):
            torch.testing.assert_close(ours, theirs.transpose(1, 2))
    assert grid.shape == (expected.shape[1],) and grid.patch_size == (320,)


def test_other_layouts_fail_naming_keys_or_file(reference: nn.Module, tmp_path: Path) -> None:
    state = dict(reference.state_dict())
    fairseq = tmp_path / "wav2vec_small.pt"
    torch.save(fairseq_file(state, WAV2VEC2_EXTRA, "cpu"), fairseq)
    with pytest.raises(ValueError, match=r"wav2vec_small\.pt does not have the key layout"):
        load_released("wav2vec2-base", fairseq, model_kwargs=SMALL)
    plain = tmp_path / "plain.pth"
    torch.save(old_names(state), plain)
    with pytest.raises(ValueError, match=r"plain\.pth does not have the key layout"):
        load_released("wav2vec2-base-fairseq", plain, model_kwargs=SMALL)
    renamed = old_names(state)
    renamed["encoder.transformer.layers.1.attention.q_proj.w"] = renamed.pop(
        "encoder.transformer.layers.1.attention.q_proj.weight"
    )
    torch.save(renamed, plain)
    with pytest.raises(
        CheckpointMismatchError,
        match=r"unexpected +encoder\.transformer\.layers\.1\.attention\.q_proj\.w",
    ):
        load_released("wav2vec2-base", plain, model_kwargs=SMALL)


def test_contract_is_the_raw_waveform() -> None:
    for name in LAYOUT_FILES:
        contract = RELEASED.get(name).contract
        assert contract.sample_rate == 16000
        assert contract.frontend == {
            "architecture": "waveform",
            "kwargs": {
                "sample_rate": 16000,
                "normalize": False,
                "min_samples": 400,
                "mean": None,
                "std": None,
            },
        }
        wave = torch.rand(3, 1000) - 0.5
        torch.testing.assert_close(contract.normalize(wave), wave)  # samples as they are
