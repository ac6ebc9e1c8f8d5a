"""Front ends of released audio models whose features differ from the two base front ends.

Each is a registered variant of a base front end in :mod:`~domainfm.domains.audio.frontends`
(recorded in checkpoints and exports like them), reproducing a release's own feature
extraction exactly: the variant sets the base's filter options (class attributes) and its own
defaults; the feature computation is the base's:

* :class:`BEATsFbankFrontend` (``"beats_fbank"``) — BEATs (Chen et al. 2022,
  arXiv:2212.09058; microsoft/unilm ``beats/BEATs.py``, ``BEATs.preprocess``): the waveform
  in ``[-1, 1]`` is scaled by ``2**15`` (16-bit integer range) and passed to
  ``torchaudio.compliance.kaldi.fbank`` with 128 mel bins, 25 ms windows every 10 ms and
  Kaldi's **defaults** otherwise (Povey window, pre-emphasis 0.97, per-frame DC removal, no
  dither, no HTK compatibility, no mean subtraction of the waveform); normalized
  ``(x - 15.41663) / (2 * 6.55582)``. :class:`~domainfm.domains.audio.frontends.
  KaldiFbankFrontend` (AST's) differs in its Hanning window, HTK compatibility and the missing
  ``2**15`` scale, so it is not BEATs'.
* :class:`SlaneyLogMelFrontend` (``"log_mel_slaney"``) — M2D (Niizumi et al. 2022,
  arXiv:2210.14648; nttcslab/m2d ``m2d/runtime_audio.py``, ``get_to_melspec`` /
  ``to_feature``): nnAudio ``MelSpectrogram(sr=16000, n_fft=400, win_length=400,
  hop_length=160, n_mels=80, fmin=50, fmax=8000, center=True, power=2)`` whose defaults are
  librosa's Slaney mel scale and Slaney (area) filter normalization (nnAudio ``features/
  mel.py``: ``htk=False, norm=1``), periodic Hann window and reflect padding; then
  ``log(x + eps)`` with the float32 epsilon and ``(x - mean) / std``. torchaudio's
  ``MelSpectrogram`` with ``mel_scale="slaney", norm="slaney"`` computes the same filters;
  :class:`~domainfm.domains.audio.frontends.LogMelFrontend` (BYOL-A's) uses the HTK scale
  without normalization.

Example::

    >>> BEATsFbankFrontend()(torch.zeros(2, 16000)).shape
    torch.Size([2, 128, 98])
    >>> SlaneyLogMelFrontend(mean=-7.1, std=4.2)(torch.zeros(2, 16000)).shape
    torch.Size([2, 80, 101])
"""

from __future__ import annotations

from domainfm.domains.audio.frontends import (
    FLOAT32_EPS,
    FRONTENDS,
    KaldiFbankFrontend,
    LogMelFrontend,
)

BEATS_FBANK_MEAN = 15.41663
"""BEATs' fbank mean (``BEATs.preprocess`` default ``fbank_mean``)."""
BEATS_FBANK_STD = 6.55582
"""BEATs' fbank standard deviation (``BEATs.preprocess`` default ``fbank_std``)."""
INT16_SCALE = 2.0**15
"""BEATs scales the ``[-1, 1]`` waveform to the 16-bit integer range before the fbank."""


@FRONTENDS.register("beats_fbank")
class BEATsFbankFrontend(KaldiFbankFrontend):
    """BEATs' Kaldi fbank (see the module docstring); ``(..., N)`` → ``(..., F, T)``.

    Arguments as :class:`~domainfm.domains.audio.frontends.KaldiFbankFrontend`'s, with BEATs'
    statistics as the default normalization ``(x - mean) / (2 std)``.
    """

    window_type = "povey"
    htk_compat = False
    remove_waveform_mean = False
    waveform_scale = INT16_SCALE

    def __init__(
        self,
        *,
        sample_rate: int = 16000,
        num_mel_bins: int = 128,
        frame_length_ms: float = 25.0,
        frame_shift_ms: float = 10.0,
        mean: float | None = BEATS_FBANK_MEAN,
        std: float | None = BEATS_FBANK_STD,
    ) -> None:
        super().__init__(
            sample_rate=sample_rate,
            num_mel_bins=num_mel_bins,
            frame_length_ms=frame_length_ms,
            frame_shift_ms=frame_shift_ms,
            mean=mean,
            std=std,
        )


@FRONTENDS.register("log_mel_slaney")
class SlaneyLogMelFrontend(LogMelFrontend):
    """M2D's log-mel: Slaney mel scale and area-normalized filters (see the module docstring).

    Arguments as :class:`~domainfm.domains.audio.frontends.LogMelFrontend`'s, with M2D's
    defaults (400-sample FFT and window, 80 mels from 50 to 8000 Hz).
    """

    mel_scale = "slaney"
    mel_norm = "slaney"

    def __init__(
        self,
        *,
        sample_rate: int = 16000,
        n_fft: int = 400,
        win_length: int = 400,
        hop_length: int = 160,
        n_mels: int = 80,
        f_min: float = 50.0,
        f_max: float = 8000.0,
        mean: float | None = None,
        std: float | None = None,
        eps: float = FLOAT32_EPS,
    ) -> None:
        super().__init__(
            sample_rate=sample_rate,
            n_fft=n_fft,
            win_length=win_length,
            hop_length=hop_length,
            n_mels=n_mels,
            f_min=f_min,
            f_max=f_max,
            mean=mean,
            std=std,
            eps=eps,
        )
