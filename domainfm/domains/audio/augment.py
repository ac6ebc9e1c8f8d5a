"""Spectrogram augmentations and BYOL-A's two-view pipeline, cheap enough for loader workers.

All operate on one normalized log-mel ``(C, F, T)`` and take an explicit
``torch.Generator`` (seeded per sample by the data module), so runs are reproducible and
resumable.

* :class:`SpecAugment` — time and frequency masking (Park et al. 2019, arXiv:1904.08779)
  with torchaudio's ``TimeMasking``/``FrequencyMasking`` maths: ``num_masks`` bands of
  width ``U[0, max_width)`` at uniform offsets, filled with ``fill`` (default the mean, 0
  for a normalized input).
* :class:`MixupBYOLA` — BYOL-A's mixup with a memory of past inputs (Niizumi et al. 2021,
  arXiv:2103.06695 §3.2): ``λ ~ U[0, ratio)``, ``z`` a random past input; the mix is
  ``log((1 - λ) exp(x) + λ exp(z) + eps)`` ("log-mixup-exp", on the *log*-mel) — the input
  is always pushed into the FIFO memory afterwards.
* :class:`RandomResizeCrop` — BYOL-A's random resize crop: the input is centred on a canvas
  ``virtual_crop_scale`` times its size (zeros around it), a crop of ``U(freq_scale) × F``
  by ``U(time_scale) × T`` is taken at a uniform offset and resized back to ``(F, T)``
  (bicubic, ``align_corners=True``).
* :class:`FrameAlignedViews` — two views that keep every frame at its time position (for
  frame-level objectives pairing tokens or frames across views): mixup with the memory,
  a random resize crop along **frequency only** (the time axis is copied exactly) and
  optional SpecAugment frequency masking.
* :class:`BYOLAViews` — two views of one segment: each ``RandomResizeCrop(MixupBYOLA(x))``
  on the pre-normalized log-mel; BYOL-A's post-normalization (standardizing each batch of
  views) is :func:`normalize_batch`, applied in the collate function.

Example::

    >>> views = BYOLAViews()
    >>> v1, v2 = views(torch.randn(1, 64, 96), torch.Generator().manual_seed(0))
    >>> v1.shape
    torch.Size([1, 64, 96])
"""

from __future__ import annotations

import collections

import torch
import torch.nn.functional as F
from torch import Tensor


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


class SpecAugment:
    """Frequency and time masking of a ``(C, F, T)`` spectrogram.

    Args:
        freq_mask: largest frequency-band width (bins); 0 disables.
        time_mask: largest time-band width (frames); 0 disables.
        num_masks: bands of each kind.
        fill: value written into the bands (``None``: the spectrogram's mean).
    """

    def __init__(
        self,
        *,
        freq_mask: int = 8,
        time_mask: int = 20,
        num_masks: int = 2,
        fill: float | None = 0.0,
    ) -> None:
        if freq_mask < 0 or time_mask < 0 or num_masks < 0:
            raise ValueError("freq_mask, time_mask and num_masks must be >= 0")
        self.freq_mask, self.time_mask, self.num_masks, self.fill = (
            freq_mask,
            time_mask,
            num_masks,
            fill,
        )

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        out = x.clone()
        value = float(x.mean()) if self.fill is None else self.fill
        for axis, width in ((-2, self.freq_mask), (-1, self.time_mask)):
            size = x.shape[axis]
            for _ in range(self.num_masks if width > 0 else 0):
                w = int(_uniform(0, min(width, size), generator))
                start = int(_uniform(0, size - w, generator))
                out.narrow(axis, start, w).fill_(value)
        return out


class MixupBYOLA:
    """BYOL-A's mixup with a FIFO memory of past inputs (see the module docstring).

    Args:
        ratio: largest mixing weight λ of the memory sample.
        memory: FIFO length (per worker process).
        log_mixup_exp: mix in the linear domain of a log-mel (BYOL-A's default); ``False``:
            plain linear mix of the given values.
    """

    def __init__(self, *, ratio: float = 0.4, memory: int = 2048, log_mixup_exp: bool = True):
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"ratio={ratio}: must be in [0, 1]")
        self.ratio = ratio
        self.memory: collections.deque[Tensor] = collections.deque(maxlen=memory)
        self.log_mixup_exp = log_mixup_exp

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        lam = self.ratio * float(torch.rand((), generator=generator))
        if self.memory:
            z = self.memory[int(torch.randint(len(self.memory), (), generator=generator))]
            if z.shape != x.shape:  # a segment of another length: nothing to mix with
                mixed = x
            elif self.log_mixup_exp:
                linear = (1.0 - lam) * x.exp() + lam * z.exp()
                mixed = torch.log(linear + torch.finfo(linear.dtype).eps)
            else:
                mixed = (1.0 - lam) * x + lam * z
        else:
            mixed = x
        self.memory.append(x)
        return mixed


