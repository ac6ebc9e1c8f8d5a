"""Datasets of spectrogram segments: random segments of unlabeled recordings for pretraining,
and whole labeled clips for probing / fine-tuning.

:class:`AudioSegmentDataset` draws, per sample (seeded), a file with probability
proportional to its duration and a segment start uniformly inside it, reads only that part
(seek + decode, :func:`~domainfm.domains.audio.io.read_segment`), resamples it to the front
end's rate and turns it into a ``(1, F, frames)`` normalized spectrogram. ``views``:

* ``"single"`` — ``{"input"}`` (for MAE: masks are drawn by the collate function);
* ``"byola"`` — ``{"view1", "view2"}``: two :class:`~domainfm.domains.audio.augment.
  BYOLAViews` of the segment (BYOL-A), plus ``"input"`` (the unaugmented segment, for
  monitors);
* ``"frame_aligned"`` — the same keys, from :class:`~domainfm.domains.audio.augment.
  FrameAlignedViews` (time positions preserved, for frame-level objectives);
* with ``specaugment``, ``"input"`` is additionally time/frequency masked.

With ``checks`` (a :class:`~domainfm.domains.audio.file_checks.FileChecks`, which the data
modules always pass), each file is checked in full the first time it is drawn. A bad file
(truncated, damaged, NaN/Inf or silent) is warned about once, counted, and never used: a
draw that lands on it is redrawn from the same generator, so the replacement depends on
the sample's seed only and seeded or resumed runs stay exact. A segment that fails to
decode (corrupt part of a file, NaN samples) is **skipped and counted**
(:attr:`AudioSegmentDataset.skipped_reads`, per worker) and another is drawn: a bad sample
never stops a long run. ``max_tries`` segment failures in a row raise, naming the last
file, and so does a dataset whose every file is bad.

**Exact resume with a mixup memory.** BYOL-A's mixup keeps a memory of past segments in
each loader worker (:class:`~domainfm.domains.audio.augment.MixupBYOLA`). The dataset
remembers each segment under its ``(file, start)`` and is *stateful* for torchdata's
``StatefulDataLoader``: :meth:`AudioSegmentDataset.state_dict` (taken in every worker after
each batch, or in the main process without workers) is the memory's keys, and
:meth:`AudioSegmentDataset.load_state_dict` restores them into the matching worker on
resume; a restored entry's segment is re-read (:meth:`AudioSegmentDataset.spectrogram`,
bit-identical) the first time a draw picks it. Resumed runs therefore draw the same mixup
partners as uninterrupted ones.

:class:`AudioClipDataset` serves labeled clips whole: each is decoded, resampled, and cut or
zero-padded to ``frames`` (training: a random cut when longer; evaluation: the centre), as
``{"input": (1, F, frames), "label": () int64}``. With ``checks``, a clip that fails to
load is skipped, counted and replaced by the next good clip in order (its label with it).

Example::

    >>> ds = AudioSegmentDataset(infos=infos, frontend=LogMelFrontend(mean=-4, std=5),
    ...                          frames=96, views="byola", samples_per_epoch=512)
    >>> ds[(0, 123)]["view1"].shape
    torch.Size([1, 64, 96])
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils.data import Dataset

from domainfm.domains.audio.augment import (
    BYOLAViews,
    FrameAlignedViews,
    MemoryKey,
    SpecAugment,
)
from domainfm.domains.audio.file_checks import FileChecks
from domainfm.domains.audio.frontends import Frontend
from domainfm.domains.audio.io import AudioInfo, load_audio, read_segment


def fit_frames(x: Tensor, frames: int, offset: int | None) -> Tensor:
    """Cut ``(C, F, T)`` to ``frames`` frames from ``offset`` (``None``: centre) or zero-pad
    at the end."""
    t = x.shape[-1]
    if t < frames:
        return torch.nn.functional.pad(x, (0, frames - t))
    start = (t - frames) // 2 if offset is None else min(offset, t - frames)
    return x[..., start : start + frames]


class AudioSegmentDataset(Dataset[dict[str, Tensor]]):
    """Random segments of recordings as spectrograms (see the module docstring).

    Args:
        infos: the files (from :func:`~domainfm.domains.audio.index.index_audio`).
        frontend: waveform → ``(F, T)`` features (normalized).
        frames: segment length ``T`` in frames (96 at a 10 ms hop: BYOL-A's 0.95 s).
        views: ``"single"``, ``"byola"`` or ``"frame_aligned"``.
        samples_per_epoch: segments per epoch.
        two_views: the two-view maker (default settings of the ``views`` kind when
            omitted).
        specaugment: masking applied to ``"input"`` (``None``: none).
        max_tries: consecutive failed segment reads before raising.
        checks: the per-file checks (in ``infos`` order); ``None``: files are not checked
            whole, only each segment read.
    """

    def __init__(
        self,
        *,
        infos: Sequence[AudioInfo],
        frontend: Frontend,
        frames: int = 96,
        views: Literal["single", "byola", "frame_aligned"] = "single",
        samples_per_epoch: int = 1024,
        two_views: BYOLAViews | FrameAlignedViews | None = None,
        specaugment: SpecAugment | None = None,
        max_tries: int = 10,
        checks: FileChecks | None = None,
    ) -> None:
        if not infos:
            raise ValueError("no readable audio files to draw segments from")
        if checks is not None and len(checks) != len(infos):
            raise ValueError(f"{len(checks)} file checks for {len(infos)} files")
        if views not in ("single", "byola", "frame_aligned"):
            raise ValueError(f"views={views!r}: must be 'single', 'byola' or 'frame_aligned'")
        self.infos = list(infos)
        self.frontend = frontend
        self.frames = frames
        self.views = views
        self.samples_per_epoch = samples_per_epoch
        default = {"byola": BYOLAViews, "frame_aligned": FrameAlignedViews}.get(views)
        self.two_views = two_views or (default() if default is not None else None)
        self.specaugment = specaugment
        self.max_tries = max_tries
        self.num_samples = frontend.num_samples(frames)
        self.weights = torch.tensor([i.duration for i in self.infos], dtype=torch.float64)
        self.checks = checks
        self.skipped_reads = 0
        self.last_error: str | None = None
        # the files a saved (file, start) refers to: names and lengths, in order (the data
        # root may move between a run and its resume)
        names = "\n".join(f"{Path(i.path).name} {i.frames}" for i in self.infos)
        self.fingerprint = zlib.crc32(names.encode())

    def __len__(self) -> int:
        return self.samples_per_epoch

    def state_dict(self) -> dict[str, Any]:
        """The mixup memory as ``(file, start)`` keys (small), for the resumable loader;
        empty without a two-view maker."""
        if self.two_views is None:
            return {}
        return {"files": self.fingerprint, "mixup_memory": self.two_views.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the mixup memory saved by :meth:`state_dict` (segments re-read when
        first drawn). A state saved over other files is dropped with a warning (the memory
        starts empty, and the run is not an exact continuation)."""
        if self.two_views is None or not state.get("mixup_memory"):
            return
        if state.get("files") != self.fingerprint:
            warnings.warn(
                "the saved mixup memory refers to other audio files than this dataset's: "
                "resuming with an empty memory",
                stacklevel=2,
            )
            return
        self.two_views.load_state_dict(state["mixup_memory"], self.recompute)

    def recompute(self, key: MemoryKey) -> Tensor:
        """The segment remembered as ``key = (file, start)``, read again."""
        k, start = key
        return self.spectrogram(self.infos[k], start)

    def spectrogram(self, info: AudioInfo, start: int) -> Tensor:
        """The normalized ``(1, F, frames)`` spectrogram of the segment at frame ``start``."""
        wave = read_segment(
            info, start=start, num_samples=self.num_samples, sample_rate=self.frontend.sample_rate
        )  # (1, n)
        with torch.no_grad():
            x = self.frontend(wave)  # (1, F, T)
        return fit_frames(x, self.frames, 0)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Tensor]:
        """A segment; ``key`` is an index or ``(index, seed)`` from the seeded sampler."""
        index, seed = key if isinstance(key, tuple) else (key, None)
        generator = torch.Generator().manual_seed(seed if seed is not None else index)
        failures = 0
        while failures < self.max_tries:
            k = int(torch.multinomial(self.weights, 1, generator=generator))
            info = self.infos[k]
            needed = round(self.num_samples * info.sample_rate / self.frontend.sample_rate)
            span = max(1, info.frames - needed)  # file frames a segment can start at
            start = int(torch.randint(0, span, (), generator=generator))
            reason = self.checks.verdict(k) if self.checks is not None else None
            if reason is not None:  # a bad file: drawn again, from this sample's generator
                self.skipped_reads += 1
                self.last_error = reason
                if self.checks is not None and self.checks.all_bad():
                    raise ValueError(
                        f"every one of the {len(self.infos)} audio files failed its check; "
                        f"last: {reason}"
                    )
                continue
            try:
                x = self.spectrogram(info, start)
            except ValueError as err:
                self.skipped_reads += 1
                self.last_error = str(err)
                failures += 1
                continue
            return self._sample(x, generator, seed, (k, start))
        raise ValueError(f"{self.max_tries} segment reads failed in a row; last: {self.last_error}")

    def _sample(
        self, x: Tensor, generator: torch.Generator, seed: int | None, key: MemoryKey
    ) -> dict[str, Any]:
        sample = segment_views(
            x, generator, two_views=self.two_views, specaugment=self.specaugment, key=key
        )
        if seed is not None:
            sample["seed"] = torch.tensor(seed)
        return sample


