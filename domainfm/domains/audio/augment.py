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
  is always pushed into the FIFO memory afterwards. Each entry may carry a *key*: what
  identifies the input (the data set's file and segment start), so that the memory can be
  saved as its keys alone and restored exactly (see "Exact resume" below).
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

**Exact resume.** The memory lives in each loader worker and shapes every later view, so
a resumed run is exact only if each worker resumes with the memory it had. Saving the
tensors would be costly (the loader snapshots its workers' state after every batch), so
:meth:`MixupBYOLA.state_dict` holds the entries' keys only. After
:meth:`MixupBYOLA.load_state_dict` the entries have keys but no tensors; an entry that a
draw picks is recomputed from its key by the ``recompute`` callback the data set supplies
(bit-identical to the original input) and kept. Draws, generator use and memory contents
are the same as in an uninterrupted run; the view makers pass both on
(:meth:`BYOLAViews.state_dict`, :meth:`FrameAlignedViews.state_dict`).

Example::

    >>> views = BYOLAViews()
    >>> v1, v2 = views(torch.randn(1, 64, 96), torch.Generator().manual_seed(0))
    >>> v1.shape
    torch.Size([1, 64, 96])
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

MemoryKey = tuple[int, ...]
"""What identifies a pre-mixup input to its data set (e.g. ``(file, start)``)."""

Recompute = Callable[[MemoryKey], Tensor]
"""The data set's callback: the pre-mixup input of a key, bit-identical to the original."""


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

    Attributes:
        memory: the past inputs (``None`` for a restored entry not recomputed yet).
        keys: each entry's key (``None`` when the caller gave none), aligned with
            ``memory``.
    """

    def __init__(self, *, ratio: float = 0.4, memory: int = 2048, log_mixup_exp: bool = True):
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"ratio={ratio}: must be in [0, 1]")
        self.ratio = ratio
        self.memory: collections.deque[Tensor | None] = collections.deque(maxlen=memory)
        self.keys: collections.deque[MemoryKey | None] = collections.deque(maxlen=memory)
        self.log_mixup_exp = log_mixup_exp
        self.recompute: Recompute | None = None

    def __call__(
        self, x: Tensor, generator: torch.Generator, key: MemoryKey | None = None
    ) -> Tensor:
        """The mix of ``x`` with a random past input; ``x`` is then remembered under ``key``
        (needed for :meth:`state_dict`)."""
        lam = self.ratio * float(torch.rand((), generator=generator))
        if self.memory:
            z = self._recall(int(torch.randint(len(self.memory), (), generator=generator)))
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
        self.keys.append(key)
        return mixed

    def _recall(self, i: int) -> Tensor:
        """Memory entry ``i``, recomputed from its key (and kept) after a restore."""
        z = self.memory[i]
        if z is not None:
            return z
        key = self.keys[i]
        if self.recompute is None or key is None:
            raise RuntimeError("a restored mixup memory entry has no way to be recomputed")
        z = self.recompute(key)
        for j in (i - 1, i, i + 1):  # the entries of one input are adjacent (two views)
            if 0 <= j < len(self.memory) and self.memory[j] is None and self.keys[j] == key:
                self.memory[j] = z
        return z

    def state_dict(self) -> dict[str, list[list[int]]]:
        """The memory as its entries' keys, oldest first (small: no tensors)."""
        if any(key is None for key in self.keys):
            raise ValueError(
                "the mixup memory holds inputs without keys: its state cannot be saved "
                "(pass key= to the mixup)"
            )
        return {"keys": [list(key) for key in self.keys if key is not None]}

    def load_state_dict(self, state: dict[str, Any], recompute: Recompute) -> None:
        """Restore the memory saved by :meth:`state_dict`; an entry's input is computed by
        ``recompute(key)`` when a draw first picks it."""
        keys = [tuple(int(v) for v in key) for key in state["keys"]]
        self.memory.clear()
        self.keys.clear()
        self.memory.extend([None] * len(keys))
        self.keys.extend(keys)
        self.recompute = recompute


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


class _MixupViews:
    """Base of the two-view makers: each view is the input mixed with the memory (when the
    maker has a mixup) and then augmented by the maker (:meth:`augment`); the saved state is
    the mixup memory's keys (exact resume)."""

    mixup: MixupBYOLA | None

    def augment(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """One view of the mixed input ``x`` ``(C, F, T)``."""
        raise NotImplementedError

    def __call__(
        self, x: Tensor, generator: torch.Generator, key: MemoryKey | None = None
    ) -> tuple[Tensor, Tensor]:
        """The two views of ``x`` (remembered under ``key`` by the mixup)."""
        views = []
        for _ in range(2):
            v = self.mixup(x, generator, key) if self.mixup is not None else x
            views.append(self.augment(v, generator))
        return views[0], views[1]

    def state_dict(self) -> dict[str, Any]:
        """The mixup memory's keys (:meth:`MixupBYOLA.state_dict`; empty without mixup)."""
        return self.mixup.state_dict() if self.mixup is not None else {}

    def load_state_dict(self, state: dict[str, Any], recompute: Recompute) -> None:
        """Restore the mixup memory (:meth:`MixupBYOLA.load_state_dict`)."""
        if self.mixup is not None and state:
            self.mixup.load_state_dict(state, recompute)


class BYOLAViews(_MixupViews):
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

    def augment(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """The random resize crop of ``x``."""
        return self.crop(x, generator)


class FrameAlignedViews(_MixupViews):
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

    def augment(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """The frequency-only crop of ``x``, then the frequency masking."""
        v = self.crop(x, generator)  # time_scale 1 and no time canvas: frames stay put
        return self.mask(v, generator) if self.mask is not None else v


def normalize_batch(x: Tensor, eps: float = float(torch.finfo(torch.float32).eps)) -> Tensor:
    """BYOL-A's post-normalization: standardize a batch ``(B, C, F, T)`` per channel over
    the batch and both axes (``std`` clamped at ``eps``)."""
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    std = x.std(dim=(0, 2, 3), keepdim=True).clamp(min=eps)
    return (x - mean) / std
