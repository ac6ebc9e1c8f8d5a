"""How the audio benchmark hooks read a task's items: the input contract a backbone gets, the
recordings, and the labels of timestamp tasks at given times.

**Contract** (:func:`task_contract`). A backbone's recorded contract (:class:`~domainfm.
domains.audio.contract.AudioContract`: front end with its statistics, segment length)
prepares its input. A backbone without one (``scratch:`` of a training config) gets the
domain's defaults: BYOL-A's log-mel (:class:`~domainfm.domains.audio.frontends.
LogMelFrontend`, with the backbone's ``n_mels`` when it has one) over
:data:`DEFAULT_FRAMES`-frame segments, normalized with statistics of the task's recordings
(:func:`~domainfm.domains.audio.frontends.compute_frontend_stats` over at most
:data:`STATS_FILES` of them, evenly spread in key order, computed once per process). Labels
are unused and the files do not depend on the split, so one item always gets the same input.

**Recordings** are read with :func:`~domainfm.domains.audio.io.load_audio` (mono, resampled
to the front end's rate); a bad file raises its ``ValueError``, naming it.

**Timestamp labels** (:func:`frame_targets`): a position at time ``t`` is active for the
class of every event with ``onset <= t <= offset`` (ends included, as hear-eval-kit labels
timestamps).

Example::

    >>> contract = task_contract(backbone, task)     # no recorded contract: the defaults
    >>> contract.frames, contract.frontend["architecture"]
    (96, 'log_mel')
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

from domainfm.domains.audio.contract import AudioContract, audio_contract
from domainfm.domains.audio.frontends import LogMelFrontend, compute_frontend_stats
from domainfm.domains.audio.io import load_audio
from domainfm.tasks.benchmark.backbones import BenchmarkBackbone
from domainfm.tasks.benchmark.task import BenchmarkTask, Event, LabeledItem

DEFAULT_FRAMES = 96
"""Segment length (frames) without a contract: BYOL-A's 0.96 s."""
STATS_FILES = 256
"""Most recordings the default front end's statistics are computed over."""


def task_contract(backbone: BenchmarkBackbone, task: BenchmarkTask) -> AudioContract:
    """How ``backbone``'s input is prepared: its recorded contract, else the domain's
    defaults with statistics over the task's recordings (see the module docstring).

    Raises:
        ValueError: naming the backbone when its contract records no audio front end.
    """
    if backbone.contract:
        return audio_contract(backbone.contract, source=f"backbone {backbone.label!r}")
    n_mels = int(backbone.kwargs.get("n_mels", 64))
    keyed = sorted(task.items, key=lambda item: item.key)
    step = max(1, math.ceil(len(keyed) / STATS_FILES))
    files = tuple(str(item.inputs[0]) for item in keyed[::step])
    mean, std = _default_stats(files, n_mels)
    return AudioContract.of(LogMelFrontend(n_mels=n_mels, mean=mean, std=std), DEFAULT_FRAMES)


@lru_cache(maxsize=8)
def _default_stats(files: tuple[str, ...], n_mels: int) -> tuple[float, float]:
    """The default front end's statistics over ``files`` (computed once per process)."""
    return compute_frontend_stats(files, LogMelFrontend(n_mels=n_mels))


def item_path(item: LabeledItem) -> Path:
    """The item's recording.

    Raises:
        ValueError: naming the file when it does not exist.
    """
    path = item.inputs[0]
    if not path.is_file():
        raise ValueError(f"{path}: no such audio file (item {item.key})")
    return path


def item_wave(item: LabeledItem, sample_rate: int) -> Tensor:
    """The item's recording ``(1, N)``, mono at ``sample_rate``.

    Raises:
        ValueError: naming the file: missing, unreadable, damaged, NaN or silent.
    """
    wave, _ = load_audio(item_path(item), sample_rate, mono=True)
    return wave


def item_events(item: LabeledItem) -> tuple[Event, ...]:
    """A timestamp item's events.

    Raises:
        ValueError: naming the item when its target is not a tuple of events.
    """
    target = item.target
    if not isinstance(target, tuple) or not all(isinstance(e, Event) for e in target):
        raise ValueError(f"item {item.key}: a timestamp item's target is a tuple of Event")
    return tuple(e for e in target if isinstance(e, Event))


def item_class(item: LabeledItem) -> int:
    """A classification item's class index.

    Raises:
        ValueError: naming the item when its target is not one.
    """
    if not isinstance(item.target, int):
        raise ValueError(f"item {item.key}: a classification item's target is a class index")
    return item.target


def frame_targets(events: Sequence[Event], times_s: Tensor, num_classes: int) -> Tensor:
    """``[T, C]`` 0/1: a position at ``times_s[t]`` is active for the class of every event
    it lies within (onset and offset included)."""
    out = torch.zeros(len(times_s), num_classes)
    for event in events:
        out[(times_s >= event.onset) & (times_s <= event.offset), event.label] = 1.0
    return out


def kept_positions(count: int, key: str, limit: int) -> Tensor | None:
    """``limit`` of ``count`` positions in time order, drawn without replacement by a
    generator seeded from ``key`` (the same in every run); ``None`` when all are kept."""
    if count <= limit:
        return None
    generator = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    return torch.randperm(count, generator=generator)[:limit].sort().values
