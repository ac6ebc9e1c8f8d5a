"""Which release is this file? Match a weights file's content against every registered layout.

For each registered release (:data:`~domainfm.pretrained.registry.RELEASED`, domain plugins
discovered first), :func:`identify_release` runs the release's key map on the content (a
map that refuses the content is no match; its error is kept), leaves out the release's
``drop`` keys, builds the release's architecture without allocating (on the meta device) and
compares names and shapes with :func:`~domainfm.pretrained.report.compare_state_dict`.
Nothing is loaded, nothing is downloaded, the content is not changed.

Each :class:`ReleaseMatch` carries the release's :class:`~domainfm.pretrained.report.LoadReport`
and a score, the share of tensors that fit::

    score = loaded / (loaded + missing + mismatched + unexpected)

(missing keys the release allows do not count), so ``1.0`` is an exact match. Matches come
sorted best first: exact ones, then by score, by the share of key *names* that fit
(:attr:`ReleaseMatch.name_score`, which ranks a same-layout file of another size above an
unrelated one), by tensors loaded, then by fewer keys dropped.

**Ambiguity is reported, not guessed.** Two releases can have the same key names and shapes
(the same architecture trained with MoCo and with DINO, published as plain state dicts), or
read the same file differently (one release per encoder of a multi-encoder checkpoint): a
file alone cannot tell which was meant. :func:`best_matches` returns every exact match; more
than one means the file is ambiguous among them, and ``domainfm inspect`` says so and lists
them all (the user then loads it by name).

A *near miss* (:func:`near_misses`) is a release that is not exact but whose key names fit at
least :data:`NEAR_MISS` of the comparison: what differs is described by
:meth:`ReleaseMatch.differences` (counts and the first keys of each kind).

Example::

    >>> matches = identify_file("B13_rn50_moco_0099_ckpt.pth")
    >>> [m.name for m in best_matches(matches)]
    ['ssl4eo-s12-resnet50-moco']
    >>> print(describe_identification(matches, source="B13_rn50_moco_0099_ckpt.pth"))
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from domainfm.core.backbone import build_backbone
from domainfm.core.plugins import discover_plugins
from domainfm.pretrained.export import CKPT_KEY, CONFIG_NAME
from domainfm.pretrained.registry import (
    RELEASED,
    ReleasedCheckpoint,
    read_weights_file,
    split_dropped,
)
from domainfm.pretrained.report import LoadReport, compare_state_dict

NEAR_MISS = 0.5
"""Least share of key names that fit for a release to count as a near miss."""


@dataclass
class ReleaseMatch:
    """How one registered release fits a file's content.

    Attributes:
        name: the release.
        score: share of tensors that fit (1.0: exact); 0.0 when the key map refused the file.
        report: the names-and-shapes comparison (``None`` when the key map refused the file).
        error: why the key map refused the file (empty otherwise).
    """

    name: str
    score: float
    report: LoadReport | None
    error: str = ""

    @property
    def exact(self) -> bool:
        """Every tensor fits: nothing missing (beyond allowed), unexpected or mismatched."""
        return self.report is not None and self.report.ok and bool(self.report.loaded)

    @property
    def name_score(self) -> float:
        """Share of key names that fit, whatever their shapes."""
        if self.report is None:
            return 0.0
        r = self.report
        named = len(r.loaded) + len(r.mismatched)
        return named / max(named + len(r.missing) + len(r.unexpected), 1)

    def differences(self, *, listed: int = 3) -> str:
        """What differs, in one line: ``"150 of 152 tensors fit; 2 missing (a, b); ..."``."""
        if self.report is None:
            return f"its key map refuses the file: {self.error}"
        r = self.report
        total = len(r.loaded) + len(r.missing) + len(r.mismatched)

        def some(items: Sequence[str]) -> str:
            more = f", … {len(items) - listed} more" if len(items) > listed else ""
            return ", ".join(items[:listed]) + more

        mismatched = [f"{k}: release {tuple(m)} vs file {tuple(c)}" for k, m, c in r.mismatched]
        parts = [f"{len(r.loaded)} of {total} tensors fit"]
        parts += [
            f"{len(keys)} {kind} ({some(keys)})"
            for kind, keys in (
                ("missing from the file", r.missing),
                ("unexpected in the file", r.unexpected),
                ("of another shape", mismatched),
            )
            if keys
        ]
        if r.dropped:
            parts.append(f"{len(r.dropped)} dropped by name")
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        """Plain data (JSON-serializable)."""
        return {
            "name": self.name,
            "score": round(self.score, 6),
            "name_score": round(self.name_score, 6),
            "exact": self.exact,
            "differences": None if self.exact else self.differences(),
            "report": None if self.report is None else self.report.as_dict(),
            "error": self.error or None,
        }


@contextlib.contextmanager
def meta_parameters() -> Iterator[None]:
    """Move each parameter to the meta device as a module registers it: for constructors
    that cannot run under ``torch.device("meta")`` (e.g. MONAI's ``SwinTransformer`` calls
    ``.item()`` on a tensor it builds), so a full-size model still allocates no weights
    (buffers stay where they are built).

    Example::

        >>> with meta_parameters():
        ...     model = SwinUNETR(in_channels=1, out_channels=14, feature_size=48)
    """
    register = nn.Module.register_parameter

    def on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = on_meta  # type: ignore[method-assign, assignment]
    try:
        yield
    finally:
        nn.Module.register_parameter = register  # type: ignore[method-assign]


@lru_cache(maxsize=512)  # above the number of registered layouts: a scan never thrashes it
def _shape_model(architecture: str, kwargs_json: str) -> nn.Module:
    """The architecture built without allocating its weights (cached: only names and shapes
    are read)."""
    kwargs = json.loads(kwargs_json)
    source = f"the {architecture} layout"
    try:
        with torch.device("meta"):
            return build_backbone(architecture, kwargs, source=source)
    except ValueError:
        with meta_parameters():
            return build_backbone(architecture, kwargs, source=source)


def copy_containers(content: Any) -> Any:
    """``content`` with its dicts and lists copied (tensors shared), so that no key map can
    change what the next one reads."""
    if isinstance(content, Mapping):
        return {k: copy_containers(v) for k, v in content.items()}
    if isinstance(content, list):
        return [copy_containers(v) for v in content]
    return content


def _error_text(err: BaseException) -> str:
    text = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def match_release(entry: ReleasedCheckpoint, content: Any, *, source: str) -> ReleaseMatch:
    """How ``entry`` fits ``content`` (see the module docstring)."""
    try:
        state = entry.map_keys(copy_containers(content))
        if not isinstance(state, Mapping):
            raise TypeError(f"the key map gave a {type(state).__name__}, not a state dict")
        kept, dropped = split_dropped(state, entry.drop)
    except MemoryError:
        raise
    except Exception as err:  # any refusal of foreign content is "no match", kept as text
        return ReleaseMatch(entry.name, 0.0, None, _error_text(err))
    try:
        kwargs_json = json.dumps(dict(entry.kwargs), sort_keys=True)
        model = _shape_model(entry.architecture, kwargs_json)
    except MemoryError:
        raise
    except Exception as err:
        return ReleaseMatch(entry.name, 0.0, None, f"cannot build its architecture: {err}")
    report = compare_state_dict(model, kept, source=f"{source} as {entry.name}")
    report.dropped = dropped
    allowed = tuple(entry.allow_missing)
    report.allowed_missing = [
        k for k in report.missing if any(fnmatch.fnmatchcase(k, p) for p in allowed)
    ]
    report.missing = [k for k in report.missing if k not in set(report.allowed_missing)]
    fitting = len(report.loaded)
    total = fitting + len(report.missing) + len(report.mismatched) + len(report.unexpected)
    return ReleaseMatch(entry.name, fitting / max(total, 1), report)


def _rank(match: ReleaseMatch) -> tuple[Any, ...]:
    report = match.report
    loaded = len(report.loaded) if report is not None else 0
    dropped = len(report.dropped) if report is not None else 0
    return (not match.exact, -match.score, -match.name_score, -loaded, dropped, match.name)


def identify_release(
    content: Any, *, source: str = "the file", names: Iterable[str] | None = None
) -> list[ReleaseMatch]:
    """Every registered release (or those in ``names``) matched against a file's loaded
    ``content`` (what :func:`~domainfm.pretrained.registry.read_weights_file` returns),
    best first."""
    discover_plugins()  # domain plugins register their releases on import
    chosen = list(RELEASED) if names is None else list(names)
    matches = [match_release(RELEASED.get(n), content, source=source) for n in chosen]
    return sorted(matches, key=_rank)


def identify_file(path: str | Path) -> list[ReleaseMatch]:
    """:func:`identify_release` of a local file, read safely (``weights_only=True``, or
    safetensors)."""
    return identify_release(read_weights_file(path), source=str(path))


def best_matches(matches: Sequence[ReleaseMatch]) -> list[ReleaseMatch]:
    """Every exact match (ranked): one release, several when the file fits each of them
    exactly (ambiguous: identical layouts, or one file read by several releases), or none."""
    return [m for m in matches if m.exact]


def near_misses(matches: Sequence[ReleaseMatch], *, limit: int = 3) -> list[ReleaseMatch]:
    """Up to ``limit`` closest releases that are not exact but share at least
    :data:`NEAR_MISS` of their key names with the file, best first."""
    close = [m for m in matches if not m.exact and m.name_score >= NEAR_MISS]
    return close[:limit]


def describe_identification(matches: Sequence[ReleaseMatch], *, source: str) -> str:
    """What ``domainfm inspect`` prints for a file that is no domainfm export: the release
    (or the releases it fits equally) with its report, else the closest layouts and what
    differs, else that none is close."""
    best = best_matches(matches)
    if len(best) == 1:
        entry = RELEASED.get(best[0].name)
        return "\n".join(
            [
                f"{source}: release {entry.name!r} ({entry.architecture}; {entry.source_layout})",
                str(best[0].report),
            ]
        )
    if best:
        names = ", ".join(repr(m.name) for m in best)
        return "\n".join(
            [
                f"{source}: ambiguous: {len(best)} releases fit it exactly ({names}); the "
                "file alone cannot tell which was meant: load it by name. First one's report:",
                str(best[0].report),
            ]
        )
    close = near_misses(matches)
    if close:
        lines = [f"{source}: no registered release fits exactly; closest layouts:"]
        lines += [f"  {m.name}: {m.differences()}" for m in close]
        return "\n".join(lines)
    return f"{source}: no registered release layout is close ({len(matches)} compared)"


def peek_torch_file(path: str | Path) -> Any | None:
    """A torch file's content memory-mapped (tensors not read) with the safe loader's
    allowlist, or ``None`` when it cannot be read that way (not a zip-format torch file,
    damaged, or refused: :func:`~domainfm.pretrained.registry.read_weights_file` then says
    why)."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except MemoryError:
        raise
    except Exception:
        return None


