"""Front ends of released audio models whose features differ from the two base front ends.

Each is a registered variant of a base front end in :mod:`~domainfm.domains.audio.frontends`
(recorded in checkpoints and exports like them), reproducing a release's own feature
extraction exactly: the variant sets the base's filter options (class attributes) and its own
defaults (:func:`~domainfm.domains.audio.frontends.variant_defaults`); the feature
computation is the base's:

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
    FRONTENDS,
    KaldiFbankFrontend,
    LogMelFrontend,
    variant_defaults,
)

BEATS_FBANK_MEAN = 15.41663
"""BEATs' fbank mean (``BEATs.preprocess`` default ``fbank_mean``)."""
BEATS_FBANK_STD = 6.55582
"""BEATs' fbank standard deviation (``BEATs.preprocess`` default ``fbank_std``)."""
INT16_SCALE = 2.0**15
"""BEATs scales the ``[-1, 1]`` waveform to the 16-bit integer range before the fbank."""


@FRONTENDS.register("beats_fbank")
@variant_defaults(mean=BEATS_FBANK_MEAN, std=BEATS_FBANK_STD)
class BEATsFbankFrontend(KaldiFbankFrontend):
    """BEATs' Kaldi fbank (see the module docstring); ``(..., N)`` → ``(..., F, T)``.

    Arguments as :class:`~domainfm.domains.audio.frontends.KaldiFbankFrontend`'s, with BEATs'
    statistics as the default normalization ``(x - mean) / (2 std)``.
    """

    window_type = "povey"
    htk_compat = False
    remove_waveform_mean = False
    waveform_scale = INT16_SCALE


@FRONTENDS.register("log_mel_slaney")
@variant_defaults(n_fft=400, win_length=400, n_mels=80, f_min=50.0, f_max=8000.0)
class SlaneyLogMelFrontend(LogMelFrontend):
    """M2D's log-mel: Slaney mel scale and area-normalized filters (see the module docstring).

    Arguments as :class:`~domainfm.domains.audio.frontends.LogMelFrontend`'s, with M2D's
    defaults (400-sample FFT and window, 80 mels from 50 to 8000 Hz).
    """

    mel_scale = "slaney"
    mel_norm = "slaney"
