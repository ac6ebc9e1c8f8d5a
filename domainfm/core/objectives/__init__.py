"""Self-supervised objectives: masked modeling and contrastive / joint-embedding losses.

Importing this package registers every objective in :data:`OBJECTIVES`.
"""

from domainfm.core.objectives.barlow_twins import BarlowTwins
from domainfm.core.objectives.base import ObjectiveOutput, ParallelMode
from domainfm.core.objectives.byol import BYOL
from domainfm.core.objectives.infonce import InfoNCE
from domainfm.core.objectives.inpainting import Inpainting
from domainfm.core.objectives.mae import MAE
from domainfm.core.objectives.moco import MoCo
from domainfm.core.objectives.registry import OBJECTIVES
from domainfm.core.objectives.rotation import RotationPrediction
from domainfm.core.objectives.vicreg import VICReg
from domainfm.core.objectives.voco import VoCo

__all__ = [
    "BYOL",
    "MAE",
    "OBJECTIVES",
    "BarlowTwins",
    "InfoNCE",
    "Inpainting",
    "MoCo",
    "ObjectiveOutput",
    "ParallelMode",
    "RotationPrediction",
    "VICReg",
    "VoCo",
]
