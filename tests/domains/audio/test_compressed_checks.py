"""Compressed audio is checked: truncated and damaged Ogg (Vorbis, Opus), FLAC and MP3
streams give one ValueError naming the file and the problem. Before, libsndfile returned a
shorter or shifted recording and raised nothing. The hostile files are cut and damaged here,
at test time, from a real clip and from files soundfile writes."""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from domainfm.domains.audio import audio_info, check_audio_file, iter_audio_windows, load_audio
from domainfm.domains.audio.containers import check_container, ogg_crc

CLIPS = "audio/librosa_example_clips"
SPEECH = f"{CLIPS}/198-209-0000.ogg"  # 13.9 s Ogg Vorbis, 22.05 kHz

READERS: dict[str, Callable[[Path], object]] = {
    "load_audio": lambda p: load_audio(p),
    "check_audio_file": lambda p: check_audio_file(p),
    "iter_audio_windows": lambda p: list(iter_audio_windows(p, window_s=1.0)),
}


def _refused(path: Path, *fragments: str) -> None:
    """Every full reader refuses ``path`` with one ValueError that starts with the file
    and contains ``fragments``."""
    for name, read in READERS.items():
        with pytest.raises(ValueError) as caught:
            read(path)
        message = str(caught.value)
        assert message.startswith(str(path)), (name, message)
        for fragment in fragments:
            assert fragment in message, (name, message)
        assert "\n" not in message, (name, message)


def _pages(data: bytes) -> list[int]:
    """Offsets of the Ogg pages of ``data``."""
    starts, pos = [], 0
    while pos < len(data):
        assert data[pos : pos + 4] == b"OggS"
        starts.append(pos)
        count = data[pos + 26]
        pos += 27 + count + sum(data[pos + 27 : pos + 27 + count])
    return starts


@pytest.fixture(scope="module")
def speech(data_root: Path) -> tuple[np.ndarray, int]:
    """Three seconds of a real recording, ``(n,)`` float32."""
    wave, rate = sf.read(data_root / SPEECH, dtype="float32")
    return wave[: 3 * rate], rate


def test_ogg_crc_is_the_reference_crc() -> None:
    data = bytes(range(256)) * 3 + b"OggS"
    crc = 0
    for byte in data:  # bitwise CRC-32, polynomial 0x04C11DB7, not reflected, init 0
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1) & 0xFFFFFFFF
    assert ogg_crc(data) == crc != zlib.crc32(data)


def test_real_clips_pass_every_check(data_root: Path) -> None:
    for path in sorted((data_root / CLIPS).glob("*.ogg")):
        assert check_container(path).frames is None  # Ogg declares no length
    wave, rate = load_audio(data_root / SPEECH)
    assert rate == 22050 and wave.shape == (1, 306717)