def segment_views(
    x: Tensor,
    generator: torch.Generator,
    *,
    two_views: BYOLAViews | FrameAlignedViews | None,
    specaugment: SpecAugment | None,
    key: MemoryKey | None = None,
) -> dict[str, Any]:
    """The training sample of one normalized segment ``(1, F, T)``: ``"input"`` (SpecAugment
    applied when given) and, with a two-view maker, ``"view1"``/``"view2"`` (the segment
    remembered by the mixup under ``key``, what identifies it)."""
    sample: dict[str, Any] = {"input": x}
    if two_views is not None:
        sample["view1"], sample["view2"] = two_views(x, generator, key)
    if specaugment is not None:
        sample["input"] = specaugment(x, generator)
    return sample


class AudioClipDataset(Dataset[dict[str, Tensor]]):
    """Labeled clips as fixed-size spectrograms (see the module docstring).

    Args:
        files: clip paths.
        labels: class id per clip.
        frontend: waveform → ``(F, T)`` features (normalized).
        frames: spectrogram length ``T`` (clips cut or zero-padded).
        train: random cuts of longer clips (else the centre).
        specaugment: masking for training (``None``: none).
        checks: the per-clip verdicts (in ``files`` order): a clip that fails to load is
            skipped, counted and replaced by the next good one; ``None``: it raises.
    """

    def __init__(
        self,
        *,
        files: Sequence[str],
        labels: Sequence[int],
        frontend: Frontend,
        frames: int = 96,
        train: bool = False,
        specaugment: SpecAugment | None = None,
        checks: FileChecks | None = None,
    ) -> None:
        if len(files) != len(labels):
            raise ValueError(f"{len(files)} files but {len(labels)} labels")
        if checks is not None and len(checks) != len(files):
            raise ValueError(f"{len(checks)} file checks for {len(files)} files")
        self.files = list(files)
        self.labels = [int(v) for v in labels]
        self.frontend = frontend
        self.frames = frames
        self.train = train
        self.specaugment = specaugment
        self.checks = checks
        self.skipped_reads = 0

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> tuple[int, Tensor]:
        """The clip at ``index`` ``(1, n)`` at the front end's rate, or with ``checks`` the
        first good clip from ``index`` on (cyclically; the verdicts depend on the files
        only, so the replacement is the same in every run), and its index."""
        if self.checks is None:
            return index, load_audio(self.files[index], self.frontend.sample_rate, mono=True)[0]
        for step in range(len(self.files)):
            k = (index + step) % len(self.files)
            if self.checks.known_bad(k):
                self.skipped_reads += 1
                continue
            try:
                wave, _ = load_audio(self.files[k], self.frontend.sample_rate, mono=True)
            except ValueError as err:
                self.checks.mark_bad(k, str(err))
                self.skipped_reads += 1
                continue
            self.checks.mark_good(k)
            return k, wave
        raise ValueError(f"every one of the {len(self.files)} clips failed to load")

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Tensor]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        generator = torch.Generator().manual_seed(seed if seed is not None else index)
        index, wave = self.load(index)
        with torch.no_grad():
            x = self.frontend(wave)  # (1, F, T)
        offset = None
        if self.train and x.shape[-1] > self.frames:
            offset = int(torch.randint(0, x.shape[-1] - self.frames + 1, (), generator=generator))
        x = fit_frames(x, self.frames, offset)
        if self.train and self.specaugment is not None:
            x = self.specaugment(x, generator)
        return {"input": x, "label": torch.tensor(self.labels[index])}
