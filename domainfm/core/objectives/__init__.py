"""Self-supervised objectives: masked modeling and contrastive / joint-embedding losses.

Importing this package registers every objective in :data:`OBJECTIVES`.
"""

from domainfm.core.objectives.barlow_twins import BarlowTwins
from domainfm.core.objectives.base import ObjectiveOutput, ParallelMode
from domainfm.core.objectives.byol import BYOL
from domainfm.core.objectives.infonce import InfoNCE
from domainfm.core.objectives.mae import MAE
from domainfm.core.objectives.moco import MoCo
from domainfm.core.objectives.registry import OBJECTIVES
from domainfm.core.objectives.vicreg import VICReg

__all__ = [
    "BYOL",
    "MAE",
    "OBJECTIVES",
    "BarlowTwins",
    "InfoNCE",
    "MoCo",
    "ObjectiveOutput",
    "ParallelMode",
    "VICReg",
]
