"""Audio files in: decoding with soundfile, resampling with torchaudio, long files in windows.

torchaudio 2.9 removed its own decoding (``torchaudio.load`` now defers to TorchCodec), so
files are decoded with **soundfile** (libsndfile: WAV, FLAC, OGG/Vorbis, Opus, MP3, AIFF,
...) and only resampled with ``torchaudio.functional.resample`` (windowed sinc).

* :func:`audio_info` — duration, rate, channels, frames and format, from the header only.
* :func:`load_audio` — the whole file as ``(C, N)`` float32 in ``[-1, 1]`` (integer PCM is
  scaled by soundfile), resampled when ``sample_rate`` is given.
* :func:`iter_audio_windows` — a long file in fixed windows, read block by block: memory
  is one window (plus the resampler's), never the file.

* :func:`check_audio_file` — the whole file decoded block by block and checked like
  :func:`load_audio` (memory is one block): what the training path runs on each file when it
  first reads it.

Every bad file gives one ``ValueError`` naming it and the problem: a format that is not
recognised or not supported, corrupt or truncated data, zero length, NaN/Inf samples, and
(unless ``allow_silent=True``) an all-zero recording. It never gives a libsndfile trace or a
NaN loss later. Truncation and damage are caught in three ways:

* the container's structure (:func:`~domainfm.domains.audio.containers.check_container`:
  Ogg page CRCs, page sequence and end-of-stream flag; the MP3 frame chain and its
  Xing/Info frame count; FLAC STREAMINFO), walked before decoding by :func:`load_audio`,
  :func:`check_audio_file` and :func:`iter_audio_windows`;
* the decoded length against the declared one (WAV ``data`` chunk, FLAC STREAMINFO, MP3
  Xing/Info through libsndfile);
* on full reads of FLAC, the MD5 of the decoded samples against STREAMINFO's.

:func:`read_segment` decodes only the part it needs and checks only that part: the
training path checks each whole file once, the first time it reads it.

Shapes::

    load_audio(path)                          (C, N) float32, sample rate
    iter_audio_windows(path, window_s=...)    yields (start_seconds, (C, n) float32)

Example::

    >>> wave, rate = load_audio("0_george_0.wav", sample_rate=16000)
    >>> wave.shape, rate
    (torch.Size([1, 4869]), 16000)
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from domainfm.core.size_guard import check_allocation
from domainfm.domains.audio.containers import (
    StreamFacts,
    check_container,
    flac_sample_bytes,
    wav_declared_frames,
)
from domainfm.domains.audio.resampling import resample

SILENCE_PEAK = 1e-6
"""Peak absolute amplitude below which a recording counts as silent (about -120 dBFS)."""


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says: ``frames`` samples per channel at ``sample_rate``."""

    path: str
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate


def _soundfile() -> Any:
    try:
        import soundfile
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise ImportError(
            "decoding audio needs soundfile (libsndfile): pip install soundfile"
        ) from err
    return soundfile


def _bad(path: Path, problem: str) -> ValueError:
    return ValueError(f"{path}: {problem}")


def audio_info(path: str | Path) -> AudioInfo:
    """Header facts of ``path`` (nothing decoded).

    Raises:
        FileNotFoundError: no such file.
        ValueError: naming the file: not an audio file libsndfile can open (unknown or
            unsupported format, corrupt header), or zero frames.
    """
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such audio file")
    sf = _soundfile()
    try:
        info = sf.info(os.fsencode(source))
    except (RuntimeError, sf.LibsndfileError) as err:
        raise _bad(
            source,
            f"not a readable audio file ({_libsndfile_says(err)}); supported formats: WAV, "
            "FLAC, OGG/Vorbis, Opus, MP3, AIFF and others libsndfile decodes",
        ) from err
    frames = int(info.frames)
    if frames <= 0 or int(info.samplerate) <= 0:
        raise _bad(source, "zero-length audio (the file holds no samples)")
    return AudioInfo(
        path=str(source),
        sample_rate=int(info.samplerate),
        channels=int(info.channels),
        frames=frames,
        format=str(info.format),
        subtype=str(info.subtype),
    )


def _checked_info(source: Path) -> tuple[AudioInfo, StreamFacts]:
    """The container walk (:func:`~domainfm.domains.audio.containers.check_container`,
    before libsndfile opens the file) and the header facts."""
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such audio file")
    facts = check_container(source)
    return audio_info(source), facts


def _check_length(source: Path, info: AudioInfo, facts: StreamFacts, decoded: int) -> None:
    """Fewer frames decoded than the header or the container declares: corrupt or
    truncated."""
    declared = max(info.frames, wav_declared_frames(source) or 0, facts.frames or 0)
    if decoded < declared:
        rate = info.sample_rate
        raise _bad(
            source,
            f"corrupt or truncated: the header announces {declared} frames but only "
            f"{decoded} could be decoded (decoded {decoded / rate:.1f} s of the "
            f"{declared / rate:.1f} s the container declares)",
        )


