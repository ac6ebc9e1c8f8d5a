"""Where example data lives: ``$DOMAINFM_DATA``, else a ``shared/data`` folder beside the repo.

Example data is never copied into the project or downloaded; it is read in place.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

ENV_VAR = "DOMAINFM_DATA"


def example_data_root() -> Path:
    """The example-data folder.

    Looks at ``$DOMAINFM_DATA``, then ``../shared/data`` from the working directory, then
    ``shared/data`` beside the repository checkout this package was installed from.

    Raises:
        FileNotFoundError: saying what to set when no folder is found.
    """
    env = os.environ.get(ENV_VAR)
    if env:
        root = Path(env).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"${ENV_VAR}={env} is not a directory")
        return root
    candidates = [
        Path.cwd().parent / "shared" / "data",
        Path(__file__).resolve().parents[3] / "shared" / "data",
    ]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"no example data found (tried {tried}); set ${ENV_VAR} to the folder that holds "
        "medical/, geospatial/ and audio/, or pass explicit file paths"
    )


def resolve_data_path(path: str | Path) -> Path:
    """``path`` as given if absolute or existing, else relative to :func:`example_data_root`."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    return example_data_root() / p


def expand_files(patterns: Sequence[str]) -> list[Path]:
    """Paths and glob patterns (relative ones under the example-data root) → sorted files."""
    out: list[Path] = []
    for pattern in patterns:
        if any(c in pattern for c in "*?["):
            root = Path("/") if Path(pattern).is_absolute() else example_data_root()
            matches = sorted(Path(p) for p in glob.glob(str(root / pattern)))
            if not matches:
                raise FileNotFoundError(f"no file matches {pattern!r} (under {root})")
            out += matches
        else:
            out.append(resolve_data_path(pattern))
    return out
