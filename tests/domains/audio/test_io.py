"""Audio IO on the real clips: decoding WAV and OGG, resampling, windows of long files, the
cached index, and one clear error per bad file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from domainfm.domains.audio import (
    AudioSkippedWarning,
    audio_info,
    index_audio,
    iter_audio_windows,
    load_audio,
    read_segment,
)
from domainfm.domains.audio.io import num_windows

DIGIT = "audio/fsdd_spoken_digits/recordings/0_george_0.wav"
SPEECH = "audio/librosa_example_clips/198-209-0000.ogg"


def test_wav_and_ogg_decode_with_resampling(data_root: Path) -> None:
    wave, rate = load_audio(data_root / DIGIT)
    raw, raw_rate = sf.read(data_root / DIGIT, dtype="float32")
    assert rate == raw_rate == 8000 and wave.shape == (1, len(raw)) and wave.dtype == torch.float32
    np.testing.assert_array_equal(wave[0].numpy(), raw)
    up, up_rate = load_audio(data_root / DIGIT, sample_rate=16000)
    assert up_rate == 16000 and up.shape[1] == 2 * len(raw)
    ogg, ogg_rate = load_audio(data_root / SPEECH)
    info = audio_info(data_root / SPEECH)
    assert ogg_rate == 22050 and ogg.shape == (info.channels, info.frames)
    assert abs(info.duration - 13.91) < 0.01


def test_windows_of_a_long_file_match_the_whole_file(data_root: Path) -> None:
    whole, rate = load_audio(data_root / SPEECH)
    windows = list(iter_audio_windows(data_root / SPEECH, window_s=2.0, hop_s=1.5))
    assert len(windows) == num_windows(whole.shape[1], rate, window_s=2.0, hop_s=1.5)
    for start, window in windows:
        first = round(start * rate)
        part = whole[:, first : first + window.shape[1]]
        torch.testing.assert_close(window[:, : part.shape[1]], part)
        assert window.shape[1] == 2 * rate  # the last one zero-padded
    seg = read_segment(audio_info(data_root / SPEECH), start=rate, num_samples=rate)
    torch.testing.assert_close(seg, whole[:, rate : 2 * rate])


def _write(path: Path, data: np.ndarray, rate: int = 8000, subtype: str = "PCM_16") -> Path:
    sf.write(path, data, rate, subtype=subtype)
    return path


def test_bad_files_each_give_one_clear_error(data_root: Path, tmp_path: Path) -> None:
    original = (data_root / DIGIT).read_bytes()
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(original[: len(original) // 2])
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(os.urandom(4000))
    unsupported = tmp_path / "notes.txt"
    unsupported.write_text("not audio\n")
    empty = _write(tmp_path / "empty.wav", np.zeros((0, 1), np.float32))
    silent = _write(tmp_path / "silent.wav", np.zeros((800, 1), np.float32))
    nan = np.zeros((800, 1), np.float32)
    nan[7] = np.nan
    with_nan = _write(tmp_path / "nan.wav", nan, subtype="FLOAT")
    cases = [
        (truncated, "truncated: the header announces 2384 frames but only 1181"),
        (garbage, "not a readable audio file"),
        (unsupported, "not a readable audio file"),
        (empty, "zero-length"),
        (silent, "silent"),
        (with_nan, "1 NaN/Inf samples"),
    ]
    for path, message in cases:
        with pytest.raises(ValueError, match=message) as err:
            load_audio(path)
        assert str(path) in str(err.value)
    assert load_audio(silent, allow_silent=True)[0].abs().max() == 0
    with pytest.raises(FileNotFoundError):
        load_audio(tmp_path / "missing.wav")


def test_index_reports_bad_files_and_caches(data_root: Path, tmp_path: Path) -> None:
    good = sorted((data_root / "audio/fsdd_spoken_digits/recordings").glob("1_*_0.wav"))
    bad = tmp_path / "bad.wav"
    bad.write_bytes(os.urandom(1000))
    cache = tmp_path / "index.json"
    with pytest.warns(AudioSkippedWarning, match="bad.wav"):
        infos, skipped = index_audio([*good, bad], cache=cache)
    assert [i.path for i in infos] == [str(p) for p in good]
    assert skipped[0][0] == str(bad) and "not a readable audio file" in skipped[0][1]
    # cached: unchanged files are not reopened (a file made unreadable in place keeps its
    # cached facts only while its size and mtime are unchanged)
    again, _ = index_audio(good, cache=cache)
    assert again == infos