class RandomResizeCrop:
    """BYOL-A's random resize crop on the time–frequency plane (see the module docstring).

    Args:
        virtual_crop_scale: canvas size relative to the input, ``(F, T)`` factors >= 1.
        freq_scale: range of the crop's height relative to ``F``.
        time_scale: range of the crop's width relative to ``T``.
    """

    def __init__(
        self,
        *,
        virtual_crop_scale: tuple[float, float] = (1.0, 1.5),
        freq_scale: tuple[float, float] = (0.6, 1.5),
        time_scale: tuple[float, float] = (0.6, 1.5),
    ) -> None:
        if min(virtual_crop_scale) < 1.0:
            raise ValueError(f"virtual_crop_scale={virtual_crop_scale}: factors must be >= 1")
        self.virtual_crop_scale = virtual_crop_scale
        self.freq_scale = freq_scale
        self.time_scale = time_scale

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        channels, height, width = x.shape
        canvas_h = int(height * self.virtual_crop_scale[0])
        canvas_w = int(width * self.virtual_crop_scale[1])
        canvas = x.new_zeros(channels, canvas_h, canvas_w)
        top, left = (canvas_h - height) // 2, (canvas_w - width) // 2
        canvas[:, top : top + height, left : left + width] = x
        h = min(max(int(_uniform(*self.freq_scale, generator) * height), 1), canvas_h)
        w = min(max(int(_uniform(*self.time_scale, generator) * width), 1), canvas_w)
        i = int(torch.randint(0, canvas_h - h + 1, (), generator=generator))
        j = int(torch.randint(0, canvas_w - w + 1, (), generator=generator))
        crop = canvas[None, :, i : i + h, j : j + w]  # (1, C, h, w)
        out = F.interpolate(crop, size=(height, width), mode="bicubic", align_corners=True)
        return out[0]


class BYOLAViews:
    """Two BYOL-A views of a pre-normalized log-mel ``(C, F, T)``.

    Args:
        mixup_ratio: :class:`MixupBYOLA` ratio (0 disables mixup).
        memory: mixup memory length.
        virtual_crop_scale, freq_scale, time_scale: :class:`RandomResizeCrop` settings.
    """

    def __init__(
        self,
        *,
        mixup_ratio: float = 0.4,
        memory: int = 2048,
        virtual_crop_scale: tuple[float, float] = (1.0, 1.5),
        freq_scale: tuple[float, float] = (0.6, 1.5),
        time_scale: tuple[float, float] = (0.6, 1.5),
    ) -> None:
        self.mixup = MixupBYOLA(ratio=mixup_ratio, memory=memory) if mixup_ratio > 0 else None
        self.crop = RandomResizeCrop(
            virtual_crop_scale=virtual_crop_scale, freq_scale=freq_scale, time_scale=time_scale
        )

    def __call__(self, x: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        views = []
        for _ in range(2):
            v = self.mixup(x, generator) if self.mixup is not None else x
            views.append(self.crop(v, generator))
        return views[0], views[1]


class FrameAlignedViews:
    """Two time-aligned views of a ``(C, F, T)`` log-mel (see the module docstring).

    Args:
        mixup_ratio: :class:`MixupBYOLA` ratio (0 disables mixup).
        memory: mixup memory length.
        freq_scale: range of the frequency crop's height relative to ``F``.
        virtual_freq_scale: frequency size of the zero canvas relative to ``F`` (BYOL-A's 1.5).
        freq_mask: largest SpecAugment frequency band (0: none).
    """

    def __init__(
        self,
        *,
        mixup_ratio: float = 0.4,
        memory: int = 2048,
        freq_scale: tuple[float, float] = (0.6, 1.5),
        virtual_freq_scale: float = 1.5,
        freq_mask: int = 0,
    ) -> None:
        self.mixup = MixupBYOLA(ratio=mixup_ratio, memory=memory) if mixup_ratio > 0 else None
        self.crop = RandomResizeCrop(
            virtual_crop_scale=(virtual_freq_scale, 1.0),
            freq_scale=freq_scale,
            time_scale=(1.0, 1.0),
        )
        self.mask = SpecAugment(freq_mask=freq_mask, time_mask=0) if freq_mask > 0 else None

    def __call__(self, x: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        views = []
        for _ in range(2):
            v = self.mixup(x, generator) if self.mixup is not None else x
            v = self.crop(v, generator)  # time_scale 1 and no time canvas: frames stay put
            views.append(self.mask(v, generator) if self.mask is not None else v)
        return views[0], views[1]


def normalize_batch(x: Tensor, eps: float = float(torch.finfo(torch.float32).eps)) -> Tensor:
    """BYOL-A's post-normalization: standardize a batch ``(B, C, F, T)`` per channel over
    the batch and both axes (``std`` clamped at ``eps``)."""
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    std = x.std(dim=(0, 2, 3), keepdim=True).clamp(min=eps)
    return (x - mean) / std
