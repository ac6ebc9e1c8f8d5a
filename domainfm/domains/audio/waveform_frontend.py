"""The raw-waveform "front end" of waveform encoders (wav2vec 2.0, HuBERT).

Waveform encoders take the samples themselves: the front end only fixes the sample rate,
optionally normalizes each clip to zero mean and unit variance (fairseq's
``task.normalize``, torchaudio's ``_normalize_waveform``: ``True`` for the large/XLSR
wav2vec 2.0 models, ``False`` for the base models), and zero-pads clips shorter than
``min_samples`` (e.g. the 400-sample receptive field of wav2vec 2.0's first frame) at the
end, as the spectrogram front ends pad clips shorter than one window. It is registered in
:data:`~domainfm.domains.audio.frontends.FRONTENDS` as ``"waveform"`` so that an
:class:`~domainfm.domains.audio.contract.AudioContract` records it like any front end.

Shapes::

    waveform   (..., N)    mono samples at ``sample_rate``, in [-1, 1]
    output     (..., N')   the same samples (normalized if asked), N' = max(N, min_samples)

A waveform backbone takes ``output.unsqueeze(-2)``: ``(B, 1, N)``. One "frame" of this front
end is one sample (``hop_length`` 1, ``n_bins`` 1).

Example::

    >>> fe = WaveformFrontend(sample_rate=16000, min_samples=400)
    >>> fe(torch.zeros(2, 160)).shape
    torch.Size([2, 400])
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from domainfm.domains.audio.frontends import FRONTENDS, Frontend


@FRONTENDS.register("waveform")
class WaveformFrontend(Frontend):
    """Raw waveform, optionally normalized per clip (see the module docstring).

    Args:
        sample_rate: the model's rate (Hz); other rates are resampled to it.
        normalize: zero mean, unit variance per clip (layer norm over the samples).
        min_samples: clips shorter than this are zero-padded at the end to it.
        mean, std: accepted for the front-end interface (:meth:`Frontend.with_stats`);
            a scalar ``(x - mean) / std`` applied after ``normalize`` when both are given.
    """

    def __init__(
        self,
        *,
        sample_rate: int = 16000,
        normalize: bool = False,
        min_samples: int = 1,
        mean: float | None = None,
        std: float | None = None,
    ) -> None:
        super().__init__(sample_rate=sample_rate, hop_length=1, n_bins=1, mean=mean, std=std)
        if min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, got {min_samples}")
        self.normalize_clip = bool(normalize)
        self._min_samples = int(min_samples)

    @property
    def min_samples(self) -> int:
        return self._min_samples

    def forward(self, waveform: Tensor) -> Tensor:
        """``(..., N)`` → ``(..., max(N, min_samples))`` float samples."""
        x = self.pad_short(waveform.float())
        if self.normalize_clip:
            x = F.layer_norm(x, x.shape[-1:])
        return self.normalize(x)

    def num_frames(self, num_samples: int) -> int:
        return max(int(num_samples), self._min_samples)

    def num_samples(self, frames: int) -> int:
        return int(frames)
