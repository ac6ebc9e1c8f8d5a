"""Resampling with torchaudio's windowed-sinc resampler, its kernel cached per rate pair and
its memory estimated before it is allocated.

A file's declared rate decides the kernel: torchaudio builds ``new / g`` phases of about
``orig / g`` taps (``g`` the rates' greatest common divisor), so a 1 Hz or 44101 Hz header
asks for gigabytes. :func:`resample` checks :func:`resample_bytes` against the
per-allocation limit (:func:`~domainfm.core.size_guard.check_allocation`) first and names
the file.

Example::

    >>> resample(torch.zeros(1, 8000), 8000, 16000).shape
    torch.Size([1, 16000])
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from domainfm.core.size_guard import check_allocation


@functools.lru_cache(maxsize=16)
def _resampler(orig_rate: int, new_rate: int) -> Any:
    """torchaudio's resampler for a pair of rates, its sinc kernel computed once per
    process (``torchaudio.functional.resample`` recomputes it on every call)."""
    import torchaudio

    return torchaudio.transforms.Resample(orig_rate, new_rate)


def resample_bytes(channels: int, frames: int, orig_rate: int, new_rate: int) -> float:
    """Estimated peak bytes of :func:`resample`: torchaudio's sinc kernel (``new / g`` phases
    of ``2 * width + orig / g`` taps, ``g`` the rates' GCD, built in float64) and the
    convolution's float32 output, transposed and cut (about three copies)."""
    g = math.gcd(int(orig_rate), int(new_rate)) or 1
    orig, new = orig_rate // g, new_rate // g
    width = math.ceil(6 * orig / (min(orig, new) * 0.99))  # torchaudio's lowpass width 6
    kernel = float(new) * (2 * width + orig) * 8 * 3
    return kernel + float(channels) * math.ceil(frames * new_rate / orig_rate) * 4 * 3


def resample(
    waveform: Tensor, orig_rate: int, new_rate: int, *, source: str | Path | None = None
) -> Tensor:
    """``(C, N)`` at ``orig_rate`` → ``(C, ceil(N * new / orig))`` at ``new_rate``
    (torchaudio's windowed-sinc resampler, kernel cached; a no-op when the rates match).

    Raises:
        AllocationTooLarge: naming ``source``, when :func:`resample_bytes` exceeds the
            per-allocation limit (e.g. a file declaring a 1 Hz or a 44101 Hz rate).
    """
    if orig_rate == new_rate:
        return waveform
    check_allocation(
        resample_bytes(waveform.shape[0], waveform.shape[-1], orig_rate, new_rate),
        what=f"resampling {waveform.shape[-1]} samples from {orig_rate} Hz to {new_rate} Hz",
        source=source,
    )
    with torch.no_grad():
        out: Tensor = _resampler(int(orig_rate), int(new_rate))(waveform)
    return out