def _check_md5(source: Path, facts: StreamFacts, md5: Any) -> None:
    """A FLAC stream whose decoded samples do not hash to STREAMINFO's MD5 is damaged."""
    if md5 is not None and facts.md5 is not None and md5.digest() != facts.md5:
        raise _bad(
            source,
            "damaged FLAC stream: the decoded samples do not match the MD5 its STREAMINFO "
            "block records",
        )


def _md5_of(facts: StreamFacts) -> Any:
    """A running MD5 when the stream records one that can be verified, else ``None``."""
    if facts.md5 is None or facts.bits_per_sample not in (8, 16, 24):
        return None
    return hashlib.md5(usedforsecurity=False)


def _libsndfile_says(err: Exception) -> str:
    """libsndfile's own words of ``err``, without the path soundfile prefixes (the file is
    named once, at the start of the message) or a trailing period."""
    text = str(getattr(err, "error_string", "") or err)
    return text.replace("Error : ", "").strip().rstrip(".")


def _decode_error(source: Path, err: Exception, where: str = "") -> ValueError:
    """libsndfile's decoder error (lost sync, bad frame, a seek past the data) as one line
    naming the file."""
    return _bad(
        source, f"corrupt or truncated audio data{where} (libsndfile: {_libsndfile_says(err)})"
    )


def _check_samples(source: Path, data: np.ndarray, *, allow_silent: bool) -> None:
    """NaN/Inf and (optionally) all-silent samples are refused, naming the file."""
    finite = np.isfinite(data)
    if not finite.all():
        bad = int(data.size - finite.sum())
        raise _bad(source, f"{bad} NaN/Inf samples; the file is corrupt or not audio")
    if not allow_silent and (data.size == 0 or float(np.abs(data).max()) < SILENCE_PEAK):
        raise _silent(source)


def _silent(source: Path) -> ValueError:
    return _bad(
        source, "silent: every sample is zero (below -120 dBFS); pass allow_silent=True to keep it"
    )


def load_audio(
    path: str | Path,
    sample_rate: int | None = None,
    *,
    mono: bool = False,
    allow_silent: bool = False,
) -> tuple[Tensor, int]:
    """Decode ``path`` to ``(C, N)`` float32 and its rate (``sample_rate`` when given:
    resampled).

    Args:
        path: an audio file (WAV, FLAC, OGG, ...).
        sample_rate: rate to resample to; ``None`` keeps the file's.
        mono: average the channels to one.
        allow_silent: accept an all-zero recording instead of raising.

    Raises:
        FileNotFoundError: no such file.
        ValueError: naming the file: unreadable/unsupported, zero-length, damaged or
            truncated (a container check fails, fewer frames decoded than declared, a FLAC
            MD5 mismatch), NaN/Inf or silent samples.
    """
    source = Path(path)
    info, facts = _checked_info(source)
    check_allocation(  # the decoded samples and their transposed copy, float32
        2.0 * info.frames * info.channels * 4,
        what=f"decoding {info.frames} frames x {info.channels} channels",
        source=source,
    )
    sf = _soundfile()
    try:
        data, rate = sf.read(os.fsencode(source), dtype="float32", always_2d=True)  # (N, C)
    except (RuntimeError, sf.LibsndfileError) as err:
        raise _decode_error(source, err) from err
    _check_length(source, info, facts, data.shape[0])
    _check_samples(source, data, allow_silent=allow_silent)
    md5 = _md5_of(facts)
    if md5 is not None:
        for first in range(0, data.shape[0], 1 << 16):  # bounded temporaries
            block = data[first : first + (1 << 16)]
            md5.update(flac_sample_bytes(block, int(facts.bits_per_sample or 0)) or b"")
        _check_md5(source, facts, md5)
    waveform = torch.from_numpy(np.ascontiguousarray(data.T))  # (C, N)
    if mono and waveform.shape[0] > 1:
        waveform = waveform.mean(dim=0, keepdim=True)
    if sample_rate is not None and sample_rate != rate:
        waveform = resample(waveform, int(rate), int(sample_rate), source=source)
        rate = sample_rate
    return waveform, int(rate)


def check_audio_file(
    path: str | Path, *, allow_silent: bool = False, block_frames: int = 1 << 16
) -> AudioInfo:
    """Decode all of ``path``, ``block_frames`` at a time (memory is one block), and check it
    as :func:`load_audio` does (container, decoded length, FLAC MD5, NaN/Inf and, unless
    ``allow_silent``, silence); returns its header facts.

    Raises:
        FileNotFoundError: no such file.
        ValueError: naming the file and the problem, as :func:`load_audio`.
    """
    source = Path(path)
    info, facts = _checked_info(source)
    md5 = _md5_of(facts)
    sf = _soundfile()
    decoded, peak = 0, 0.0
    try:
        with sf.SoundFile(os.fsencode(source)) as handle:
            for block in handle.blocks(block_frames, dtype="float32", always_2d=True):
                _check_samples(source, block, allow_silent=True)  # NaN/Inf
                if block.size:
                    peak = max(peak, float(np.abs(block).max()))
                if md5 is not None:
                    md5.update(flac_sample_bytes(block, int(facts.bits_per_sample or 0)) or b"")
                decoded += block.shape[0]
    except (RuntimeError, sf.LibsndfileError) as err:
        raise _decode_error(source, err) from err
    _check_length(source, info, facts, decoded)
    if not allow_silent and peak < SILENCE_PEAK:
        raise _silent(source)
    _check_md5(source, facts, md5)
    return info


