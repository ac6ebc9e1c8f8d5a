"""A cached index of the volumes under a folder: geometry from headers only, errors listed.

:meth:`VolumeIndex.build` walks folders for NIfTI files (``*.nii``, ``*.nii.gz``) and DICOM
series folders (a folder with DICOM files directly inside, see
:func:`~domainfm.domains.medical3d.dicom.is_dicom_file`) and reads each one's **header only**
(nibabel header; pydicom with ``stop_before_pixels``) with
:func:`~domainfm.domains.medical3d.io.read_header`: shape, spacing, affine, modality (DICOM
tag; ``None`` for NIfTI), plus the file's size and modification time. An unreadable or
invalid volume (corrupt, 2D, 4D, a DICOM folder mixing series, missing slices, ...) is an
entry with ``status="error"`` and the reason; it does not stop the build.

With ``cache=``, the index is written as JSON (atomically) and the next build re-reads only
the volumes whose size or mtime changed, and new ones: an unchanged tree is indexed without
opening a single volume.

Example::

    >>> index = VolumeIndex.build("data/ct", cache="data/ct_index.json")
    >>> len(index), index.reads            # second run: nothing re-read
    (120, 0)
    >>> [(e.path, e.reason) for e in index.errors]
    [('data/ct/broken.nii.gz', 'could not read ... as NIfTI: ...')]
    >>> ds = VolumeCropDataset(files=index.paths(), crop_size=64)
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from domainfm.core.checkpoint_io import atomic_write_json
from domainfm.data.file_stamp import file_stamp
from domainfm.domains.medical3d.dicom import dicom_files, is_dicom_file
from domainfm.domains.medical3d.io import read_header
from domainfm.domains.medical3d.nifti import is_nifti
from domainfm.domains.medical3d.volume_types import Geometry, check_geometry_choice

INDEX_FORMAT = 1
"""Version of the JSON cache layout; a cache of another version is rebuilt."""


@dataclass(frozen=True)
class Fingerprint:
    """What changes when a volume changes: bytes, newest mtime (ns), number of files."""

    size: int
    mtime_ns: int
    files: int


def fingerprint(path: str | Path) -> Fingerprint:
    """The :class:`Fingerprint` of a file, or of a DICOM series folder (over its DICOM files,
    :func:`~domainfm.domains.medical3d.dicom.dicom_files`: a slice added, removed, rewritten or
    touched changes it; other files in the folder do not)."""
    source = Path(path)
    if not source.is_dir():
        return Fingerprint(*file_stamp(source), files=1)
    stamps = [file_stamp(f) for f in dicom_files(source)]
    return Fingerprint(
        size=sum(s.size for s in stamps),
        mtime_ns=max((s.mtime_ns for s in stamps), default=0),
        files=len(stamps),
    )


@dataclass(frozen=True)
class IndexEntry:
    """One volume of the index.

    Attributes:
        path: the NIfTI file or DICOM series folder (absolute).
        kind: ``"nifti"`` or ``"dicom"``.
        size: bytes (a DICOM folder: all its DICOM files).
        mtime_ns: modification time in ns (a DICOM folder: its newest file).
        files: 1, or the number of files of a DICOM folder.
        status: ``"ok"`` or ``"error"``.
        reason: why the volume is unusable (``status="error"``), else ``None``.
        shape: spatial shape ``(D, H, W)`` (``None`` on error).
        spacing: voxel size in mm (``None`` on error).
        affine: ``4 × 4`` voxel → RAS mm as nested lists (``None`` on error).
        modality: ``"ct"`` / ``"mri"`` from a DICOM ``Modality`` tag, else ``None``.
    """

    path: str
    kind: Literal["nifti", "dicom"]
    size: int
    mtime_ns: int
    files: int
    status: Literal["ok", "error"]
    reason: str | None = None
    shape: tuple[int, int, int] | None = None
    spacing: tuple[float, float, float] | None = None
    affine: tuple[tuple[float, ...], ...] | None = None
    modality: Literal["ct", "mri"] | None = None

    @property
    def fingerprint(self) -> Fingerprint:
        return Fingerprint(size=self.size, mtime_ns=self.mtime_ns, files=self.files)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IndexEntry:
        def tup(value: Any) -> Any:
            return None if value is None else tuple(value)

        affine = data.get("affine")
        return cls(
            **{
                **data,
                "shape": tup(data.get("shape")),
                "spacing": tup(data.get("spacing")),
                "affine": None if affine is None else tuple(tuple(row) for row in affine),
            }
        )


class VolumeIndex:
    """The volumes under some folders/files, from headers, optionally cached as JSON.

    Args:
        entries: the index entries (use :meth:`build`).
        reads: how many volumes :meth:`build` read (the rest came from the cache).
    """

    def __init__(self, entries: Sequence[IndexEntry], *, reads: int = 0) -> None:
        self.entries = list(entries)
        self.reads = reads

    @classmethod
    def build(
        cls,
        root_or_files: str | Path | Sequence[str | Path],
        *,
        cache: str | Path | None = None,
        geometry: Geometry = "strict",
    ) -> VolumeIndex:
        """Index a folder (walked recursively), a file, or a list of them.

        Args:
            root_or_files: a folder to walk, a NIfTI file or DICOM series folder, or a list.
            cache: JSON file to reuse and (re)write; entries whose size and mtime are unchanged
                are taken from it without reading the volume.
            geometry: which transform places the voxels of a NIfTI file whose qform and
                sform disagree (see :func:`~domainfm.domains.medical3d.io.load_volume`);
                with ``"strict"`` (default) such a file is an error entry. A cache is
                reused only for the same choice.

        Raises:
            FileNotFoundError: a given path does not exist.
        """
        check_geometry_choice(geometry)
        roots = [root_or_files] if isinstance(root_or_files, str | Path) else root_or_files
        cache_path = Path(cache).resolve() if cache is not None else None
        cached = _read_cache(cache_path, geometry) if cache_path is not None else {}
        entries, reads = [], 0
        for kind, path in find_volumes([Path(r) for r in roots], skip=cache_path):
            stamp = fingerprint(path)
            previous = cached.get(str(path))
            if previous is not None and previous.fingerprint == stamp:
                entries.append(previous)
                continue
            reads += 1
            entries.append(_read_entry(path, kind, stamp, geometry))
        if cache_path is not None:
            data: dict[str, Any] = {"format": INDEX_FORMAT}
            if geometry != "strict":
                data["geometry"] = geometry
            atomic_write_json(cache_path, {**data, "entries": [e.to_json() for e in entries]})
        return cls(entries, reads=reads)

    @property
    def ok(self) -> list[IndexEntry]:
        """The usable volumes."""
        return [e for e in self.entries if e.status == "ok"]

    @property
    def errors(self) -> list[IndexEntry]:
        """The volumes that could not be read or are invalid (with ``reason``)."""
        return [e for e in self.entries if e.status == "error"]

    def paths(self) -> list[Path]:
        """Paths of the usable volumes (e.g. ``VolumeCropDataset(files=index.paths())``)."""
        return [Path(e.path) for e in self.ok]

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[IndexEntry]:
        return iter(self.entries)


def find_volumes(
    roots: Sequence[Path], *, skip: Path | None
) -> Iterator[tuple[Literal["nifti", "dicom"], Path]]:
    """``(kind, absolute path)`` of every NIfTI file and DICOM series folder, in walk order."""
    seen: set[Path] = set()
    for root in roots:
        if not root.exists():
            raise FileNotFoundError(f"volume or folder {root} does not exist")
        root = root.resolve()
        if root.is_file():
            found: list[tuple[Literal["nifti", "dicom"], Path]] = [
                ("nifti" if is_nifti(root) else "dicom", root)
            ]
        else:
            found = []
            for folder, dirs, names in os.walk(root):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                here = Path(folder)
                files = [here / n for n in sorted(names) if here / n != skip]
                found += [("nifti", f) for f in files if is_nifti(f) and f.is_file()]
                if any(is_dicom_file(f) for f in files):
                    found.append(("dicom", here))
        for kind, path in found:
            if path not in seen:
                seen.add(path)
                yield kind, path


def _read_entry(
    path: Path, kind: Literal["nifti", "dicom"], stamp: Fingerprint, geometry: Geometry
) -> IndexEntry:
    def entry(status: Literal["ok", "error"], **fields: Any) -> IndexEntry:
        return IndexEntry(
            path=str(path),
            kind=kind,
            size=stamp.size,
            mtime_ns=stamp.mtime_ns,
            files=stamp.files,
            status=status,
            **fields,
        )

    try:
        header = read_header(path, **({} if geometry == "strict" else {"geometry": geometry}))
    except (ValueError, OSError) as err:
        return entry("error", reason=str(err))
    return entry(
        "ok",
        shape=header.shape,
        spacing=header.spacing,
        affine=tuple(tuple(float(v) for v in row) for row in header.affine),
        modality=header.modality,
    )


def _read_cache(path: Path, geometry: Geometry) -> dict[str, IndexEntry]:
    """Cached entries by path; a missing, unreadable or outdated cache, or one built with
    another ``geometry``, gives none."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        if data.get("format") != INDEX_FORMAT or data.get("geometry", "strict") != geometry:
            return {}
        entries = [IndexEntry.from_json(e) for e in data["entries"]]
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        warnings.warn(f"ignoring unreadable volume index cache {path}: {err}", stacklevel=3)
        return {}
    return {e.path: e for e in entries}
