"""Audio front ends: waveform → normalized time–frequency "image", as modules that travel with
the checkpoint config.

Each front end is registered in :data:`FRONTENDS` and records its constructor arguments, so
a data module writes ``init_config(frontend)`` into the checkpoint's input contract and
``domainfm export`` / the HEAR wrapper rebuild the exact same features later.

* :class:`LogMelFrontend` — BYOL-A's log-mel (Niizumi et al. 2021, arXiv:2103.06695):
  torchaudio ``MelSpectrogram`` (16 kHz, ``n_fft`` 1024, window 1024, hop 160 = 10 ms,
  64 mels, 60–7800 Hz, power 2) then ``log(x + eps)`` with ``eps`` the float32 machine
  epsilon; normalized ``(x - mean) / std`` with scalar dataset statistics.
* :class:`KaldiFbankFrontend` — AST/SSAST/AudioMAE's Kaldi fbank (Gong et al. 2021,
  arXiv:2104.01778; Huang et al. 2022, arXiv:2207.06405): ``torchaudio.compliance.kaldi.
  fbank`` with HTK-compatible 128 mel bins, 25 ms Hanning windows every 10 ms, no energy,
  no dither, on the waveform minus its mean; normalized ``(x - mean) / (2 std)`` with
  AudioSet's mean ``-4.2677393`` and std ``4.5689974`` by default (AST's recipe).

Shapes::

    waveform   (..., N)        mono samples at ``sample_rate`` (any leading dims)
    output     (..., F, T)     F mel bins, T frames (10 ms apart)

Short clips are zero-padded, never refused: a waveform shorter than the shortest input the
front end's framing takes (:attr:`Frontend.min_samples`: ``n_fft // 2 + 1`` samples for
the centered STFT of the log-mel, whose reflect padding needs more than ``n_fft // 2``:
513 samples, 32 ms at 16 kHz; one 25 ms window, 400 samples, for the Kaldi fbank) is
zero-padded at the end to that length, as BYOL-A and the HEAR baselines pad short clips.
The frame count stays :meth:`Frontend.num_frames` of the original length (the log-mel
keeps its first ``1 + N // hop_length`` frames), so data modules, ``domainfm sed`` and
HEAR embeddings see a clip of any length >= 1 sample. An empty waveform (``N = 0``) is
refused with a ``ValueError``.

:func:`compute_frontend_stats` computes the scalar mean/std of a front end's (un-normalized)
features over a folder's files once (BYOL-A computes them per dataset), cached as JSON.

Example::

    >>> frontend = LogMelFrontend(mean=-7.1, std=4.2)
    >>> frontend(torch.zeros(2, 16000)).shape
    torch.Size([2, 64, 101])
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from domainfm.core.checkpoint_io import atomic_write_json
from domainfm.core.registry import Registry, init_config
from domainfm.domains.audio.io import iter_audio_windows

FRONTENDS: Registry[type] = Registry("audio front end", record_init=True)

FLOAT32_EPS = float(torch.finfo(torch.float32).eps)
AUDIOSET_FBANK_MEAN = -4.2677393
"""AST's AudioSet mean of the Kaldi fbank features."""
AUDIOSET_FBANK_STD = 4.5689974
"""AST's AudioSet standard deviation of the Kaldi fbank features."""

FrontendT = TypeVar("FrontendT", bound="type[Frontend]")


class Frontend(nn.Module):
    """Base of the front ends: the rate, the normalization and the frame hop (what data
    modules, HEAR and SED rely on)."""

    sample_rate: int
    hop_length: int
    n_bins: int
    mean: float | None
    std: float | None
    norm_scale: float = 1.0  # features are (x - mean) / (norm_scale * std)

    def __init__(
        self,
        *,
        sample_rate: int,
        hop_length: int,
        n_bins: int,
        mean: float | None,
        std: float | None,
    ) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.hop_length = hop_length
        self.n_bins = n_bins
        self.mean, self.std = mean, std

    def normalize(self, x: Tensor) -> Tensor:
        """Un-normalized features → this front end's normalized ones (unchanged without
        statistics)."""
        if self.mean is None or self.std is None:
            return x
        return (x - self.mean) / (self.norm_scale * max(self.std, 1e-12))

    def with_stats(self, mean: float | None, std: float | None) -> Frontend:
        """A copy of this front end normalizing with ``mean``/``std`` (``None``: raw)."""

        kwargs = init_config(self)["kwargs"]
        kwargs.update(mean=mean, std=std)
        copy: Frontend = type(self)(**kwargs)
        return copy

    @property
    def min_samples(self) -> int:
        """The fewest samples the framing takes; shorter waveforms are zero-padded to it."""
        raise NotImplementedError

    def pad_short(self, waveform: Tensor) -> Tensor:
        """``waveform`` ``(..., N)`` zero-padded at the end to :attr:`min_samples` when
        shorter (see the module docstring).

        Raises:
            ValueError: an empty waveform (``N = 0``).
        """
        count = waveform.shape[-1]
        if count == 0:
            raise ValueError(
                f"{type(self).__name__}: empty waveform {tuple(waveform.shape)}; a front end "
                "needs at least one sample"
            )
        if count < self.min_samples:
            waveform = nn.functional.pad(waveform, (0, self.min_samples - count))
        return waveform

    def num_frames(self, num_samples: int) -> int:
        """Frames for ``num_samples`` samples."""
        raise NotImplementedError

    def num_samples(self, frames: int) -> int:
        """The fewest samples giving ``frames`` frames."""
        raise NotImplementedError


