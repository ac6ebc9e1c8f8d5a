"""The manifest of a prepared folder, ``OUT/manifest.json``, and the bookkeeping behind it.

The manifest records:

* the domain and its preprocessing ``settings`` (a re-run with other settings is refused);
* one entry per source (a file, a DICOM series folder, or the dates of one place), keyed by
  :func:`source_key`, with its files' size, mtime and SHA-256 (:func:`file_fingerprints`), its
  status (``"ok"`` or ``"skipped"`` with the reason), its item count and item shapes;
* totals and per-channel statistics (mean, std over every prepared value, :func:`channel_stats`)
  for normalization, the chunks of LitData's index (``OUT/index.json``) it describes, and a
  record of every run (:func:`finish_manifest`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from domainfm.core.checkpoint_io import atomic_write, read_json_document
from domainfm.data.file_stamp import file_stamp
from domainfm.data.preparer import PrepareSummary

MANIFEST = "manifest.json"
INDEX = "index.json"  # LitData's chunk index
MANIFEST_FORMAT = 1


def source_key(paths: Sequence[Path], root: Path) -> str:
    """The manifest key of a source: its paths relative to ``root``, joined by ``" + "``."""
    return " + ".join(_relative(p, root) for p in paths)


def _relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` (symlinks inside ``root`` keep their own names)."""
    absolute = Path(os.path.abspath(path))
    try:
        return str(absolute.relative_to(os.path.abspath(root)))
    except ValueError:
        return str(absolute)


def _files_of(path: Path) -> list[Path]:
    """A file, or the files of a folder source (a DICOM series), sorted."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    return [path]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def file_fingerprints(
    paths: Sequence[Path], root: Path, known: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """Size, mtime and SHA-256 of every file of a source; the checksum is reused from
    ``known`` (the manifest's files by relative path) when size and mtime are unchanged."""
    out = []
    for path in paths:
        for file in _files_of(path):
            stamp = file_stamp(file)
            rel = _relative(file, root)
            entry = {"path": rel, **stamp._asdict()}
            old = known.get(rel)
            if old and (old["size"], old["mtime_ns"]) == stamp:
                entry["sha256"] = old["sha256"]
            else:
                entry["sha256"] = _sha256(file)
            out.append(entry)
    return out


def read_manifest(out_dir: str | Path, *, name: str = MANIFEST) -> dict[str, Any]:
    """The manifest of a prepared folder (``name``: the file in it).

    Raises:
        FileNotFoundError: ``out_dir`` has no manifest (not prepared by ``domainfm prepare``).
        ValueError: the manifest is unreadable or of an unknown format.
    """
    path = Path(out_dir) / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{out_dir} is not a prepared dataset (no {MANIFEST}); run `domainfm prepare` first"
        )
    return read_json_document(path, MANIFEST_FORMAT, what="manifest")


def channel_stats(manifest: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-channel ``(mean, std)`` over every prepared value, from the manifest's sums."""
    stats = manifest.get("stats")
    if not stats or not stats.get("count"):
        return None
    count = np.asarray(stats["count"], dtype=np.float64)
    mean = np.asarray(stats["sum"], dtype=np.float64) / count
    var = np.asarray(stats["sumsq"], dtype=np.float64) / count - mean**2
    return mean, np.sqrt(np.maximum(var, 0.0))


def same_content(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> bool:
    """The same files with the same checksums (a touched but unchanged file)."""
    return [(f["path"], f["sha256"]) for f in old] == [(f["path"], f["sha256"]) for f in new]


def finish_manifest(
    manifest: dict[str, Any], ok: list[dict[str, Any]], out: Path, summary: PrepareSummary
) -> None:
    """Totals, statistics and this run's record; written atomically (after the chunks)."""
    counted = [e["channel"] for e in ok if e.get("channel", {}).get("count")]
    if counted:
        manifest["stats"] = {
            name: np.sum([c[name] for c in counted], axis=0).tolist()
            for name in ("count", "sum", "sumsq")
        }
        mean, std = channel_stats(manifest)  # type: ignore[misc]
        manifest["stats"]["mean"], manifest["stats"]["std"] = mean.tolist(), std.tolist()
    index = json.loads((out / INDEX).read_text())
    manifest["index_chunks"] = [c["filename"] for c in index["chunks"]]
    manifest["totals"] = {
        "sources": len(manifest["sources"]),
        "ok": len(ok),
        "skipped": len(manifest["sources"]) - len(ok),
        "items": summary.total_items,
        "chunks": len(index["chunks"]),
        "bytes": int(sum(c.get("chunk_bytes", 0) for c in index["chunks"])),
    }
    manifest["runs"].append(
        {
            "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "prepared": len(summary.prepared),
            "skipped": len(summary.skipped),
            "items_added": summary.items_added,
            "seconds": round(summary.seconds, 2),
        }
    )
    text = json.dumps(manifest, indent=1)
    atomic_write(out / MANIFEST, lambda tmp: tmp.write_text(text))
