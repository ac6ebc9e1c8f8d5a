"""The hostile-input suite's modules import each other by name (the driver runs them as a
script from this folder), so the folder goes on ``sys.path`` for the pytest side too."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
