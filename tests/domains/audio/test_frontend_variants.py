"""Registered front-end variants (:func:`~domainfm.domains.audio.frontends.variant_defaults`):
their constructors are the base's with other defaults, recorded in the config as a constructor
of their own would be, and rebuilt from it."""

from __future__ import annotations

import inspect

import pytest
import torch

from domainfm.core.registry import init_config
from domainfm.domains.audio.frontends import (
    FLOAT32_EPS,
    KaldiFbankFrontend,
    LogMelFrontend,
    build_frontend,
    variant_defaults,
)
from domainfm.domains.audio.release_frontends import (
    BEATS_FBANK_MEAN,
    BEATS_FBANK_STD,
    BEATsFbankFrontend,
    SlaneyLogMelFrontend,
)


def test_variants_record_every_argument_with_their_defaults() -> None:
    assert init_config(BEATsFbankFrontend()) == {
        "architecture": "beats_fbank",
        "kwargs": {
            "sample_rate": 16000,
            "num_mel_bins": 128,
            "frame_length_ms": 25.0,
            "frame_shift_ms": 10.0,
            "mean": BEATS_FBANK_MEAN,
            "std": BEATS_FBANK_STD,
        },
    }
    assert init_config(SlaneyLogMelFrontend(mean=-7.1, std=4.2)) == {
        "architecture": "log_mel_slaney",
        "kwargs": {
            "sample_rate": 16000,
            "n_fft": 400,
            "win_length": 400,
            "hop_length": 160,
            "n_mels": 80,
            "f_min": 50.0,
            "f_max": 8000.0,
            "mean": -7.1,
            "std": 4.2,
            "eps": FLOAT32_EPS,
        },
    }


def test_variant_signatures_are_the_base_ones_with_other_defaults() -> None:
    for variant, base in (
        (BEATsFbankFrontend, KaldiFbankFrontend),
        (SlaneyLogMelFrontend, LogMelFrontend),
    ):
        got, expected = inspect.signature(variant), inspect.signature(base)
        assert list(got.parameters) == list(expected.parameters)
        assert all(p.kind is p.KEYWORD_ONLY for p in got.parameters.values())
    assert inspect.signature(BEATsFbankFrontend).parameters["mean"].default == BEATS_FBANK_MEAN
    assert inspect.signature(SlaneyLogMelFrontend).parameters["n_fft"].default == 400


def test_explicit_arguments_win_and_configs_rebuild_the_same_features() -> None:
    frontend = SlaneyLogMelFrontend(n_mels=64, mean=-7.1, std=4.2)
    assert frontend.n_bins == 64 and int(frontend.mel.n_fft) == 400
    rebuilt = build_frontend(init_config(frontend))
    assert type(rebuilt) is SlaneyLogMelFrontend
    wave = torch.randn(1, 16000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(rebuilt(wave), frontend(wave))
    beats = BEATsFbankFrontend(mean=1.0)
    assert (beats.mean, beats.std) == (1.0, BEATS_FBANK_STD)
    raw = beats.with_stats(None, None)
    assert type(raw) is BEATsFbankFrontend and (raw.mean, raw.std) == (None, None)


def test_defaults_for_arguments_the_base_does_not_take_are_refused() -> None:
    with pytest.raises(TypeError, match=r"no argument\(s\) \['n_fft'\]"):

        @variant_defaults(n_fft=400)
        class _Fbank(KaldiFbankFrontend):
            pass