def test_truncated_ogg_is_refused(data_root: Path, tmp_path: Path) -> None:
    original = (data_root / SPEECH).read_bytes()
    # the measured case: a third of the file decoded as 4.1 s of a 13.9 s clip, no error
    cut = tmp_path / "cut.ogg"
    cut.write_bytes(original[: len(original) // 3])
    _refused(cut, "truncated: the file ends inside the Ogg page at byte")
    # cut exactly at a page boundary: every page is whole, only the end-of-stream is missing
    pages = _pages(original)
    boundary = tmp_path / "boundary.ogg"
    boundary.write_bytes(original[: pages[len(pages) // 2]])
    assert audio_info(boundary).frames < audio_info(data_root / SPEECH).frames
    _refused(boundary, "truncated: the Ogg stream stops at", "without its end-of-stream page")


def test_damaged_ogg_is_refused(data_root: Path, tmp_path: Path) -> None:
    original = (data_root / SPEECH).read_bytes()
    pages = _pages(original)
    # bytes overwritten mid-file (the measured case: 1.8 s lost, the rest shifted, no error)
    damaged = bytearray(original)
    at = len(original) // 2
    damaged[at : at + 2000] = bytes(2000)
    path = tmp_path / "damaged.ogg"
    path.write_bytes(bytes(damaged))
    first = max(p for p in pages if p <= at)  # the page holding the first damaged byte
    _refused(path, f"damaged Ogg page at byte {first} (CRC mismatch)")
    # one whole page cut out of the middle (every remaining page is intact)
    k = len(pages) // 2
    gap = tmp_path / "gap.ogg"
    gap.write_bytes(original[: pages[k]] + original[pages[k + 1] :])
    _refused(gap, f"page {int.from_bytes(original[pages[k] + 18 : pages[k] + 22], 'little')}")
    _refused(gap, "is missing")


def test_opus_cut_and_damaged(speech: tuple[np.ndarray, int], tmp_path: Path) -> None:
    wave, _ = speech
    good = tmp_path / "good.opus"
    sf.write(good, wave, 48000, format="OGG", subtype="OPUS")
    assert load_audio(good)[0].shape[1] == len(wave)
    original = good.read_bytes()
    pages = _pages(original)
    damaged = bytearray(original)
    damaged[pages[3] + 60] ^= 0xFF
    bad = tmp_path / "damaged.opus"
    bad.write_bytes(bytes(damaged))
    _refused(bad, f"damaged Ogg page at byte {pages[3]} (CRC mismatch)")
    cut = tmp_path / "cut.opus"
    cut.write_bytes(original[: pages[-2]])
    _refused(cut, "truncated: the Ogg stream stops at", "s without its end-of-stream page")


def test_flac_cut_damaged_and_md5(speech: tuple[np.ndarray, int], tmp_path: Path) -> None:
    wave, rate = speech
    good = tmp_path / "good.flac"
    sf.write(good, wave, rate, subtype="PCM_16")
    decoded, _ = load_audio(good)
    assert check_audio_file(good).frames == decoded.shape[1] == len(wave)
    original = good.read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(original[: len(original) * 2 // 3])
    _refused(cut, "corrupt or truncated audio data")
    damaged = bytearray(original)
    damaged[len(original) // 2 : len(original) // 2 + 64] = bytes(64)
    bad = tmp_path / "damaged.flac"
    bad.write_bytes(bytes(damaged))
    _refused(bad, "corrupt or truncated audio data")
    # STREAMINFO's MD5 (bytes 26..42) no longer matches the samples, which decode cleanly
    altered = bytearray(original)
    altered[26] ^= 0x01
    md5 = tmp_path / "md5.flac"
    md5.write_bytes(bytes(altered))
    assert sf.read(md5, dtype="float32")[0].shape == wave.shape  # libsndfile says nothing
    for read in (load_audio, check_audio_file):
        with pytest.raises(ValueError, match="do not match the MD5"):
            read(md5)
    # STREAMINFO declares more samples than the stream holds (total in bytes 21..26)
    longer = bytearray(original)
    fields = int.from_bytes(longer[18:26], "big") + 4 * rate
    longer[18:26] = fields.to_bytes(8, "big")
    short = tmp_path / "short.flac"
    short.write_bytes(bytes(longer))
    _refused(short, "corrupt or truncated")


def test_mp3_cut_and_damaged(
    speech: tuple[np.ndarray, int], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    wave, rate = speech
    good = tmp_path / "good.mp3"
    sf.write(good, wave, rate)  # libsndfile writes MP3 through LAME (Xing/Info header)
    assert load_audio(good)[0].shape[1] == len(wave)
    original = good.read_bytes()
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(original[: len(original) // 2])
    _refused(cut, "truncated: the file ends inside the MP3 frame at byte")
    # cut at a frame boundary: only the Xing/Info frame count shows what is missing
    frames, pos = [], 0
    while pos < len(original):
        frames.append(pos)
        info = int.from_bytes(original[pos : pos + 4], "big")
        bitrate = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)[(info >> 12) & 15]
        pos += 72 * bitrate * 1000 // rate + ((info >> 9) & 1)  # MPEG-2 layer III at 22.05 kHz
    assert pos == len(original)
    boundary = tmp_path / "boundary.mp3"
    boundary.write_bytes(original[: frames[len(frames) // 2]])
    _refused(boundary, "truncated: decoded", "s the container declares")
    damaged = bytearray(original)
    damaged[frames[10] : frames[10] + 4] = b"\0\0\0\0"  # a frame header destroyed
    bad = tmp_path / "damaged.mp3"
    bad.write_bytes(bytes(damaged))
    _refused(bad, f"damaged MP3 data at byte {frames[10]}")
    noise = tmp_path / "noise.mp3"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    _refused(noise, "not an MP3 stream")
    # refused before libsndfile opens them: mpg123 prints no resync notes on stderr
    assert capfd.readouterr().err == ""


def test_mp3_tags_and_padding_are_accepted(speech: tuple[np.ndarray, int], tmp_path: Path) -> None:
    wave, rate = speech
    good = tmp_path / "good.mp3"
    sf.write(good, wave, rate)
    tagged = tmp_path / "tagged.mp3"
    id3v2 = b"ID3\x03\x00\x00\x00\x00\x00\x0a" + bytes(10)
    tagged.write_bytes(id3v2 + good.read_bytes() + b"TAG" + bytes(125))
    check_audio_file(tagged)
    padded = tmp_path / "padded.mp3"
    padded.write_bytes(good.read_bytes() + bytes(300))
    check_audio_file(padded)


def test_file_names_that_are_not_utf8(data_root: Path, tmp_path: Path) -> None:
    name = tmp_path / os.fsdecode(b"cl\xefp \xff.ogg")
    name.write_bytes((data_root / SPEECH).read_bytes()[:20000])
    assert load_audio(data_root / SPEECH)[0].shape[1] == audio_info(data_root / SPEECH).frames
    with pytest.raises(ValueError) as caught:
        load_audio(name)
    assert str(caught.value).startswith(str(name)) and "truncated" in str(caught.value)
    good = tmp_path / os.fsdecode(b"good \xff.ogg")
    good.write_bytes((data_root / SPEECH).read_bytes())
    assert load_audio(good)[0].shape == (1, 306717)
