"""Prepared audio shards: recordings decoded and resampled once, streamed as segments.

``domainfm prepare audio SRC OUT`` runs :class:`AudioPreparer` over the audio files under
``SRC``: each is decoded and validated (:func:`~domainfm.domains.audio.io.load_audio`:
unsupported, corrupt or truncated files, NaN/Inf and all-silent recordings are skipped and
named), mixed to mono, resampled to the front end's rate and cut into ``segment_s`` pieces
(a last piece kept when at least ``min_segment_s`` long; a recording shorter than
``segment_s`` is one item whatever its length). Each item holds ``wave``
``(n,)`` float16 (about 66 dB of relative precision, well below log-mel resolution), or,
with ``features="frontend"``, the front end's un-normalized features ``(F, T)`` float16
computed once; plus ``sample_rate``, ``start_s`` and ``source``. The front end's scalar
feature statistics (BYOL-A/AST normalization) are computed over every prepared segment and
stored in the manifest.

:class:`StreamingAudioDataModule` streams the items and cuts random ``frames``-frame
segments with the file-based path's views (``"single"`` + SpecAugment for MAE, BYOL-A's
mixup + random-resize-crop pairs, frame-aligned pairs).

Example::

    domainfm prepare audio recordings/ prepared/audio --sample-rate 16000 --segment-s 10
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from domainfm.core.masking import DEFAULT_MASKING, MaskingSpec
from domainfm.core.registry import init_config
from domainfm.data.shards import source_key
from domainfm.data.streaming import SampleMaker, ShardDataModule
from domainfm.domains.audio.augment import BYOLAViews, FrameAlignedViews, SpecAugment
from domainfm.domains.audio.contract import AudioContract
from domainfm.domains.audio.datamodule import segment_collate
from domainfm.domains.audio.frontends import Frontend, LogMelFrontend, build_frontend
from domainfm.domains.audio.io import load_audio
from domainfm.domains.audio.segments import fit_frames, segment_views

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif", ".au")


class AudioPreparer:
    """Mono segments of every recording under a folder (see the module docstring).

    Args:
        frontend: the front end (its rate is the prepared rate; its config is recorded,
            statistics are computed here).
        segment_s: item length in seconds.
        min_segment_s: shortest last piece kept (a recording shorter than ``segment_s`` is
            kept whole).
        features: ``"wave"`` (waveform) or ``"frontend"`` (precomputed features).
    """

    domain = "audio"

    def __init__(
        self,
        *,
        frontend: Frontend | None = None,
        segment_s: float = 10.0,
        min_segment_s: float = 0.5,
        features: Literal["wave", "frontend"] = "wave",
    ) -> None:
        if features not in ("wave", "frontend"):
            raise ValueError(f"features must be 'wave' or 'frontend', got {features!r}")
        if not 0 < min_segment_s <= segment_s:
            raise ValueError(f"need 0 < min_segment_s={min_segment_s} <= segment_s={segment_s}")
        raw = frontend if frontend is not None else LogMelFrontend()
        self.frontend = raw.with_stats(None, None)
        self.segment_s = segment_s
        self.min_segment_s = min_segment_s
        self.features = features

    def settings(self) -> dict[str, Any]:
        return {
            "sample_rate": self.frontend.sample_rate,
            "frontend": init_config(self.frontend),
            "segment_s": self.segment_s,
            "min_segment_s": self.min_segment_s,
            "features": self.features,
        }

    def sources(self, src_dir: Path) -> list[tuple[Path, ...]]:
        return [
            (p,)
            for p in sorted(src_dir.rglob("*"))
            if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
        ]

    def items(self, paths: tuple[Path, ...]) -> Iterator[dict[str, Any]]:
        (path,) = paths
        rate = self.frontend.sample_rate
        wave, _ = load_audio(path, rate, mono=True)  # (1, N); ValueError naming the file
        wave = wave[0]
        step, least = round(self.segment_s * rate), round(self.min_segment_s * rate)
        key = source_key(paths, path.parent)
        for start in range(0, wave.numel(), step):
            piece = wave[start : start + step]
            if piece.numel() < least and start > 0:
                break
            item: dict[str, Any] = {
                "sample_rate": rate,
                "start_s": start / rate,
                "source": key,
            }
            if self.features == "frontend":
                with torch.no_grad():
                    feats = self.frontend(piece[None])[0]  # (F, T)
                item["features"] = feats.numpy().astype(np.float16)
            else:
                item["wave"] = piece.numpy().astype(np.float16)
            yield item

    def channel_values(self, item: dict[str, Any]) -> np.ndarray:
        if "features" in item:
            feats = item["features"].astype(np.float32)
        else:
            with torch.no_grad():
                feats = self.frontend(torch.from_numpy(item["wave"].astype(np.float32)))
            feats = feats.numpy()
        return feats.reshape(1, -1)  # one channel: BYOL-A/AST use scalar statistics


class AudioSegments:
    """Sample maker: a random ``frames``-frame segment of a streamed item, normalized by the
    front end (zero-padded when the item is shorter), then the views.

    Args:
        frontend: the front end with statistics.
        frames: segment length ``T``.
        two_views: BYOL-A or frame-aligned view pair maker (``None``: single segments).
        specaugment: masking of ``"input"``.
    """

    def __init__(
        self,
        *,
        frontend: Frontend,
        frames: int,
        two_views: BYOLAViews | FrameAlignedViews | None = None,
        specaugment: SpecAugment | None = None,
    ) -> None:
        self.frontend = frontend
        self.frames = frames
        self.two_views = two_views
        self.specaugment = specaugment
        self.num_samples = frontend.num_samples(frames)
        with torch.no_grad():  # the un-normalized features of silence: padding of short items
            raw = frontend.with_stats(None, None)
            self.silence = float(raw(torch.zeros(1, frontend.num_samples(frames))).mean())

    def __call__(self, item: dict[str, Any], generator: torch.Generator) -> dict[str, Any]:
        if "features" in item:
            feats = torch.from_numpy(item["features"].astype(np.float32))  # (F, T)
            span = max(1, feats.shape[-1] - self.frames + 1)
            start = int(torch.randint(0, span, (), generator=generator))
            cut = feats[None, :, start : start + self.frames]  # (1, F, <= frames)
            short = self.frames - cut.shape[-1]  # pad as a zero waveform would be
            cut = torch.nn.functional.pad(cut, (0, short), value=self.silence) if short else cut
            x = self.frontend.normalize(cut)
        else:
            wave = torch.from_numpy(item["wave"].astype(np.float32))  # (n,)
            span = max(1, wave.numel() - self.num_samples + 1)
            start = int(torch.randint(0, span, (), generator=generator))
            piece = wave[start : start + self.num_samples]
            if piece.numel() < self.num_samples:
                piece = torch.nn.functional.pad(piece, (0, self.num_samples - piece.numel()))
            with torch.no_grad():
                x = self.frontend(piece[None])  # (1, F, T)
        x = fit_frames(x, self.frames, 0)  # (1, F, frames)
        return segment_views(x, generator, two_views=self.two_views, specaugment=self.specaugment)


class StreamingAudioDataModule(ShardDataModule):
    """Segments streamed from ``domainfm prepare audio`` shards (the streaming counterpart
    of :class:`~domainfm.domains.audio.AudioPretrainDataModule`); the front end and its
    statistics come from the manifest.

    Args:
        frames, views, masking, specaugment, batch_size: as
            :class:`~domainfm.domains.audio.AudioPretrainDataModule`'s.
        **kwargs: the prepared folders, their cache and the loader settings:
            :class:`~domainfm.data.streaming.ShardDataModule`'s arguments.
    """

    domain = "audio"

    def __init__(
        self,
        *,
        frames: int = 96,
        views: Literal["single", "byola", "frame_aligned"] = "single",
        masking: MaskingSpec = DEFAULT_MASKING,
        specaugment: SpecAugment | None = None,
        batch_size: int = 32,
        **kwargs: Any,
    ) -> None:
        super().__init__(batch_size=batch_size, **kwargs)
        if views not in ("single", "byola", "frame_aligned"):
            raise ValueError(f"views={views!r}: must be 'single', 'byola' or 'frame_aligned'")
        self.frames = frames
        self.views = views
        self.specaugment = specaugment
        self.collate = segment_collate(views, masking)

    def frontend(self, manifest: dict[str, Any]) -> Frontend:
        """The manifest's front end with the prepared data's statistics."""
        stats = manifest.get("stats") or {}
        if "mean" not in stats:
            raise ValueError(f"{self.shards}: the manifest has no front-end statistics")
        raw = build_frontend(manifest["settings"]["frontend"])
        return raw.with_stats(float(stats["mean"][0]), float(stats["std"][0]))

    def sample_maker(self, manifest: dict[str, Any]) -> SampleMaker:
        two: BYOLAViews | FrameAlignedViews | None = None
        if self.views == "byola":
            two = BYOLAViews()
        elif self.views == "frame_aligned":
            two = FrameAlignedViews()
        return AudioSegments(
            frontend=self.frontend(manifest),
            frames=self.frames,
            two_views=two,
            specaugment=self.specaugment,
        )

    def input_contract(self) -> AudioContract:
        return AudioContract.of(
            self.frontend(self.manifest), self.frames, extra=self.prepared_contract()
        )
