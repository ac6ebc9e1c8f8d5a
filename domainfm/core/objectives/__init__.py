"""Self-supervised objectives: masked modeling and contrastive / joint-embedding losses."""

from domainfm.core.objectives.base import ObjectiveOutput, ParallelMode
from domainfm.core.objectives.registry import OBJECTIVES

__all__ = ["OBJECTIVES", "ObjectiveOutput", "ParallelMode"]
