"""Local Hugging Face cache folders: find the snapshot a cache folder stands for, offline.

``huggingface_hub`` stores a downloaded repository as::

    models--ORG--NAME/
        refs/main                 # the commit hash the "main" revision points to
        snapshots/<hash>/...      # the files of that commit (symlinks into blobs/)
        blobs/...

:func:`resolve_snapshot` turns such a ``models--ORG--NAME`` folder into its snapshot folder
(the revision ``refs/main`` names, or the only snapshot there is); any other path is returned
unchanged. :func:`weights_in_folder` goes one step further for a release's own repository (a
snapshot of e.g. ``ibm-nasa-geospatial/Prithvi-EO-1.0-100M``, no domainfm export): its one
weights file. Nothing is downloaded and no network is touched: the files must be in the cache.

Example::

    >>> resolve_snapshot("~/.cache/huggingface/hub/models--acme--ct-mae")
    PosixPath('.../models--acme--ct-mae/snapshots/3f2c...')
"""

from __future__ import annotations

import json
from pathlib import Path

from domainfm.pretrained.export import CONFIG_NAME, FORMAT
from domainfm.pretrained.release_file import RELEASE_SUFFIXES

CACHE_PREFIX = "models--"


def is_cache_repo_folder(path: Path) -> bool:
    """True for a ``models--ORG--NAME`` folder of a Hugging Face cache."""
    return path.is_dir() and path.name.startswith(CACHE_PREFIX) and (path / "snapshots").is_dir()


def resolve_snapshot(path: str | Path, *, revision: str = "main") -> Path:
    """The snapshot folder of a Hugging Face cache repository folder, else ``path`` itself.

    Args:
        path: a ``models--ORG--NAME`` cache folder, a snapshot folder, or any other path.
        revision: the ref to follow (``refs/<revision>``); a commit hash names a snapshot
            directly.

    Raises:
        FileNotFoundError: naming the folder when the ref points to a snapshot that is not in
            the cache, or the cache holds several snapshots and no ref says which.
    """
    folder = Path(path).expanduser()
    if not is_cache_repo_folder(folder):
        return folder
    snapshots = folder / "snapshots"
    ref = folder / "refs" / revision
    if ref.is_file():
        commit = ref.read_text(encoding="utf-8", errors="replace").strip()
        target = snapshots / commit
        if not commit or not target.is_dir():
            raise FileNotFoundError(
                f"{folder}: refs/{revision} names snapshot {commit!r}, which is not in the cache "
                "(nothing is downloaded; fetch it with huggingface_hub first)"
            )
        return target
    if (snapshots / revision).is_dir():
        return snapshots / revision
    found = sorted(p for p in snapshots.iterdir() if p.is_dir())
    if len(found) == 1:
        return found[0]
    names = ", ".join(p.name for p in found) or "none"
    raise FileNotFoundError(
        f"{folder}: no refs/{revision} and {len(found)} snapshots ({names}); give the snapshot "
        "folder itself"
    )


def _is_domainfm_config(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, ValueError, RecursionError):  # the export reader names what is wrong
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT


def weights_in_folder(path: str | Path) -> Path:
    """The file to load from ``path``: a Hugging Face cache folder resolved to its snapshot;
    a folder that is no domainfm export (no ``config.json`` in domainfm's format) but holds
    exactly one weights file (``.pt``, ``.pth``, ``.bin``, ``.safetensors``) → that file;
    anything else unchanged.

    Raises:
        ValueError: naming the folder when it is no domainfm export and holds several weights
            files (which one is meant cannot be guessed).
    """
    folder = resolve_snapshot(path)
    if not folder.is_dir() or _is_domainfm_config(folder / CONFIG_NAME):
        return folder
    found = sorted(
        p for p in folder.iterdir() if p.suffix in RELEASE_SUFFIXES and not p.name.startswith(".")
    )
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise ValueError(
            f"{folder}: no domainfm export, and {len(found)} weights files ({names}); give the "
            "file to load"
        )
    return folder
