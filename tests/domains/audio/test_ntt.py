"""AudioNTT2020 equals BYOL-A's model definition (reference forward written here), loads
released-layout state dicts strictly (plain, under state_dict, prefixed, BYOL online +
target), and reports a wrong file clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from domainfm.domains.audio import AudioNTT2020
from domainfm.domains.audio.released.byola import byola_keys
from domainfm.pretrained.registry import load_released
from domainfm.pretrained.report import CheckpointMismatchError


def _reference_embedding(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """BYOL-A's AudioNTT2020.forward with its own layer layout: features → permute to
    (B, T, F, C) → reshape (B, T, F*C) → fc → max_t + mean_t."""
    features = nn.Sequential(
        *[
            m
            for cin in (1, 64, 64)
            for m in (
                nn.Conv2d(cin, 64, 3, 1, 1),
                nn.BatchNorm2d(64),
                nn.ReLU(),
                nn.MaxPool2d(2, 2),
            )
        ]
    )
    d = state["fc.3.weight"].shape[0]
    fc = nn.Sequential(nn.Linear(512, d), nn.ReLU(), nn.Dropout(0.3), nn.Linear(d, d), nn.ReLU())
    holder = nn.Module()
    holder.features, holder.fc = features, fc
    holder.load_state_dict(state)
    holder.eval()
    with torch.no_grad():
        y = features(x).permute(0, 3, 2, 1)
        b, t, f, c = y.shape
        y = fc(y.reshape(b, t, f * c))
        return y.max(dim=1).values + y.mean(dim=1)


def _released_state(d: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with the exact key names and shapes of AudioNTT2020-BYOLA-64x96d{d}.pth."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for conv, bn, cin in ((0, 1, 1), (4, 5, 64), (8, 9, 64)):
        state[f"features.{conv}.weight"] = torch.randn(64, cin, 3, 3, generator=g) * 0.2
        state[f"features.{conv}.bias"] = torch.randn(64, generator=g) * 0.1
        state[f"features.{bn}.weight"] = 1 + 0.1 * torch.randn(64, generator=g)
        state[f"features.{bn}.bias"] = 0.1 * torch.randn(64, generator=g)
        state[f"features.{bn}.running_mean"] = 0.1 * torch.randn(64, generator=g)
        state[f"features.{bn}.running_var"] = 1 + torch.rand(64, generator=g)
        state[f"features.{bn}.num_batches_tracked"] = torch.tensor(1000)
    state["fc.0.weight"] = torch.randn(d, 512, generator=g) * 0.05
    state["fc.0.bias"] = torch.randn(d, generator=g) * 0.05
    state["fc.3.weight"] = torch.randn(d, d, generator=g) * 0.05
    state["fc.3.bias"] = torch.randn(d, generator=g) * 0.05
    return state


@pytest.mark.parametrize("d", [512, 1024])
def test_released_weights_give_byola_embedding(tmp_path: Path, d: int) -> None:
    state = _released_state(d)
    path = tmp_path / f"AudioNTT2020-BYOLA-64x96d{d}.pth"
    torch.save(state, path)
    model, report = load_released(f"byola-audiontt2020-d{d}", path)
    assert len(report.loaded) == len(state) and not report.missing and not report.unexpected
    x = torch.randn(3, 1, 64, 96)
    model.eval()
    with torch.no_grad():
        ours = model(x)
    torch.testing.assert_close(ours, _reference_embedding(state, x))
    tokens, grid = model.forward_tokens(x)
    assert tokens.shape == (3, 12, d) and grid.shape == (1, 12)


def test_wrapped_and_prefixed_layouts(tmp_path: Path) -> None:
    state = _released_state(512)
    online = {f"online_encoder.net.{k}": v for k, v in state.items()}
    target = {f"target_encoder.net.{k}": v + 1 for k, v in state.items()}
    heads = {"online_encoder.projector.net.0.weight": torch.zeros(4, 4)}
    for content in (
        {"state_dict": state},
        {f"net.{k}": v for k, v in state.items()},
        {**online, **target, **heads},
    ):
        mapped = byola_keys(content)
        assert set(mapped) == set(state)
        torch.testing.assert_close(mapped["fc.0.weight"], state["fc.0.weight"])
    with pytest.raises(KeyError, match="several prefixes"):
        byola_keys(
            {**{f"a.{k}": v for k, v in state.items()}, **{f"b.{k}": v for k, v in state.items()}}
        )


def test_wrong_file_is_reported(tmp_path: Path) -> None:
    state = _released_state(512)
    del state["fc.3.bias"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointMismatchError, match=r"fc\.3\.bias"):
        load_released("byola-audiontt2020-d512", path)
    torch.save({"model": {"encoder.weight": torch.zeros(1)}}, path)
    with pytest.raises(ValueError, match="byola-audiontt2020-d512"):
        load_released("byola-audiontt2020-d512", path)
    with pytest.raises(ValueError, match="n_mels"):
        AudioNTT2020(n_mels=60)
