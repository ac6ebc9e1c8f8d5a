"""Each training file checked in full the first time it is read; bad files skipped and
counted, as ``domainfm prepare`` skips them.

The file index (:func:`~domainfm.domains.audio.index.index_audio`) reads headers only, so a
truncated, damaged or silent recording passes it. The training datasets therefore ask a
:class:`FileChecks` about a file before they use it. On the first question about a file,
the whole file is decoded and checked (:func:`~domainfm.domains.audio.io.check_audio_file`:
container, decoded length, FLAC MD5, NaN/Inf, silence). A bad file gets one
:class:`~domainfm.domains.audio.index.AudioSkippedWarning` naming it and the reason, and the
dataset draws a replacement.

**Determinism.** A verdict depends only on the file's bytes, so which process checks a
file first, and when, changes nothing. Each sample's replacement follows from its own seed
alone, so seeded runs and resumed runs stay bit-identical.

**Sharing.** The verdicts live in a shared-memory tensor (one byte per file) created in
the main process. Every loader worker (forked or spawned) reads and writes the same
verdicts, so a file is usually checked once per run, and at the end of ``fit`` the main
process knows every file a worker skipped: :func:`report_skipped` logs the count as
``data/skipped_files`` and warns with the list.

Example::

    >>> checks = FileChecks(["a.ogg", "cut.ogg"])
    >>> checks.verdict(1)
    'cut.ogg: truncated: the Ogg stream stops at 4.13 s without its end-of-stream page ...'
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn

from domainfm.domains.audio.index import AudioSkippedWarning
from domainfm.domains.audio.io import check_audio_file

UNCHECKED, GOOD, BAD = 0, 1, 2


class FileChecks:
    """The verdict of each file's first full read, shared by the loader workers.

    Args:
        paths: the files, in the dataset's order.
        allow_silent: accept all-silent recordings (``False``: skipped, as ``prepare`` does).
    """

    def __init__(self, paths: Sequence[str | Path], *, allow_silent: bool = False) -> None:
        self.paths = [str(p) for p in paths]
        self.allow_silent = allow_silent
        self.status = torch.zeros(len(self.paths), dtype=torch.uint8).share_memory_()
        self.reasons: dict[int, str] = {}  # the reasons known in this process
        self._index = {p: k for k, p in enumerate(self.paths)}

    def __len__(self) -> int:
        return len(self.paths)

    def verdict(self, k: int) -> str | None:
        """``None`` when file ``k`` is good, else why it is bad; the file is checked in
        full on the first call (in whichever process)."""
        state = int(self.status[k])
        if state == GOOD:
            return None
        if state == BAD:
            return self.reasons.get(k, f"{self.paths[k]}: failed its check in a loader worker")
        try:
            check_audio_file(self.paths[k], allow_silent=self.allow_silent)
        except (ValueError, OSError) as err:
            self.mark_bad(k, str(err))
            return str(err)
        self.mark_good(k)
        return None

    def known_bad(self, k: int) -> bool:
        """Whether file ``k`` was already found bad (no check is run)."""
        return int(self.status[k]) == BAD

    def mark_good(self, k: int) -> None:
        """Record that file ``k`` passed a full read."""
        self.status[k] = GOOD

    def mark_bad(self, k: int, reason: str) -> None:
        """Record that file ``k`` failed (``reason`` names it); warn the first time."""
        first = int(self.status[k]) != BAD
        self.status[k] = BAD
        self.reasons[k] = reason
        if first:
            warnings.warn(f"skipped {reason}", AudioSkippedWarning, stacklevel=2)

    def mark_bad_path(self, path: str, reason: str) -> None:
        """:meth:`mark_bad` by path (for checks run outside the dataset, e.g. statistics)."""
        k = self._index.get(str(path))
        if k is not None:
            self.mark_bad(k, reason)

    def all_bad(self) -> bool:
        """Whether every file has been found bad."""
        return bool((self.status == BAD).all())

    def skipped(self) -> list[tuple[str, str]]:
        """``(path, reason)`` of every file found bad so far, by any process (a reason found
        in a loader worker is re-derived here)."""
        out = []
        for k in torch.nonzero(self.status == BAD).flatten().tolist():
            if k not in self.reasons:
                try:
                    check_audio_file(self.paths[k], allow_silent=self.allow_silent)
                    self.reasons[k] = f"{self.paths[k]}: failed its check in a loader worker"
                except (ValueError, OSError) as err:
                    self.reasons[k] = str(err)
            out.append((self.paths[k], self.reasons[k]))
        return out


def report_skipped(owner: Any, skipped: Sequence[tuple[str, str]], total: int) -> None:
    """The end-of-fit report of a data module (``owner``): the number of skipped files
    logged as ``data/skipped_files`` to the trainer's loggers, and one warning listing
    them (nothing when none was skipped)."""
    if not skipped:
        return
    trainer = getattr(owner, "trainer", None)
    if trainer is not None:
        for logger in trainer.loggers:
            logger.log_metrics({"data/skipped_files": float(len(skipped))}, trainer.global_step)
            logger.save()
    lines = "".join(f"\n  skipped {reason}" for _, reason in skipped)
    rank_zero_warn(
        f"{type(owner).__name__}: {len(skipped)} of {total} audio files were skipped "
        f"(unreadable, damaged, truncated or silent):{lines}",
        category=AudioSkippedWarning,
    )