def iter_audio_windows(
    path: str | Path,
    *,
    window_s: float,
    hop_s: float | None = None,
    sample_rate: int | None = None,
    mono: bool = True,
    pad_last: bool = True,
) -> Generator[tuple[float, Tensor], None, None]:
    """Read a long file window by window (constant memory: one window at a time).

    Args:
        path: the file.
        window_s: window length in seconds.
        hop_s: step between window starts (default ``window_s``: no overlap).
        sample_rate: resample each window to this rate.
        mono: average the channels.
        pad_last: zero-pad the last window to full length (``False``: yield it short; a
            window with no samples is never yielded).

    Yields:
        ``(start_seconds, waveform)`` with ``waveform`` ``(C, n)`` float32.

    Raises:
        ValueError: naming the file, as :func:`load_audio`: the container is checked
            before the first window, the decoded length per window; NaN/Inf are checked
            per window; silence is allowed here, since long recordings have quiet
            stretches; a FLAC MD5 is not checked.
    """
    source = Path(path)
    info, _ = _checked_info(source)  # a damaged or cut stream is refused before any window
    if window_s <= 0 or (hop_s is not None and hop_s <= 0):
        raise ValueError(f"window_s={window_s}, hop_s={hop_s}: must be > 0")
    rate = info.sample_rate
    length = max(1, round(window_s * rate))
    hop = max(1, round((hop_s or window_s) * rate))
    starts = range(0, max(1, info.frames - length + hop), hop)
    sf = _soundfile()
    with sf.SoundFile(os.fsencode(source)) as handle:
        for start in starts:
            if start >= info.frames:
                break
            handle.seek(start)
            try:
                block = handle.read(length, dtype="float32", always_2d=True)  # (n, C)
            except (RuntimeError, sf.LibsndfileError) as err:
                raise _decode_error(source, err, f" at {start / rate:.2f} s") from err
            expected = min(length, info.frames - start)
            if block.shape[0] < expected:
                raise _bad(
                    source,
                    f"corrupt or truncated: decoding stopped at "
                    f"{(start + block.shape[0]) / rate:.2f} s of the {info.duration:.2f} s the "
                    "header announces",
                )
            _check_samples(source, block, allow_silent=True)
            window = torch.from_numpy(np.ascontiguousarray(block.T))  # (C, n)
            if mono and window.shape[0] > 1:
                window = window.mean(dim=0, keepdim=True)
            if pad_last and window.shape[1] < length:
                window = torch.nn.functional.pad(window, (0, length - window.shape[1]))
            if sample_rate is not None and sample_rate != rate:
                window = resample(window, rate, int(sample_rate), source=source)
            yield start / rate, window


def num_windows(frames: int, sample_rate: int, *, window_s: float, hop_s: float | None) -> int:
    """How many windows :func:`iter_audio_windows` yields for ``frames`` samples."""
    length = max(1, round(window_s * sample_rate))
    hop = max(1, round((hop_s or window_s) * sample_rate))
    return max(1, math.ceil(max(0, frames - length) / hop) + 1)


def read_segment(
    info: AudioInfo,
    *,
    start: int,
    num_samples: int,
    sample_rate: int | None = None,
    mono: bool = True,
) -> Tensor:
    """``num_samples`` samples (at ``sample_rate``, default the file's) starting at frame
    ``start`` of the file, read by seeking (only that part is decoded), resampled, zero-padded
    at the end when the file is shorter; ``(C, num_samples)`` float32.

    Raises:
        ValueError: naming the file: corrupt/truncated data or NaN/Inf samples.
    """
    source = Path(info.path)
    target = sample_rate or info.sample_rate
    # file frames needed for num_samples at the target rate (+1 for the resampler's rounding)
    frames = math.ceil(num_samples * info.sample_rate / target) + 1
    sf = _soundfile()
    try:
        with sf.SoundFile(os.fsencode(source)) as handle:
            handle.seek(min(max(0, start), max(0, info.frames - 1)))
            block = handle.read(frames, dtype="float32", always_2d=True)  # (n, C)
    except (RuntimeError, sf.LibsndfileError) as err:
        raise _decode_error(source, err) from err
    expected = min(frames, info.frames - start)
    if block.shape[0] < expected:
        raise _bad(source, f"corrupt or truncated: decoding stopped at frame {start + len(block)}")
    _check_samples(source, block, allow_silent=True)
    wave = torch.from_numpy(np.ascontiguousarray(block.T))  # (C, n)
    if mono and wave.shape[0] > 1:
        wave = wave.mean(dim=0, keepdim=True)
    wave = resample(wave, info.sample_rate, target, source=source)
    if wave.shape[1] < num_samples:
        wave = torch.nn.functional.pad(wave, (0, num_samples - wave.shape[1]))
    return wave[:, :num_samples]
