"""Prepared audio shards: recordings cut into resampled mono segments (or precomputed
features), bad files named, the manifest's log-mel statistics, and the segment sample maker."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from domainfm.data.shards import prepare_shards, read_manifest
from domainfm.domains.audio import load_audio
from domainfm.domains.audio.augment import BYOLAViews
from domainfm.domains.audio.frontends import LogMelFrontend
from domainfm.domains.audio.shards import AudioPreparer, AudioSegments, StreamingAudioDataModule

ROBIN = "audio/librosa_example_clips/456440__inspectorj__bird-whistling-robin-single-13.ogg"
DIGITS = "audio/fsdd_spoken_digits/recordings"
DIGIT_FILES = ("0_george_0.wav", "3_jackson_5.wav", "7_nicolas_12.wav")


def _reference_wave(path: Path) -> np.ndarray:
    """Decoded with soundfile, mixed to mono, resampled to 16 kHz by torchaudio."""
    data, rate = sf.read(path, dtype="float32", always_2d=True)  # (N, C)
    mono = torch.from_numpy(data.mean(axis=1))
    return torchaudio.functional.resample(mono, rate, 16000).numpy()


def test_segments_cover_the_recording(data_root: Path) -> None:
    """1 s pieces of the 2.7 s clip at 16 kHz: together they are the whole resampled
    recording (float16 precision), starting at 0, 1, 2 s; a short last piece is dropped
    below min_segment_s."""
    path = data_root / ROBIN
    expected = _reference_wave(path)
    library = load_audio(path, 16000, mono=True)[0][0].numpy()
    np.testing.assert_allclose(library, expected, atol=1e-5)
    tail_s = (len(expected) - 32000) / 16000
    assert 0.5 < tail_s < 0.75  # the clip ends with a 0.7 s piece

    items = list(AudioPreparer(segment_s=1.0).items((path,)))
    assert [i["start_s"] for i in items] == [0.0, 1.0, 2.0]
    assert all(i["sample_rate"] == 16000 and i["source"] == path.name for i in items)
    assert [len(i["wave"]) for i in items] == [16000, 16000, len(expected) - 32000]
    assert all(i["wave"].dtype == np.float16 for i in items)
    joined = np.concatenate([i["wave"].astype(np.float32) for i in items])
    np.testing.assert_allclose(joined, expected, rtol=1e-3, atol=1e-5)

    shorter = list(AudioPreparer(segment_s=1.0, min_segment_s=0.75).items((path,)))
    assert [i["start_s"] for i in shorter] == [0.0, 1.0]
    joined = np.concatenate([i["wave"].astype(np.float32) for i in shorter])
    np.testing.assert_allclose(joined, expected[:32000], rtol=1e-3, atol=1e-5)


def test_frontend_features_are_the_log_mel_of_each_piece(data_root: Path) -> None:
    """features="frontend": each item is the un-normalized log-mel of its piece."""
    path = data_root / ROBIN
    expected = load_audio(path, 16000, mono=True)[0][0]
    frontend = LogMelFrontend()
    items = list(AudioPreparer(segment_s=1.0, features="frontend").items((path,)))
    assert len(items) == 3 and all("wave" not in i for i in items)
    for k, item in enumerate(items):
        piece = expected[16000 * k : 16000 * (k + 1)]
        with torch.no_grad():
            reference = frontend(piece[None])[0].numpy()
        assert item["features"].dtype == np.float16
        assert item["features"].shape == (64, 1 + len(piece) // 160) == reference.shape
        np.testing.assert_allclose(
            item["features"].astype(np.float32), reference, rtol=1e-3, atol=1e-3
        )


def _write_wav(path: Path, data: np.ndarray, rate: int = 8000) -> Path:
    sf.write(path, data, rate, subtype="PCM_16")
    return path


def test_bad_recordings_name_the_file(data_root: Path, tmp_path: Path) -> None:
    """A truncated WAV and an all-zero WAV raise ValueError naming the file."""
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes((data_root / DIGITS / DIGIT_FILES[1]).read_bytes()[:3000])
    silent = _write_wav(tmp_path / "silent.wav", np.zeros(8000, dtype=np.float32))
    preparer = AudioPreparer(segment_s=1.0)
    assert preparer.sources(tmp_path) == [(silent,), (truncated,)]
    for path in (truncated, silent):
        with pytest.raises(ValueError, match=re.escape(str(path))):
            list(preparer.items((path,)))


def test_manifest_stats_are_those_of_every_prepared_log_mel(
    data_root: Path, tmp_path: Path
) -> None:
    """prepare_shards over 3 digits: the manifest's mean/std are those of the un-normalized
    log-mel of every prepared piece; the streaming module normalizes with them."""
    src = tmp_path / "src"
    src.mkdir()
    for name in DIGIT_FILES:
        (src / name).symlink_to(data_root / DIGITS / name)
    preparer = AudioPreparer(segment_s=1.0)
    summary = prepare_shards(preparer, src, tmp_path / "out", num_workers=1)
    assert sorted(summary.prepared) == sorted(DIGIT_FILES) and not summary.skipped

    frontend = LogMelFrontend()
    values = []
    for name in DIGIT_FILES:
        for item in preparer.items((src / name,)):
            with torch.no_grad():
                feats = frontend(torch.from_numpy(item["wave"].astype(np.float32)))
            values.append(feats.numpy().astype(np.float64).ravel())
    flat = np.concatenate(values)
    manifest = read_manifest(tmp_path / "out")
    assert manifest["domain"] == "audio" and manifest["stats"]["count"] == [flat.size]
    np.testing.assert_allclose(manifest["stats"]["mean"], [flat.mean()], rtol=1e-6)
    np.testing.assert_allclose(manifest["stats"]["std"], [flat.std()], rtol=1e-6)

    dm = StreamingAudioDataModule(shards=str(tmp_path / "out"), frames=32, views="byola")
    normalized = dm.frontend(manifest)
    assert normalized.mean == pytest.approx(flat.mean(), rel=1e-6)
    assert normalized.std == pytest.approx(flat.std(), rel=1e-6)


def _item(wave: np.ndarray) -> dict[str, Any]:
    return {"wave": wave.astype(np.float16), "sample_rate": 16000, "start_s": 0.0}


def test_segments_are_normalized_log_mels(data_root: Path) -> None:
    """Wave items: (1, n_mels, frames) of the normalized log-mel (zero-padded when short);
    feature items: the normalized cut of the stored features."""
    frontend = LogMelFrontend(mean=-4.0, std=5.0)
    maker = AudioSegments(frontend=frontend, frames=48)
    wave = _reference_wave(data_root / ROBIN)[:16000]
    exact = wave[: 47 * 160].astype(np.float16).astype(np.float32)  # exactly 48 frames
    x = maker(_item(exact), torch.Generator().manual_seed(0))["input"]
    assert x.shape == (1, 64, 48)
    with torch.no_grad():
        raw = LogMelFrontend()(torch.from_numpy(exact)[None])
    torch.testing.assert_close(x, (raw + 4.0) / 5.0)

    short = exact[:3000]  # zero-padded to 47 * 160 samples before the front end
    x = maker(_item(short), torch.Generator().manual_seed(0))["input"]
    padded = np.concatenate([short, np.zeros(47 * 160 - 3000, dtype=np.float32)])
    with torch.no_grad():
        raw = LogMelFrontend()(torch.from_numpy(padded)[None])
    torch.testing.assert_close(x, (raw + 4.0) / 5.0)

    (item, *_) = AudioPreparer(segment_s=1.0, features="frontend").items((data_root / ROBIN,))
    feats = torch.from_numpy(item["features"].astype(np.float32))  # (64, 101)
    for seed in range(3):
        x = maker(item, torch.Generator().manual_seed(seed))["input"]
        assert x.shape == (1, 64, 48)
        cuts = [(feats[None, :, s : s + 48] + 4.0) / 5.0 for s in range(101 - 48 + 1)]
        assert any(torch.allclose(x, cut, atol=1e-6) for cut in cuts)
        torch.testing.assert_close(
            x, maker(item, torch.Generator().manual_seed(seed))["input"], rtol=0, atol=0
        )


def test_byola_views(data_root: Path) -> None:
    """two_views=BYOLAViews(): "view1"/"view2" of the segment's shape beside the unaugmented
    "input"; the seed decides them."""
    frontend = LogMelFrontend(mean=-4.0, std=5.0)
    maker = AudioSegments(frontend=frontend, frames=48, two_views=BYOLAViews())
    wave = _reference_wave(data_root / ROBIN)[:16000]
    item = _item(wave)
    sample = maker(item, torch.Generator().manual_seed(1))
    plain = AudioSegments(frontend=frontend, frames=48)(item, torch.Generator().manual_seed(1))
    assert set(sample) == {"input", "view1", "view2"}
    assert sample["view1"].shape == sample["view2"].shape == (1, 64, 48)
    torch.testing.assert_close(sample["input"], plain["input"])
    assert not torch.equal(sample["view1"], sample["view2"])
    fresh = AudioSegments(frontend=frontend, frames=48, two_views=BYOLAViews())  # no memory
    again = fresh(item, torch.Generator().manual_seed(1))
    for key in ("view1", "view2"):
        torch.testing.assert_close(again[key], sample[key], rtol=0, atol=0)


def test_short_items_pad_alike_from_waves_and_features(data_root: Path) -> None:
    """A clip shorter than the segment ends in silence frames in both storage modes."""
    path = data_root / "audio/fsdd_spoken_digits/recordings/0_george_0.wav"  # about 0.3 s
    frontend = LogMelFrontend(mean=-4.0, std=5.0)
    out = []
    for features in ("wave", "frontend"):
        (item,) = AudioPreparer(features=features).items((path,))  # type: ignore[arg-type]
        maker = AudioSegments(frontend=frontend, frames=96)
        out.append(maker(item, torch.Generator().manual_seed(0)))
    wave_tail, feature_tail = out[0]["input"][..., -5:], out[1]["input"][..., -5:]
    silence = (np.log(np.finfo(np.float32).eps) + 4.0) / 5.0
    torch.testing.assert_close(wave_tail, torch.full_like(wave_tail, silence), rtol=0, atol=1e-4)
    torch.testing.assert_close(feature_tail, wave_tail, rtol=0, atol=1e-3)
