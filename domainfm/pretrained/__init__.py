"""Loading backbones (domainfm exports and checkpoints, released weights files identified by
their layout) with a report of every key; registry of released checkpoints."""

from domainfm.pretrained.load import load_backbone
from domainfm.pretrained.registry import (
    RELEASED,
    ReleasedCheckpoint,
    load_released,
    released_checkpoint,
)
from domainfm.pretrained.report import (
    CheckpointMismatchError,
    LoadReport,
    load_state_dict_with_report,
)

__all__ = [
    "RELEASED",
    "CheckpointMismatchError",
    "LoadReport",
    "ReleasedCheckpoint",
    "load_backbone",
    "load_released",
    "load_state_dict_with_report",
    "released_checkpoint",
]
