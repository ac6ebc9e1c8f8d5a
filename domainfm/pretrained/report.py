"""Load reports: every key of a checkpoint load accounted for.

Loads with strict checking switched off, which silently load nothing, are the most common
failure with released weights. A :class:`LoadReport` lists what was loaded, missing,
unexpected, shape-mismatched or resampled; it prints as a table, is available as data
(:meth:`LoadReport.as_dict`), and :meth:`LoadReport.check` raises
:class:`CheckpointMismatchError` unless the load was clean (or the only gaps are missing keys
matching patterns the caller allowed).

Example::

    >>> report = load_state_dict_with_report(model, state_dict)
    >>> print(report)
    >>> report.check(allow_missing=("head.*",))
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

Resampler = Callable[[str, Tensor, Tensor], Tensor | None]
"""``(key, source, target_param) -> resampled tensor or None`` for a shape mismatch."""


class CheckpointMismatchError(RuntimeError):
    """A checkpoint's keys or shapes do not match the model; carries the report."""

    def __init__(self, message: str, report: LoadReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class LoadReport:
    """What happened to every key of a state-dict load.

    Attributes:
        source: where the weights came from (file path or description).
        loaded: model keys filled from the checkpoint with the same shape.
        missing: model keys absent from the checkpoint.
        unexpected: checkpoint keys the model does not have.
        mismatched: ``(key, model shape, checkpoint shape)`` not loaded.
        resampled: ``(key, checkpoint shape, model shape)`` loaded after resampling.
        allowed_missing: missing keys that matched an allowed pattern.
        adapted: ``(key, description)`` of tensors rewritten before loading (e.g. input
            channels mapped by band name), each loaded too.
        dropped: checkpoint keys left out by name before loading because they belong to
            parts the model does not have by design (a release's pretraining heads, a MoCo
            key encoder, a classifier), never silently: they are listed here.
        released: the registered release the weights were loaded as (a released file given
            to :func:`~domainfm.pretrained.load.load_backbone` is identified by its layout);
            ``None`` for a domainfm export or checkpoint.
        candidates: every release the file fits exactly, :attr:`released` first: more than
            one when several releases have the same layout and load it the same way (the same
            architecture, kwargs, input contract and weights, e.g. the torchaudio files of
            wav2vec 2.0 and HuBERT base), so the file cannot tell which one it is.
        input: the input contract the weights expect, as JSON (the release's, or the one an
            export or checkpoint records); ``None`` when none is known.
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    resampled: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    allowed_missing: list[str] = field(default_factory=list)
    adapted: list[tuple[str, str]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    released: str | None = None
    candidates: list[str] = field(default_factory=list)
    input: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        """True when nothing is missing (beyond allowed patterns), unexpected or mismatched."""
        return not (self.missing or self.unexpected or self.mismatched)

    def as_dict(self) -> dict[str, Any]:
        """The report as plain data (JSON-serializable)."""
        return {
            "source": self.source,
            "ok": self.ok,
            "loaded": list(self.loaded),
            "missing": list(self.missing),
            "allowed_missing": list(self.allowed_missing),
            "unexpected": list(self.unexpected),
            "mismatched": [
                {"key": k, "model": list(m), "checkpoint": list(c)} for k, m, c in self.mismatched
            ],
            "resampled": [
                {"key": k, "checkpoint": list(c), "model": list(m)} for k, c, m in self.resampled
            ],
            "adapted": [{"key": k, "detail": d} for k, d in self.adapted],
            "dropped": list(self.dropped),
            "released": self.released,
            "candidates": list(self.candidates),
            "input": self.input,
        }

    def __str__(self) -> str:
        status = "clean" if self.ok else "NOT clean"
        lines = [f"load report for {self.source}: {status}"]
        if self.released is not None:
            others = [c for c in self.candidates if c != self.released]
            also = f" (its layout fits {', '.join(others)} too, loaded alike)" if others else ""
            lines.append(f"  release: {self.released}{also}")
        lines.append(f"  {'status':<12} {'key':<56} detail")
        rows: list[tuple[str, str, str]] = []
        rows += [("missing", k, "in model, not in checkpoint") for k in self.missing]
        rows += [("unexpected", k, "in checkpoint, not in model") for k in self.unexpected]
        rows += [
            ("mismatched", k, f"model {tuple(m)} vs checkpoint {tuple(c)}")
            for k, m, c in self.mismatched
        ]
        rows += [
            ("resampled", k, f"checkpoint {tuple(c)} -> model {tuple(m)}")
            for k, c, m in self.resampled
        ]
        rows += [("adapted", k, d) for k, d in self.adapted]
        rows += [("allowed", k, "missing, allowed by pattern") for k in self.allowed_missing]
        rows += [("dropped", k, "in checkpoint, not in model by design") for k in self.dropped]
        lines += [f"  {s:<12} {k:<56} {d}" for s, k, d in rows]
        lines.append(
            f"  {len(self.loaded)} loaded, {len(self.resampled)} resampled, "
            f"{len(self.missing)} missing, {len(self.allowed_missing)} allowed missing, "
            f"{len(self.unexpected)} unexpected, {len(self.mismatched)} mismatched, "
            f"{len(self.dropped)} dropped by name"
        )
        return "\n".join(lines)

    def summary(self, *, listed: int = 3, hint: str = "--debug prints the full load report") -> str:
        """One line naming the source and what does not fit, e.g. ``last.ckpt: does not fit
        this model: 1 missing (head.bias), 1 mismatched (cls_token: model (1, 1, 16) vs
        checkpoint (3,)); --debug prints the full load report`` (at most ``listed`` keys of
        each kind)."""

        def some(items: list[str]) -> str:
            more = f", … {len(items) - listed} more" if len(items) > listed else ""
            return ", ".join(items[:listed]) + more

        parts = [
            f"{len(keys)} {kind} ({some(keys)})"
            for kind, keys in (
                ("missing", self.missing),
                ("unexpected", self.unexpected),
                (
                    "mismatched",
                    [
                        f"{k}: model {tuple(m)} vs checkpoint {tuple(c)}"
                        for k, m, c in self.mismatched
                    ],
                ),
            )
            if keys
        ]
        if not parts:
            return f"{self.source}: fits this model ({len(self.loaded)} tensors)"
        return f"{self.source}: does not fit this model: {', '.join(parts)}; {hint}"

    def check(self, allow_missing: Iterable[str] = ()) -> LoadReport:
        """Move missing keys matching ``allow_missing`` (fnmatch patterns) to allowed; raise
        :class:`CheckpointMismatchError` with the table if anything else is wrong."""
        patterns = tuple(allow_missing)
        still = []
        for key in self.missing:
            if any(fnmatch.fnmatchcase(key, p) for p in patterns):
                self.allowed_missing.append(key)
            else:
                still.append(key)
        self.missing = still
        if not self.ok:
            raise CheckpointMismatchError(
                f"checkpoint {self.source} does not match the model:\n{self}\n"
                "Fix the key mapping, or pass allow_missing=(...) patterns for keys that are "
                "meant to stay freshly initialized.",
                self,
            )
        return self


def compare_state_dict(
    model: nn.Module, state_dict: Mapping[str, Any], *, source: str = "state dict"
) -> LoadReport:
    """The report of loading ``state_dict`` into ``model`` strictly, without loading anything
    (a value that is no tensor counts as mismatched)."""
    report = LoadReport(source=source)
    for key, target in model.state_dict().items():
        value = state_dict.get(key)
        if key not in state_dict:
            report.missing.append(key)
        elif isinstance(value, Tensor) and tuple(value.shape) == tuple(target.shape):
            report.loaded.append(key)
        else:
            shape = tuple(value.shape) if isinstance(value, Tensor) else ()
            report.mismatched.append((key, tuple(target.shape), shape))
    own = model.state_dict()
    report.unexpected = [str(k) for k in state_dict if k not in own]
    return report


def load_state_dict_with_report(
    model: nn.Module,
    state_dict: Mapping[str, Tensor],
    *,
    source: str = "state dict",
    resample: Resampler | None = None,
) -> LoadReport:
    """Copy matching tensors into ``model`` and report every key; never raises on mismatch.

    Keys whose shapes differ are offered to ``resample`` (e.g. positional embeddings for a new
    grid); what it returns is loaded and reported as resampled, otherwise the key is reported
    as mismatched and left untouched. Call :meth:`LoadReport.check` to fail loudly.
    """
    report = LoadReport(source=source)
    own = model.state_dict()
    accepted: dict[str, Tensor] = {}
    for key, target in own.items():
        if key not in state_dict:
            report.missing.append(key)
            continue
        value = state_dict[key]
        if tuple(value.shape) == tuple(target.shape):
            accepted[key] = value
            report.loaded.append(key)
            continue
        new = resample(key, value, target) if resample is not None else None
        if new is not None and tuple(new.shape) == tuple(target.shape):
            accepted[key] = new
            report.resampled.append((key, tuple(value.shape), tuple(target.shape)))
        else:
            report.mismatched.append((key, tuple(target.shape), tuple(value.shape)))
    report.unexpected = [k for k in state_dict if k not in own]
    with torch.no_grad():
        for key, value in accepted.items():
            own[key].copy_(value.to(dtype=own[key].dtype))
    return report
