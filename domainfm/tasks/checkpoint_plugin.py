"""Lightning's checkpoint IO made atomic and safe (see :mod:`domainfm.core.checkpoint_io`).

Local saves go through :func:`~domainfm.core.checkpoint_io.atomic_write` (temporary file in
the target folder, fsync, ``os.replace``); Lightning's own save stages the file with
``tempfile.mkstemp()`` in the system temp folder and moves it, which is a non-atomic copy when
that folder is on another filesystem. Remote URLs keep Lightning's save. Loads go through
:func:`~domainfm.core.checkpoint_io.safe_torch_load` (``weights_only=True``) whatever the
caller asks.

Example::

    >>> trainer = L.Trainer(plugins=[SafeTorchCheckpointIO()])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from domainfm.core.checkpoint_io import atomic_write, safe_torch_load


class SafeTorchCheckpointIO(TorchCheckpointIO):
    """A Lightning ``CheckpointIO`` that writes atomically and never unpickles code."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))

    def load_checkpoint(
        self, path: Any, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        if not Path(str(path)).exists():
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        loaded: dict[str, Any] = safe_torch_load(path)
        return loaded


def safe_checkpoint_io() -> SafeTorchCheckpointIO:
    """A new :class:`SafeTorchCheckpointIO` (the form configs and the CLI use)."""
    return SafeTorchCheckpointIO()
