"""Local Hugging Face cache folders: find the snapshot a cache folder stands for, offline.

``huggingface_hub`` stores a downloaded repository as::

    models--ORG--NAME/
        refs/main                 # the commit hash the "main" revision points to
        snapshots/<hash>/...      # the files of that commit (symlinks into blobs/)
        blobs/...

:func:`resolve_snapshot` turns such a ``models--ORG--NAME`` folder into its snapshot folder
(the revision ``refs/main`` names, or the only snapshot there is); any other path is returned
unchanged. Nothing is downloaded and no network is touched: the files must be in the cache.

Example::

    >>> resolve_snapshot("~/.cache/huggingface/hub/models--acme--ct-mae")
    PosixPath('.../models--acme--ct-mae/snapshots/3f2c...')
"""

from __future__ import annotations

from pathlib import Path

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
