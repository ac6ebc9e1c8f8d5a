"""The raw-waveform front end: registered, identity on long clips, pads short ones,
optional per-clip normalization, round trip through an AudioContract."""

from __future__ import annotations

import torch

from domainfm.domains.audio.contract import AudioContract
from domainfm.domains.audio.frontends import FRONTENDS, build_frontend
from domainfm.domains.audio.waveform_frontend import WaveformFrontend


def test_identity_padding_and_normalization() -> None:
    assert FRONTENDS.get("waveform") is WaveformFrontend
    fe = WaveformFrontend(min_samples=400)
    wave = torch.rand(2, 1000) - 0.5
    torch.testing.assert_close(fe(wave), wave)
    short = fe(torch.ones(2, 100))
    assert short.shape == (2, 400) and short[:, 100:].abs().sum() == 0
    norm = WaveformFrontend(normalize=True)(wave)
    torch.testing.assert_close(norm.mean(-1), torch.zeros(2), atol=1e-5, rtol=0)
    assert fe.num_frames(10) == 400 and fe.num_samples(7) == 7


def test_contract_round_trip() -> None:
    contract = AudioContract.of(WaveformFrontend(min_samples=400), frames=32000)
    again = AudioContract.from_dict(contract.to_dict())
    assert again.hop_seconds == 1 / 16000
    assert isinstance(build_frontend(again.frontend), WaveformFrontend)
    assert again.frontend_module.with_stats(0.0, 2.0)(torch.full((1, 500), 4.0)).max() == 2.0