def inspect_weights_file(path: str | Path, *, as_json: bool = False) -> tuple[str, int] | None:
    """What ``domainfm inspect`` prints for a weights file without domainfm metadata, and its
    exit status (:func:`inspect_release_content`); ``None`` for what the domainfm reader
    takes: a folder, a ``config.json``, a ``.ckpt`` with domainfm metadata (or one that cannot
    be read, whose error that reader reports).

    Raises:
        FileNotFoundError, ValueError: naming the file when it cannot be read, or when no
            registered layout is close.
    """
    p = Path(path)
    if not p.is_file() or p.name == CONFIG_NAME:
        return None
    if p.suffix == ".ckpt":  # Lightning's suffix: a domainfm checkpoint, or a release's file
        content = peek_torch_file(p)
        if content is None or (isinstance(content, Mapping) and CKPT_KEY in content):
            return None
    else:
        content = read_weights_file(p)
    return inspect_release_content(content, source=str(path), as_json=as_json)


def inspect_release_content(content: Any, *, source: str, as_json: bool = False) -> tuple[str, int]:
    """``(what domainfm inspect prints, its exit status)`` for a file that is no domainfm
    export: 0 when a release (or several, ambiguously) fits exactly, 1 when only near
    misses do.

    Raises:
        ValueError: naming ``source`` when no registered layout is close (exit status 2).
    """
    matches = identify_release(content, source=source)
    best = best_matches(matches)
    close = near_misses(matches)
    if not best and not close:
        top = matches[0] if matches else None
        closest = (
            f"; closest: {top.name} ({top.name_score:.0%} of key names fit)"
            if top is not None and top.report is not None
            else ""
        )
        raise ValueError(
            f"{source}: not a domainfm export or checkpoint, and no registered release layout "
            f"is close ({len(matches)} compared{closest})"
        )
    status = 0 if best else 1
    if not as_json:
        return describe_identification(matches, source=source), status
    shown = best or close
    data = {
        "source": source,
        "release": best[0].name if len(best) == 1 else None,
        "candidates": [m.name for m in best],
        "ambiguous": len(best) > 1,
        "matches": [m.as_dict() for m in shown],
    }
    return json.dumps(data, indent=2, default=str), status
