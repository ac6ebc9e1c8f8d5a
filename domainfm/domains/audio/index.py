"""A folder index of audio files: path, duration, rate, channels — read from headers once and
cached.

:func:`index_audio` opens every file's header (nothing decoded), returns one
:class:`~domainfm.domains.audio.io.AudioInfo` per readable file and ``(path, reason)`` for
every file that could not be read (unsupported format, corrupt header, zero length): those
are reported, counted and left out, never silently dropped and never fatal. With ``cache``
the index is stored as JSON keyed by each file's size and modification time; an unchanged
file is not reopened on the next run, a changed or new one is. A header can look fine on a
truncated, damaged or silent file: the training datasets check each file in full when they
first read it (:mod:`~domainfm.domains.audio.file_checks`).

Example::

    >>> infos, skipped = index_audio(files, cache="audio_index.json")
    >>> sum(i.duration for i in infos) / 3600          # hours of audio
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from domainfm.core.checkpoint_io import atomic_write_json
from domainfm.data.file_stamp import file_stamp
from domainfm.domains.audio.io import AudioInfo, audio_info

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif")
"""File suffixes a folder scan picks up."""


class AudioSkippedWarning(UserWarning):
    """An audio file was left out of the index (its path and reason are in the message)."""


def _stamp(path: Path) -> list[float]:
    """The file's stamp as the cache stores it (floats, as JSON reads them back)."""
    return [float(v) for v in file_stamp(path)]


def index_audio(
    files: Sequence[str | Path], *, cache: str | Path | None = None
) -> tuple[list[AudioInfo], list[tuple[str, str]]]:
    """Header facts of every file (see the module docstring).

    Returns:
        ``(infos, skipped)``: readable files in the given order, and ``(path, reason)`` of
        the others (each also warned with :class:`AudioSkippedWarning`).

    Raises:
        FileNotFoundError: a listed file does not exist (a configuration error).
    """
    stored: dict[str, dict[str, object]] = {}
    if cache is not None and Path(cache).is_file():
        stored = json.loads(Path(cache).read_text()).get("files", {})
    infos: list[AudioInfo] = []
    skipped: list[tuple[str, str]] = []
    entries: dict[str, dict[str, object]] = {}
    for item in files:
        path = Path(item)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such audio file")
        key, stamp = str(path.resolve()), _stamp(path)
        entry = stored.get(key)
        if entry is None or entry.get("stamp") != stamp:
            try:
                entry = {"stamp": stamp, "info": asdict(audio_info(path))}
            except ValueError as err:
                entry = {"stamp": stamp, "error": str(err)}
        entries[key] = entry
        if "error" in entry:
            reason = str(entry["error"])
            skipped.append((str(path), reason))
            warnings.warn(f"skipped {reason}", AudioSkippedWarning, stacklevel=2)
            continue
        info = dict(entry["info"])  # type: ignore[call-overload]
        info["path"] = str(path)
        infos.append(AudioInfo(**info))
    if cache is not None:
        atomic_write_json(cache, {"files": entries})
    return infos, skipped