def variant_defaults(**defaults: Any) -> Callable[[FrontendT], FrontendT]:
    """Class decorator of a front-end variant whose constructor is its base's with other
    defaults for the arguments named in ``defaults``.

    The variant's ``__init__`` takes the base's arguments (typed as the base's) and carries
    the new defaults in its signature, so that registering it (``@FRONTENDS.register``,
    applied after this decorator) records them as an ``__init__`` of its own would.

    Raises:
        TypeError: a name in ``defaults`` is not an argument of the base's constructor.
    """

    def decorate(cls: FrontendT) -> FrontendT:
        base_init = cls.__init__
        signature = inspect.signature(base_init)
        unknown = sorted(set(defaults) - set(signature.parameters))
        if unknown:
            raise TypeError(f"{cls.__name__}: its base takes no argument(s) {unknown}")
        variant_signature = signature.replace(
            parameters=[
                p.replace(default=defaults.get(p.name, p.default))
                for p in signature.parameters.values()
            ]
        )

        @functools.wraps(base_init)  # the base's annotations and documentation
        def __init__(self: Frontend, **kwargs: Any) -> None:
            base_init(self, **{**defaults, **kwargs})

        __init__.__signature__ = variant_signature  # type: ignore[attr-defined]
        __init__.__qualname__ = f"{cls.__qualname__}.__init__"
        cls.__init__ = __init__  # type: ignore[method-assign]
        return cls

    return decorate


@FRONTENDS.register("log_mel")
class LogMelFrontend(Frontend):
    """BYOL-A log-mel spectrogram (see the module docstring).

    Args:
        sample_rate: input rate (Hz).
        n_fft: FFT size.
        win_length: window length (samples).
        hop_length: hop (samples); 160 at 16 kHz is 10 ms.
        n_mels: mel bins ``F``.
        f_min, f_max: mel range (Hz).
        mean, std: scalar normalization (``None``: un-normalized log-mel).
        eps: added before the log.

    Subclasses (registered variants) set :attr:`mel_scale` and :attr:`mel_norm`, the
    torchaudio ``MelSpectrogram`` filter options (BYOL-A's: HTK scale, no normalization).
    """

    mel_scale: str = "htk"
    mel_norm: str | None = None

    def __init__(
        self,
        *,
        sample_rate: int = 16000,
        n_fft: int = 1024,
        win_length: int = 1024,
        hop_length: int = 160,
        n_mels: int = 64,
        f_min: float = 60.0,
        f_max: float = 7800.0,
        mean: float | None = None,
        std: float | None = None,
        eps: float = FLOAT32_EPS,
    ) -> None:
        super().__init__(
            sample_rate=sample_rate, hop_length=hop_length, n_bins=n_mels, mean=mean, std=std
        )
        import torchaudio

        self.eps = eps
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=n_fft,
            win_length=win_length,
            hop_length=hop_length,
            n_mels=n_mels,
            f_min=f_min,
            f_max=f_max,
            norm=self.mel_norm,
            mel_scale=self.mel_scale,
        )

    @property
    def min_samples(self) -> int:
        return int(self.mel.n_fft) // 2 + 1  # the centered STFT's reflect padding needs more

    def forward(self, waveform: Tensor) -> Tensor:
        """``(..., N)`` → ``(..., n_mels, 1 + N // hop)`` (a clip shorter than
        :attr:`min_samples` is zero-padded at the end, then the first ``1 + N // hop``
        frames kept)."""
        count = waveform.shape[-1]
        x = (self.mel(self.pad_short(waveform.float())) + self.eps).log()
        return self.normalize(x[..., : self.num_frames(count)])

    def num_frames(self, num_samples: int) -> int:
        return 1 + num_samples // self.hop_length  # centered STFT

    def num_samples(self, frames: int) -> int:
        return (frames - 1) * self.hop_length


