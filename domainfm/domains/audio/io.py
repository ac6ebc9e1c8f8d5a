"""Audio files in: decoding with soundfile, resampling with torchaudio, long files in windows.

torchaudio 2.9 removed its own decoding (``torchaudio.load`` now defers to TorchCodec), so
files are decoded with **soundfile** (libsndfile: WAV, FLAC, OGG/Vorbis, Opus, MP3, AIFF,
...) and only resampled with ``torchaudio.functional.resample`` (windowed sinc).

* :func:`audio_info` — duration, rate, channels, frames and format, from the header only.
* :func:`load_audio` — the whole file as ``(C, N)`` float32 in ``[-1, 1]`` (integer PCM is
  scaled by soundfile), resampled when ``sample_rate`` is given.
* :func:`iter_audio_windows` — a long file in fixed windows, read block by block: memory
  is one window (plus the resampler's), never the file.

Every bad file gives one ``ValueError`` naming it and the problem — not recognised or
unsupported format, corrupt or truncated data (fewer frames than the header announces),
zero length, NaN/Inf samples, and (unless ``allow_silent=True``) an all-zero recording —
never a libsndfile trace or a NaN loss later.

Shapes::

    load_audio(path)                          (C, N) float32, sample rate
    iter_audio_windows(path, window_s=...)    yields (start_seconds, (C, n) float32)

Example::

    >>> wave, rate = load_audio("0_george_0.wav", sample_rate=16000)
    >>> wave.shape, rate
    (torch.Size([1, 4869]), 16000)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

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
        info = sf.info(str(source))
    except (RuntimeError, sf.LibsndfileError) as err:
        raise _bad(
            source,
            f"not a readable audio file ({err}); supported formats: WAV, FLAC, OGG/Vorbis, "
            "Opus, MP3, AIFF and others libsndfile decodes",
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


def _wav_declared_frames(source: Path) -> int | None:
    """Frames a RIFF/WAVE file's ``data`` chunk declares (libsndfile silently shortens a
    truncated WAV to the bytes present, so truncation shows only against the header);
    ``None`` for other formats or an unparseable header."""
    import struct

    with open(source, "rb") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        block_align = 0
        while True:
            chunk = handle.read(8)
            if len(chunk) < 8:
                return None
            name, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if name == b"fmt ":
                fmt = handle.read(size + size % 2)
                if len(fmt) < 14:
                    return None
                block_align = struct.unpack("<H", fmt[12:14])[0]
            elif name == b"data":
                # 0xFFFFFFFF: size unknown (streamed or RF64-style); nothing to compare
                if block_align <= 0 or size == 0xFFFFFFFF:
                    return None
                return int(size // block_align)
            else:
                handle.seek(size + size % 2, 1)


def _check_samples(source: Path, data: np.ndarray, *, allow_silent: bool) -> None:
    """NaN/Inf and (optionally) all-silent samples are refused, naming the file."""
    finite = np.isfinite(data)
    if not finite.all():
        bad = int(data.size - finite.sum())
        raise _bad(source, f"{bad} NaN/Inf samples; the file is corrupt or not audio")
    if not allow_silent and (data.size == 0 or float(np.abs(data).max()) < SILENCE_PEAK):
        raise _bad(
            source,
            "silent: every sample is zero (below -120 dBFS); pass allow_silent=True to keep it",
        )


@functools.lru_cache(maxsize=16)
def _resampler(orig_rate: int, new_rate: int) -> Any:
    """torchaudio's resampler for a pair of rates, its sinc kernel computed once per
    process (``torchaudio.functional.resample`` recomputes it on every call)."""
    import torchaudio

    return torchaudio.transforms.Resample(orig_rate, new_rate)


def resample(waveform: Tensor, orig_rate: int, new_rate: int) -> Tensor:
    """``(C, N)`` at ``orig_rate`` → ``(C, ceil(N * new / orig))`` at ``new_rate``
    (torchaudio's windowed-sinc resampler, kernel cached; a no-op when the rates match)."""
    if orig_rate == new_rate:
        return waveform
    with torch.no_grad():
        out: Tensor = _resampler(int(orig_rate), int(new_rate))(waveform)
    return out


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
        ValueError: naming the file: unreadable/unsupported, zero-length, truncated (fewer
            frames decoded than the header announces), NaN/Inf or silent samples.
    """
    source = Path(path)
    info = audio_info(source)
    sf = _soundfile()
    try:
        data, rate = sf.read(str(source), dtype="float32", always_2d=True)  # (N, C)
    except (RuntimeError, sf.LibsndfileError) as err:
        raise _bad(source, f"corrupt audio data ({err})") from err
    declared = max(info.frames, _wav_declared_frames(source) or 0)
    if data.shape[0] < declared:
        raise _bad(
            source,
            f"corrupt or truncated: the header announces {declared} frames but only "
            f"{data.shape[0]} could be decoded",
        )
    _check_samples(source, data, allow_silent=allow_silent)
    waveform = torch.from_numpy(np.ascontiguousarray(data.T))  # (C, N)
    if mono and waveform.shape[0] > 1:
        waveform = waveform.mean(dim=0, keepdim=True)
    if sample_rate is not None and sample_rate != rate:
        waveform = resample(waveform, int(rate), int(sample_rate))
        rate = sample_rate
    return waveform, int(rate)


def iter_audio_windows(
    path: str | Path,
    *,
    window_s: float,
    hop_s: float | None = None,
    sample_rate: int | None = None,
    mono: bool = True,
    pad_last: bool = True,
) -> Iterator[tuple[float, Tensor]]:
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
        ValueError: naming the file, as :func:`load_audio` (NaN/Inf checked per window;
            silence is allowed here: long recordings have quiet stretches).
    """
    source = Path(path)
    info = audio_info(source)
    if window_s <= 0 or (hop_s is not None and hop_s <= 0):
        raise ValueError(f"window_s={window_s}, hop_s={hop_s}: must be > 0")
    rate = info.sample_rate
    length = max(1, round(window_s * rate))
    hop = max(1, round((hop_s or window_s) * rate))
    starts = range(0, max(1, info.frames - length + hop), hop)
    sf = _soundfile()
    with sf.SoundFile(str(source)) as handle:
        for start in starts:
            if start >= info.frames:
                break
            handle.seek(start)
            try:
                block = handle.read(length, dtype="float32", always_2d=True)  # (n, C)
            except (RuntimeError, sf.LibsndfileError) as err:
                raise _bad(source, f"corrupt audio data at {start / rate:.2f} s ({err})") from err
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
                window = resample(window, rate, int(sample_rate))
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
        with sf.SoundFile(str(source)) as handle:
            handle.seek(min(max(0, start), max(0, info.frames - 1)))
            block = handle.read(frames, dtype="float32", always_2d=True)  # (n, C)
    except (RuntimeError, sf.LibsndfileError) as err:
        raise _bad(source, f"corrupt audio data ({err})") from err
    expected = min(frames, info.frames - start)
    if block.shape[0] < expected:
        raise _bad(source, f"corrupt or truncated: decoding stopped at frame {start + len(block)}")
    _check_samples(source, block, allow_silent=True)
    wave = torch.from_numpy(np.ascontiguousarray(block.T))  # (C, n)
    if mono and wave.shape[0] > 1:
        wave = wave.mean(dim=0, keepdim=True)
    wave = resample(wave, info.sample_rate, target)
    if wave.shape[1] < num_samples:
        wave = torch.nn.functional.pad(wave, (0, num_samples - wave.shape[1]))
    return wave[:, :num_samples]
