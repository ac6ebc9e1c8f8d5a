"""Front ends against their references: BYOL-A's log-mel (torchaudio MelSpectrogram + log
eps) and AST's Kaldi fbank recipe, normalization, frame counts, rebuilding from config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchaudio

from domainfm.core.registry import init_config
from domainfm.domains.audio import (
    KaldiFbankFrontend,
    LogMelFrontend,
    build_frontend,
    compute_frontend_stats,
    load_audio,
)

DIGIT = "audio/fsdd_spoken_digits/recordings/3_jackson_4.wav"


def test_log_mel_is_byola_recipe(data_root: Path) -> None:
    wave, _ = load_audio(data_root / DIGIT, sample_rate=16000)
    reference = torchaudio.transforms.MelSpectrogram(
        sample_rate=16000,
        n_fft=1024,
        win_length=1024,
        hop_length=160,
        n_mels=64,
        f_min=60,
        f_max=7800,
    )
    expected = (reference(wave) + torch.finfo(torch.float).eps).log()
    got = LogMelFrontend()(wave)
    torch.testing.assert_close(got, expected)
    normalized = LogMelFrontend(mean=-5.0, std=4.0)(wave)
    torch.testing.assert_close(normalized, (expected + 5.0) / 4.0)
    frontend = LogMelFrontend()
    assert got.shape[-1] == frontend.num_frames(wave.shape[-1])
    assert frontend.num_frames(frontend.num_samples(96)) == 96


def test_kaldi_fbank_is_ast_recipe(data_root: Path) -> None:
    wave, _ = load_audio(data_root / DIGIT, sample_rate=16000)
    fbank = torchaudio.compliance.kaldi.fbank(
        wave - wave.mean(),
        htk_compat=True,
        sample_frequency=16000,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=128,
        dither=0.0,
        frame_shift=10,
    )
    expected = ((fbank - (-4.2677393)) / (4.5689974 * 2)).T[None]  # (1, 128, T)
    frontend = KaldiFbankFrontend()
    got = frontend(wave)
    torch.testing.assert_close(got, expected)
    assert got.shape[-1] == frontend.num_frames(wave.shape[-1])
    assert frontend.num_frames(frontend.num_samples(1024)) == 1024


def test_frontends_rebuild_from_their_config_and_stats_are_cached(
    data_root: Path, tmp_path: Path
) -> None:
    files = sorted((data_root / "audio/fsdd_spoken_digits/recordings").glob("*_lucas_0.wav"))
    frontend = LogMelFrontend(n_mels=32)
    cache = tmp_path / "stats.json"
    mean, std = compute_frontend_stats(files, frontend, cache=cache)
    values = torch.cat([frontend(load_audio(f, 16000)[0]).flatten() for f in files]).double()
    assert mean == pytest.approx(float(values.mean()), rel=1e-6)
    assert std == pytest.approx(float(values.std(unbiased=False)), rel=1e-6)
    assert compute_frontend_stats(files, frontend, cache=cache) == (mean, std)
    normalized = frontend.with_stats(mean, std)
    rebuilt = build_frontend(init_config(normalized))
    wave = load_audio(files[0], 16000)[0]
    torch.testing.assert_close(rebuilt(wave), (frontend(wave) - mean) / std)