@FRONTENDS.register("kaldi_fbank")
class KaldiFbankFrontend(Frontend):
    """AST/SSAST/AudioMAE Kaldi fbank (see the module docstring).

    Args:
        sample_rate: input rate (Hz).
        num_mel_bins: mel bins ``F``.
        frame_length_ms, frame_shift_ms: window and hop (ms).
        mean, std: normalization ``(x - mean) / (2 std)`` (AST's); ``None``: raw fbank.

    Subclasses (registered variants) set the Kaldi options below (AST's: Hanning window, HTK
    compatibility, the waveform's mean removed, no scaling).
    """

    norm_scale = 2.0  # AST normalizes by twice the std
    window_type: str = "hanning"
    htk_compat: bool = True
    remove_waveform_mean: bool = True
    waveform_scale: float = 1.0  # the waveform is multiplied by this before the fbank

    def __init__(
        self,
        *,
        sample_rate: int = 16000,
        num_mel_bins: int = 128,
        frame_length_ms: float = 25.0,
        frame_shift_ms: float = 10.0,
        mean: float | None = AUDIOSET_FBANK_MEAN,
        std: float | None = AUDIOSET_FBANK_STD,
    ) -> None:
        super().__init__(
            sample_rate=sample_rate,
            hop_length=round(sample_rate * frame_shift_ms / 1000),
            n_bins=num_mel_bins,
            mean=mean,
            std=std,
        )
        self.frame_length_ms = frame_length_ms
        self.frame_shift_ms = frame_shift_ms

    def _one(self, waveform: Tensor) -> Tensor:
        from torchaudio.compliance.kaldi import fbank

        if self.remove_waveform_mean:
            waveform = waveform - waveform.mean()
        if self.waveform_scale != 1.0:
            waveform = waveform * self.waveform_scale
        feats = fbank(
            waveform[None],
            htk_compat=self.htk_compat,
            sample_frequency=self.sample_rate,
            use_energy=False,
            window_type=self.window_type,
            num_mel_bins=self.n_bins,
            dither=0.0,
            frame_length=self.frame_length_ms,
            frame_shift=self.frame_shift_ms,
        )  # (T, F)
        return feats.T  # (F, T)

    @property
    def num_window_samples(self) -> int:
        return round(self.sample_rate * self.frame_length_ms / 1000)

    @property
    def min_samples(self) -> int:
        return self.num_window_samples  # one window: one frame

    def forward(self, waveform: Tensor) -> Tensor:
        """``(..., N)`` → ``(..., num_mel_bins, T)`` (Kaldi framing, no padding at the ends;
        a clip shorter than one window is zero-padded to one window: one frame)."""
        lead = waveform.shape[:-1]
        waveform = self.pad_short(waveform.float())
        flat = waveform.reshape(-1, waveform.shape[-1])  # (M, N)
        out = torch.stack([self._one(w) for w in flat])  # (M, F, T)
        return self.normalize(out.reshape(*lead, *out.shape[1:]))

    def num_frames(self, num_samples: int) -> int:
        n = max(num_samples, self.num_window_samples)
        return 1 + (n - self.num_window_samples) // self.hop_length

    def num_samples(self, frames: int) -> int:
        return self.num_window_samples + (frames - 1) * self.hop_length


def build_frontend(config: dict[str, Any]) -> Frontend:
    """A front end from ``{"architecture": name, "kwargs": {...}}`` (as recorded)."""
    frontend: Frontend = FRONTENDS.get(config["architecture"])(**config["kwargs"])
    return frontend


def compute_frontend_stats(
    files: Sequence[str | Path],
    frontend: Frontend,
    *,
    max_seconds_per_file: float = 10.0,
    cache: str | Path | None = None,
    on_bad: Callable[[str, str], None] | None = None,
) -> tuple[float, float]:
    """Scalar mean/std of ``frontend``'s un-normalized features over ``files`` (at most the
    first ``max_seconds_per_file`` of each, resampled to the front end's rate), as BYOL-A
    normalizes. A file that fails its checks (:func:`~domainfm.domains.audio.io.
    iter_audio_windows`: container, decoding, NaN/Inf) raises, naming the file; with
    ``on_bad`` it is instead left out and reported as ``on_bad(path, reason)``. With
    ``cache``, the result is stored as JSON keyed by the files and the front end's config
    and reused."""

    raw = frontend.with_stats(None, None)
    key = {
        "files": sorted(str(Path(f).resolve()) for f in files),
        "frontend": init_config(raw),
        "max_seconds_per_file": max_seconds_per_file,
    }
    if cache is not None and Path(cache).is_file():
        stored = json.loads(Path(cache).read_text())
        if stored.get("key") == key:
            return float(stored["mean"]), float(stored["std"])
    total, total_sq, count = 0.0, 0.0, 0
    for path in files:
        windows = iter_audio_windows(
            path, window_s=max_seconds_per_file, sample_rate=frontend.sample_rate, pad_last=False
        )
        try:
            _, window = next(windows)  # the first window only
        except ValueError as err:
            if on_bad is None:
                raise
            on_bad(str(path), str(err))
            continue
        finally:
            windows.close()
        feats = raw(window[0]).double()  # (F, T)
        total += float(feats.sum())
        total_sq += float((feats**2).sum())
        count += feats.numel()
    if count == 0:
        raise ValueError("no audio decoded: cannot compute front-end statistics")
    mean = total / count
    std = max(total_sq / count - mean**2, 0.0) ** 0.5
    if cache is not None:
        atomic_write_json(cache, {"key": key, "mean": mean, "std": std})
    return mean, std
