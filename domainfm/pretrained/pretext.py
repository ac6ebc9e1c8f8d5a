"""A release with its pretext head: the encoder and, where the release ships one, its decoder
mapped onto our objective, from one read of the file.

MAE-style releases (Prithvi, SatMAE, AudioMAE, SSL4EO MAE, ...) publish the decoder they were
pretrained with. Continuing that pretext task on a user's own data (domain adaptation before
fine-tuning) should start from both parts; a fresh decoder on a pretrained encoder throws the
pretext task's state away and first spends steps re-learning it. :func:`load_release_with_pretext`
returns the backbone (strict, reported), and the objective built from the release's
:class:`~domainfm.pretrained.registry.PretextHead` with the decoder loaded strictly and reported —
or ``None`` with the reason when the release has no head our objectives can take.

Example::

    >>> loaded = load_release_with_pretext("prithvi-eo-1.0-100m", "Prithvi_100M.pt")
    >>> loaded.objective            # MAE with Prithvi's decoder, or None
    >>> print(loaded.pretext_report or loaded.fresh_reason)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from domainfm.core.backbone import build_backbone
from domainfm.core.objectives.base import BackboneBound
from domainfm.core.objectives.registry import OBJECTIVES
from domainfm.core.plugins import discover_plugins
from domainfm.pretrained.adapt import pos_embed_resampler
from domainfm.pretrained.registry import (
    RELEASED,
    ReleasedCheckpoint,
    mapped_release_state,
    read_weights_file,
    split_dropped,
)
from domainfm.pretrained.report import LoadReport, load_state_dict_with_report


@dataclass
class ReleaseWithPretext:
    """What :func:`load_release_with_pretext` loaded.

    Attributes:
        entry: the release.
        backbone: the encoder, loaded strictly.
        report: the encoder's load report.
        objective: the objective carrying the release's pretext head, loaded strictly;
            ``None`` when the release ships none (see ``fresh_reason``).
        pretext_report: the pretext head's load report (``None`` with no head).
        fresh_reason: why the pretext head starts fresh (``None`` when it was loaded).
    """

    entry: ReleasedCheckpoint
    backbone: nn.Module
    report: LoadReport
    objective: nn.Module | None
    pretext_report: LoadReport | None
    fresh_reason: str | None


def load_release_with_pretext(
    name: str,
    path: str | Path,
    *,
    model_kwargs: Mapping[str, Any] | None = None,
    pretext_kwargs: Mapping[str, Any] | None = None,
    allow_missing: Iterable[str] = (),
) -> ReleaseWithPretext:
    """Load the encoder of release ``name`` from ``path`` and its pretext head, if it has one.

    Args:
        name: the registered release.
        path: the local weights file (read once, safely).
        model_kwargs: backbone kwargs overriding the release's (e.g. a grid size).
        pretext_kwargs: objective kwargs overriding the pretext head's (loss options such as
            a mask ratio; sizes that change tensor shapes make the strict load fail).
        allow_missing: fnmatch patterns of backbone keys allowed to stay initialized.

    Raises:
        ValueError: naming the file when it is not the release's layout.
        CheckpointMismatchError: when the encoder or the pretext head does not load cleanly.
    """
    if name not in RELEASED:
        discover_plugins()
    entry = RELEASED.get(name)
    content = read_weights_file(path)
    state, dropped = mapped_release_state(entry, content, path=path)
    kwargs = {**entry.kwargs, **(model_kwargs or {})}
    source = f"{path} as {name}"
    backbone = build_backbone(entry.architecture, kwargs, source=source)
    report = load_state_dict_with_report(
        backbone, state, source=source, resample=pos_embed_resampler(entry.kwargs, backbone)
    )
    report.dropped = dropped
    report.check((*entry.allow_missing, *allow_missing))
    head = entry.pretext
    if head is None:
        reason = f"release {name!r} ships no pretext head that maps onto our objectives"
        return ReleaseWithPretext(entry, backbone, report, None, None, reason)
    objective = OBJECTIVES.get(head.objective)(**{**head.kwargs, **(pretext_kwargs or {})})
    if isinstance(objective, BackboneBound):
        objective.bind_backbone(backbone)  # sizes its heads from the encoder
    try:
        head_state = head.map_keys(content)
    except (KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{path}: the pretext head of {name!r} cannot be read: {err}") from err
    head_state, head_dropped = split_dropped(head_state, head.drop)
    pretext_report = load_state_dict_with_report(
        objective, head_state, source=f"{source} ({head.objective} pretext head)"
    )
    pretext_report.dropped = head_dropped
    pretext_report.check(_target_buffers(objective))
    return ReleaseWithPretext(entry, backbone, report, objective, pretext_report, None)


def _target_buffers(objective: nn.Module) -> tuple[str, ...]:
    """Keys of an objective's state that no release provides: state of its loss target
    (e.g. a feature extractor of its own), never decoder weights."""
    target = getattr(objective, "target", None)
    if not isinstance(target, nn.Module):
        return ()
    return tuple(f"target.{key}" for key in target.state_dict())
