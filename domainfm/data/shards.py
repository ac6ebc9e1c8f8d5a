"""Prepared, sharded datasets: raw files → validated, preprocessed shards + a manifest.

``prepare_shards`` runs a domain's :class:`~domainfm.data.preparer.Preparer` over a folder
once and writes the results as LitData chunks (``litdata.optimize``; read back by
:class:`~domainfm.data.streaming.StreamingSamples`) with a manifest, ``OUT/manifest.json``
(:mod:`domainfm.data.manifest`: the domain and its settings, every source with its files'
fingerprints, status and items, per-channel statistics).

Re-running on the same input is a no-op (files are matched by path, then size + mtime, then
checksum); new files are prepared and **appended** as new chunks; a file changed since it was
prepared is reported and its prepared version kept (prepare into a new folder to replace it).
A source that fails (corrupt, unreadable, nothing valid in it) is skipped, listed in the
summary by file name and reason, and never stops the run. A run that is killed leaves the
index as it was before: the next run restores it and prepares the unfinished sources again.

This module also re-exports the names domains and tools import with it (:class:`Preparer`,
:func:`source_key`, :func:`read_manifest`, :func:`channel_stats`, ...).

Example::

    >>> summary = prepare_shards(VolumePreparer(spacing=1.5), "scans/", "prepared/")
    >>> print(summary.describe())
    prepared 118 of 120 sources (118 items, 0 unchanged) into prepared/ ...
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from domainfm.core.checkpoint_io import atomic_write
from domainfm.data.manifest import (
    INDEX,
    MANIFEST,
    MANIFEST_FORMAT,
    channel_stats,
    file_fingerprints,
    finish_manifest,
    read_manifest,
    same_content,
    source_key,
)
from domainfm.data.preparer import Preparer, PrepareSummary, SourceResult

__all__ = [
    "INDEX",
    "MANIFEST",
    "MANIFEST_FORMAT",
    "PrepareSummary",
    "Preparer",
    "SourceResult",
    "channel_stats",
    "prepare_shards",
    "read_manifest",
    "source_key",
]

_STAGING = ".prepare-staging"
_BACKUP = "index.json.before-prepare"


class _PrepareWork:
    """The function LitData's workers run on each source: prepare it completely in memory
    (so a failure half-way writes nothing of it), record the outcome in the staging folder,
    then yield its items to the chunk writer."""

    def __init__(self, preparer: Preparer, staging: Path, root: Path) -> None:
        self.preparer = preparer
        self.staging = staging
        self.root = root

    def __call__(self, paths: tuple[Path, ...]) -> Iterator[dict[str, Any]]:
        key = source_key(paths, self.root)
        try:
            items = list(self.preparer.items(paths))
            if not items:
                raise ValueError(f"{key}: no items (nothing valid to prepare)")
            for item in items:  # every item names its source as the manifest does
                item["source"] = key
            result = _summarize(key, items, self.preparer)
        except Exception as err:  # any failure of one source: record it, never stop the run
            reason = str(err) or type(err).__name__
            if not isinstance(err, ValueError):
                reason = f"{type(err).__name__}: {reason}"
            _write_result(self.staging, SourceResult(key=key, status="skipped", reason=reason))
            if os.environ.get("DOMAINFM_PREPARE_DEBUG"):
                traceback.print_exc()
            return
        _write_result(self.staging, result)
        yield from items


def _summarize(key: str, items: list[dict[str, Any]], preparer: Preparer) -> SourceResult:
    shapes: dict[str, list[list[int]]] = {}
    for item in items:
        for name, value in item.items():
            if isinstance(value, np.ndarray):
                shape = list(value.shape)
                seen = shapes.setdefault(name, [])
                if shape not in seen and len(seen) < 8:
                    seen.append(shape)
    result = SourceResult(key=key, status="ok", items=len(items), shapes=shapes)
    moments: np.ndarray | None = None  # (3, C): count, sum, sum of squares per channel
    for item in items:
        values = preparer.channel_values(item)
        if values is None:
            continue
        v = values.astype(np.float64)  # (C, M)
        here = np.stack([np.full(len(v), v.shape[1]), v.sum(axis=1), (v * v).sum(axis=1)])
        moments = here if moments is None else moments + here
    if moments is not None:
        result.channel_count, result.channel_sum, result.channel_sumsq = moments.tolist()
    return result


def _write_result(staging: Path, result: SourceResult) -> None:
    name = hashlib.sha256(result.key.encode()).hexdigest()[:32] + ".json"
    text = json.dumps(result.__dict__)
    atomic_write(staging / name, lambda tmp: tmp.write_text(text))


def _recover(out: Path) -> bool:
    """Roll back a run that was killed: restore the index saved before it and delete the
    chunks it wrote (they are not in the restored index)."""
    backup, staging = out / _BACKUP, out / _STAGING
    if not backup.exists() and not staging.exists():
        return False
    index = out / INDEX
    if (out / MANIFEST).exists() and index.exists():
        recorded = read_manifest(out).get("index_chunks")
        current = [c["filename"] for c in json.loads(index.read_text())["chunks"]]
        if recorded == current:  # killed after its manifest was written: the run completed
            backup.unlink(missing_ok=True)
            shutil.rmtree(staging, ignore_errors=True)
            return False
    if backup.exists():
        os.replace(backup, index)
    elif index.exists() and not (out / MANIFEST).exists():
        index.unlink()  # the very first run died after LitData wrote its index
    kept = set()
    if index.exists():
        kept = {c["filename"] for c in json.loads(index.read_text())["chunks"]}
    for chunk in out.glob("chunk-*.bin"):
        if chunk.name not in kept:
            chunk.unlink()
    shutil.rmtree(staging, ignore_errors=True)
    return True


def prepare_shards(
    preparer: Preparer,
    src_dir: str | Path,
    out_dir: str | Path,
    *,
    num_workers: int = 1,
    chunk_bytes: str = "64MB",
    progress: bool = False,
) -> PrepareSummary:
    """Prepare every source under ``src_dir`` into LitData chunks in ``out_dir``.

    Args:
        preparer: the domain's preprocessing.
        src_dir: folder of raw inputs.
        out_dir: the prepared folder (created; appended to when it exists).
        num_workers: LitData worker processes preparing sources in parallel.
        chunk_bytes: target chunk (shard) size.
        progress: show a progress bar of finished sources (stderr).

    Returns:
        the :class:`PrepareSummary` (also written into the manifest's ``runs``).

    Raises:
        FileNotFoundError: ``src_dir`` does not exist.
        ValueError: ``out_dir`` was prepared for another domain or with other settings, or
            nothing at all could be prepared (every reason listed).
    """
    started = time.perf_counter()
    src, out = Path(src_dir), Path(out_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"source folder {src} does not exist")
    out.mkdir(parents=True, exist_ok=True)
    summary = PrepareSummary(out_dir=out, recovered=_recover(out))
    sources = preparer.sources(src)  # first: a preparer may fill settings from the inputs
    settings = json.loads(json.dumps(preparer.settings()))  # as it reads back from JSON
    manifest: dict[str, Any]
    if (out / MANIFEST).exists():
        manifest = read_manifest(out)
        if manifest.get("source_root") != str(src.resolve()):
            summary.notes.append(
                f"{out} was first prepared from {manifest.get('source_root')}; sources are "
                f"matched by their path relative to {src}"
            )
        if manifest["domain"] != preparer.domain or manifest["settings"] != settings:
            raise ValueError(
                f"{out} was prepared for {manifest['domain']} with settings "
                f"{manifest['settings']}, not {preparer.domain} with {settings}; prepare into "
                "a new folder"
            )
    else:
        manifest = {
            "format": MANIFEST_FORMAT,
            "domain": preparer.domain,
            "settings": settings,
            "source_root": str(src.resolve()),
            "sources": {},
            "runs": [],
        }
    known_files = {
        f["path"]: f for entry in manifest["sources"].values() for f in entry.get("files", [])
    }
    todo: list[tuple[Path, ...]] = []
    fingerprints: dict[str, list[dict[str, Any]]] = {}
    touched = False
    for paths in sources:
        key = source_key(paths, src)
        files = file_fingerprints(paths, src, known_files)
        old = manifest["sources"].get(key)
        if old is not None and same_content(old["files"], files):
            if old["files"] != files:  # touched, same content: remember the new mtime
                old["files"] = files
                touched = True
            if old["status"] == "ok":
                summary.unchanged.append(key)
            # an earlier skipped source with the same content stays skipped (and listed)
            else:
                summary.skipped_earlier.append((key, old["reason"]))
            continue
        if old is not None and old["status"] == "ok":
            summary.changed.append(key)
            continue
        fingerprints[key] = files
        todo.append(paths)

    if todo:
        results = _run_litdata(preparer, todo, src, out, num_workers, chunk_bytes, progress)
        for key, files in fingerprints.items():
            result = results.get(key) or SourceResult(
                key=key,
                status="skipped",
                reason="the preparing worker did not report (it crashed; rerun with "
                "DOMAINFM_PREPARE_DEBUG=1 to see its output)",
            )
            entry: dict[str, Any] = {"files": files, "status": result.status}
            if result.status == "ok":
                entry.update(items=result.items, shapes=result.shapes)
                entry["channel"] = {
                    "count": result.channel_count,
                    "sum": result.channel_sum,
                    "sumsq": result.channel_sumsq,
                }
                summary.prepared.append(key)
                summary.items_added += result.items
            else:
                entry["reason"] = result.reason
                summary.skipped.append((key, result.reason))
            manifest["sources"][key] = entry

    ok = [e for e in manifest["sources"].values() if e["status"] == "ok"]
    summary.total_items = sum(e["items"] for e in ok)
    if summary.total_items == 0:  # a first run where every source failed: leave no index
        shutil.rmtree(out / _STAGING, ignore_errors=True)
        if not (out / MANIFEST).exists():
            (out / INDEX).unlink(missing_ok=True)
            for chunk in out.glob("chunk-*.bin"):
                chunk.unlink()
        failed = summary.skipped + summary.skipped_earlier
        listing = "; ".join(f"{k}: {' '.join(r.split())}" for k, r in failed[:5])
        more = f"; and {len(failed) - 5} more" if len(failed) > 5 else ""
        raise ValueError(
            f"nothing could be prepared from {src}: {listing or 'no inputs found'}{more}"
        )
    summary.seconds = time.perf_counter() - started
    if todo or summary.recovered or touched:
        finish_manifest(manifest, ok, out, summary)
    (out / _BACKUP).unlink(missing_ok=True)
    shutil.rmtree(out / _STAGING, ignore_errors=True)
    return summary


def _show_progress(staging: Path, total: int, done: threading.Event, enabled: bool) -> None:
    """A progress bar of sources finished (the workers' result files), until ``done``."""
    from tqdm import tqdm

    with tqdm(total=total, desc="prepare", unit="source", disable=not enabled) as bar:
        while True:
            finished = done.wait(0.5)
            count = sum(1 for _ in staging.glob("*.json")) if staging.exists() else bar.n
            bar.update(count - bar.n)
            if finished:
                return


def _run_litdata(
    preparer: Preparer,
    todo: list[tuple[Path, ...]],
    src: Path,
    out: Path,
    num_workers: int,
    chunk_bytes: str,
    progress: bool,
) -> dict[str, SourceResult]:
    """``litdata.optimize`` over the sources (appending to an existing index), keeping the
    index as it was so a killed run can be rolled back; returns each source's result."""
    os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")  # no PyPI call at run time
    try:
        from litdata import optimize
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise ImportError("prepare needs litdata: pip install litdata") from err
    staging = out / _STAGING
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    appending = (out / INDEX).exists()
    if appending:
        shutil.copyfile(out / INDEX, out / _BACKUP)
    start_method = multiprocessing.get_start_method(allow_none=True)
    done = threading.Event()
    watcher = threading.Thread(
        target=_show_progress, args=(staging, len(todo), done, progress), daemon=True
    )
    watcher.start()
    try:
        optimize(
            fn=_PrepareWork(preparer, staging, src),
            inputs=todo,
            output_dir=str(out),
            chunk_bytes=chunk_bytes,
            num_workers=max(1, min(num_workers, len(todo))),
            mode="append" if appending else None,
            reorder_files=False,
            # spawn: a forked worker can deadlock on locks held by the parent's threads
            # (seen with torchaudio); scripts calling this need the __main__ guard
            start_method="spawn",
            verbose=bool(os.environ.get("DOMAINFM_PREPARE_DEBUG")),
        )
    finally:  # LitData switches the global start method to spawn; give it back
        multiprocessing.set_start_method(start_method, force=True)
        done.set()
        watcher.join()
    results = {}
    for path in staging.glob("*.json"):
        result = SourceResult(**json.loads(path.read_text()))
        results[result.key] = result
    return results
