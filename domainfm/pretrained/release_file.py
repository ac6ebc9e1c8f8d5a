"""A released weights file where an export or checkpoint is expected: which release it is.

:func:`~domainfm.pretrained.load.load_backbone`, and everything that loads weights through it
(``FinetuneModule(pretrained=...)``, ``DetectionModule``, the HEAR API), takes a released
weights file as published — ``.pt`` / ``.pth`` / ``.bin`` / ``.safetensors``, or a ``.ckpt``
without domainfm metadata — besides domainfm exports and checkpoints.
:func:`read_release_content` tells the two apart (a folder, a ``config.json`` and a ``.ckpt``
with domainfm metadata go to the domainfm reader), and :func:`identify_for_loading` names the
release from the file's key layout (:func:`~domainfm.pretrained.identify.identify_release`):

* exactly one release fits exactly: that one;
* several fit exactly (identical layouts, e.g. TorchGeo's MoCo and DINO ResNet-50, or the
  torchaudio files of wav2vec 2.0 and HuBERT base): when they all load the file the same way
  — the same architecture and kwargs, the same input contract and the same weights after
  their key maps — the first is loaded and all are named (the report's ``candidates``);
  otherwise the file is refused naming them (``released=NAME`` picks one);
* none fits exactly: refused naming the file and the closest layouts with what differs
  (:func:`~domainfm.pretrained.identify.near_misses`).

Nothing is loaded partially. Torch files are read for identification memory-mapped (only
names and shapes are compared; the weights are read once, by the load itself).

Example::

    >>> content = read_release_content("AudioNTT2020-BYOLA-64x96d512.pth")
    >>> identify_for_loading(content, source="AudioNTT2020-BYOLA-64x96d512.pth").entry.name
    'byola-audiontt2020-d512'
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from domainfm.pretrained.export import CKPT_KEY, CONFIG_NAME
from domainfm.pretrained.identify import (
    ReleaseMatch,
    best_matches,
    copy_containers,
    identify_release,
    near_misses,
    peek_torch_file,
)
from domainfm.pretrained.registry import (
    RELEASED,
    ReleasedCheckpoint,
    read_weights_file,
    split_dropped,
)

RELEASE_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
"""Suffixes of released weights files that are never a domainfm export or checkpoint (a
``.ckpt`` can be either; any other file that is no ``config.json`` is tried as a release)."""


@dataclass(frozen=True)
class IdentifiedRelease:
    """The release a file is loaded as.

    Attributes:
        entry: the release loaded.
        candidates: every release the file fits exactly, ``entry`` first (several only when
            they load it the same way).
    """

    entry: ReleasedCheckpoint
    candidates: tuple[str, ...]


def _all_dense(content: Any) -> bool:
    """Every tensor in ``content`` is dense (strided); the safe reader refuses the others."""
    todo = [content]
    while todo:
        value = todo.pop()
        if isinstance(value, Tensor):
            if value.layout != torch.strided:
                return False
        elif isinstance(value, Mapping):
            todo += list(value.values())
        elif isinstance(value, list | tuple):
            todo += list(value)
    return True


def read_release_content(path: str | Path) -> Any | None:
    """The content of ``path`` for identification when it is a released weights file;
    ``None`` for what the domainfm reader takes: a folder (export, Hugging Face cache), a
    ``config.json``, a ``.ckpt`` with domainfm metadata (or one that cannot be read, whose
    error that reader reports), a path that does not exist.

    Raises:
        UnsafeCheckpointError, ValueError: naming the file, when a weights file cannot be
            read safely.
    """
    p = Path(path)
    if not p.is_file() or p.name == CONFIG_NAME:
        return None
    if p.suffix == ".safetensors":
        return read_weights_file(p)
    content = peek_torch_file(p)
    if p.suffix == ".ckpt" and (
        content is None or (isinstance(content, Mapping) and CKPT_KEY in content)
    ):
        return None  # Lightning's suffix: a domainfm checkpoint
    if content is None or not _all_dense(content):
        return read_weights_file(p)  # read as the loader does: its error names the file
    return content


def _same_tensor(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if not (isinstance(a, Tensor) and isinstance(b, Tensor)):
        return False
    if a.shape != b.shape or a.dtype != b.dtype or "meta" in (a.device.type, b.device.type):
        return False  # shapes only (meta): distinct tensors cannot be told equal
    same_view = (
        a.device == b.device
        and a.data_ptr() == b.data_ptr()
        and a.stride() == b.stride()
        and a.storage_offset() == b.storage_offset()
    )
    return same_view or bool(torch.equal(a, b))


def _load_state(entry: ReleasedCheckpoint, content: Any) -> dict[str, Tensor]:
    kept, _ = split_dropped(entry.map_keys(copy_containers(content)), entry.drop)
    return kept


def _canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, default=str)


def how_loads_differ(entries: Sequence[ReleasedCheckpoint], content: Any) -> list[str]:
    """What differs between loading ``content`` as each of ``entries`` (every one fits it
    exactly): ``"architecture"``, ``"kwargs"``, ``"input contract"``, ``"weights"``; empty
    when they all load it the same way."""
    first, *others = entries
    differs: list[str] = []
    for what, read in (
        ("architecture", lambda e: e.architecture),
        ("kwargs", lambda e: _canonical(dict(e.kwargs))),
        ("input contract", lambda e: _canonical(dict(e.input))),
    ):
        if any(read(e) != read(first) for e in others):
            differs.append(what)
    if not differs:
        state = _load_state(first, content)
        for entry in others:
            other = _load_state(entry, content)
            if set(other) != set(state) or not all(_same_tensor(state[k], other[k]) for k in state):
                differs.append("weights")
                break
    return differs


def _closest(matches: Sequence[ReleaseMatch]) -> str:
    close = near_misses(matches)
    if close:
        listed = "; ".join(f"{m.name}: {m.differences()}" for m in close)
        return f"closest layouts: {listed}"
    top = next((m for m in matches if m.report is not None), None)
    closest = f", closest: {top.name} ({top.name_score:.0%} of key names fit)" if top else ""
    return f"no registered release layout is close ({len(matches)} compared{closest})"


def identify_for_loading(content: Any, *, source: str) -> IdentifiedRelease:
    """The release to load ``content`` (a released file's, from :func:`read_release_content`)
    as (see the module docstring).

    Raises:
        ValueError: naming ``source``: several releases fit it exactly but load it
            differently (they are named; pass ``released=NAME``), or none fits exactly (the
            closest layouts are named with what differs).
    """
    matches = identify_release(content, source=source)
    best = best_matches(matches)
    if not best:
        raise ValueError(
            f"{source} is no domainfm export or checkpoint, and no registered release fits "
            f"its key layout exactly; {_closest(matches)}. A file of a release at another "
            "size loads with released=NAME and model_kwargs=..."
        )
    entries = [RELEASED.get(m.name) for m in best]
    names = tuple(e.name for e in entries)
    if len(entries) > 1:
        differs = how_loads_differ(entries, content)
        if differs:
            raise ValueError(
                f"{source}: its key layout fits {len(names)} releases exactly "
                f"({', '.join(names)}), which load it differently ({', '.join(differs)}); the "
                "file alone cannot tell which it is: pass released=NAME with one of them"
            )
    return IdentifiedRelease(entries[0], names)
