"""Prepared, sharded datasets: raw files → validated, preprocessed shards + a manifest.

``prepare_shards`` runs a domain's :class:`Preparer` over a folder once and writes the results
as LitData chunks (``litdata.optimize``; read back by
:class:`~domainfm.data.streaming.StreamingSamples`) with a manifest, ``OUT/manifest.json``:

* the domain and its preprocessing ``settings`` (a re-run with other settings is refused);
* one entry per source (a file, a DICOM series folder, or the dates of one place) with its
  files' size, mtime and SHA-256, its status (``"ok"`` or ``"skipped"`` with the reason),
  its item count and item shapes;
* totals and per-channel statistics (mean, std over every prepared value) for normalization.

Re-running on the same input is a no-op (files are matched by path, then size + mtime, then
checksum); new files are prepared and **appended** as new chunks; a file changed since it was
prepared is reported and its prepared version kept (prepare into a new folder to replace it).
A source that fails (corrupt, unreadable, nothing valid in it) is skipped, listed in the
summary by file name and reason, and never stops the run. A run that is killed leaves the
index as it was before: the next run restores it and prepares the unfinished sources again.

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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from domainfm.core.checkpoint_io import atomic_write
from domainfm.data.file_stamp import file_stamp

MANIFEST = "manifest.json"
INDEX = "index.json"  # LitData's chunk index
MANIFEST_FORMAT = 1
_STAGING = ".prepare-staging"
_BACKUP = "index.json.before-prepare"


@runtime_checkable
class Preparer(Protocol):
    """A domain's deterministic preprocessing, run once per source by :func:`prepare_shards`.

    Attributes:
        domain: the domain name recorded in the manifest (``"medical3d"``, ...).
    """

    domain: str

    def settings(self) -> dict[str, Any]:
        """Every setting that changes the prepared items (JSON-serializable)."""
        ...

    def sources(self, src_dir: Path) -> list[tuple[Path, ...]]:
        """The units of work under ``src_dir``: each a tuple of paths prepared together."""
        ...

    def items(self, paths: tuple[Path, ...]) -> Iterator[dict[str, Any]]:
        """The prepared items of one source (dicts of numpy arrays, ints, floats, strings;
        the same keys and types for every item). Raises ``ValueError`` naming the file and
        the problem for a bad source."""
        ...

    def channel_values(self, item: dict[str, Any]) -> np.ndarray | None:
        """``(C, M)`` values of ``item`` that enter the per-channel statistics (``None``:
        none)."""
        ...


@dataclass
class SourceResult:
    """What preparing one source gave (written by a LitData worker, read by the parent)."""

    key: str
    status: str  # "ok" or "skipped"
    reason: str = ""
    items: int = 0
    shapes: dict[str, list[list[int]]] = field(default_factory=dict)
    channel_count: list[float] = field(default_factory=list)
    channel_sum: list[float] = field(default_factory=list)
    channel_sumsq: list[float] = field(default_factory=list)


@dataclass
class PrepareSummary:
    """The outcome of :func:`prepare_shards`.

    Attributes:
        out_dir: the prepared folder.
        prepared: sources prepared in this run.
        unchanged: sources already prepared earlier (left as they were).
        skipped: ``(source, reason)`` of every source that failed in this run.
        skipped_earlier: ``(source, reason)`` of unchanged sources that failed before.
        changed: sources whose files changed since they were prepared (kept as prepared).
        items_added: items written in this run.
        total_items: items in the folder after the run.
        recovered: a previous interrupted run was rolled back.
        notes: other things the user should know (e.g. another source folder than before).
        seconds: wall time.
    """

    out_dir: Path
    prepared: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    skipped_earlier: list[tuple[str, str]] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    items_added: int = 0
    total_items: int = 0
    recovered: bool = False
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """A human-readable summary, one line per skipped or changed source."""
        head = (
            f"prepared {len(self.prepared)} new sources ({self.items_added} items) into "
            f"{self.out_dir}; {len(self.unchanged)} unchanged, {len(self.skipped)} skipped, "
            f"{len(self.changed)} changed since prepared; {self.total_items} items in total "
            f"({self.seconds:.1f} s)"
        )
        if not self.prepared and not self.skipped:
            head = f"nothing new to prepare in {self.out_dir} ({self.total_items} items)"
        lines = [head]
        if self.recovered:
            lines.append("  rolled back an interrupted earlier run (its sources were redone)")
        lines += [f"  note: {note}" for note in self.notes]
        lines += [f"  skipped {source}: {reason}" for source, reason in self.skipped]
        lines += [
            f"  skipped {source} (in an earlier run, unchanged since): {reason}"
            for source, reason in self.skipped_earlier
        ]
        lines += [
            f"  changed {source}: kept the prepared version (prepare into a new folder to "
            "replace it)"
            for source in self.changed
        ]
        return "\n".join(lines)


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


def _fingerprints(
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
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: unreadable manifest ({err})") from err
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path}: manifest format {manifest.get('format')!r} is not supported")
    return manifest


def channel_stats(manifest: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-channel ``(mean, std)`` over every prepared value, from the manifest's sums."""
    stats = manifest.get("stats")
    if not stats or not stats.get("count"):
        return None
    count = np.asarray(stats["count"], dtype=np.float64)
    mean = np.asarray(stats["sum"], dtype=np.float64) / count
    var = np.asarray(stats["sumsq"], dtype=np.float64) / count - mean**2
    return mean, np.sqrt(np.maximum(var, 0.0))


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
        files = _fingerprints(paths, src, known_files)
        old = manifest["sources"].get(key)
        if old is not None and _same_content(old["files"], files):
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
        listing = "\n".join(f"  {k}: {r}" for k, r in failed) or "  (no inputs found)"
        raise ValueError(f"nothing could be prepared from {src}:\n{listing}")
    summary.seconds = time.perf_counter() - started
    if todo or summary.recovered or touched:
        _finish_manifest(manifest, ok, out, summary)
    (out / _BACKUP).unlink(missing_ok=True)
    shutil.rmtree(out / _STAGING, ignore_errors=True)
    return summary


def _same_content(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> bool:
    """The same files with the same checksums (a touched but unchanged file)."""
    return [(f["path"], f["sha256"]) for f in old] == [(f["path"], f["sha256"]) for f in new]


def _finish_manifest(
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
