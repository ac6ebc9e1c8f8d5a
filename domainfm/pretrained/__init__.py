"""Loading backbones with a report of every key; registry of released checkpoints."""

from domainfm.pretrained.load import load_backbone
from domainfm.pretrained.report import (
    CheckpointMismatchError,
    LoadReport,
    load_state_dict_with_report,
)

__all__ = ["CheckpointMismatchError", "LoadReport", "load_backbone", "load_state_dict_with_report"]
