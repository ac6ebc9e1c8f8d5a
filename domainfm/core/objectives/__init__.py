"""Self-supervised objectives: masked modeling and contrastive / joint-embedding losses.

Importing this package registers every objective in :data:`OBJECTIVES`.
"""

from domainfm.core.objectives.barlow_twins import BarlowTwins
from domainfm.core.objectives.base import ObjectiveOutput, ParallelMode
from domainfm.core.objectives.byol import BYOL
from domainfm.core.objectives.global_local import GlobalPartitionContrast, LocalContrast
from domainfm.core.objectives.hard_negative_mixing import HardNegativeMixing
from domainfm.core.objectives.ijepa import IJEPA
from domainfm.core.objectives.infonce import InfoNCE
from domainfm.core.objectives.inpainting import Inpainting
from domainfm.core.objectives.mae import MAE
from domainfm.core.objectives.moco import MoCo
from domainfm.core.objectives.registry import OBJECTIVES
from domainfm.core.objectives.rotation import RotationPrediction
from domainfm.core.objectives.softcon import SoftCon
from domainfm.core.objectives.spark import SparK
from domainfm.core.objectives.vicreg import VICReg
from domainfm.core.objectives.voco import VoCo

__all__ = [
    "BYOL",
    "IJEPA",
    "MAE",
    "OBJECTIVES",
    "BarlowTwins",
    "GlobalPartitionContrast",
    "HardNegativeMixing",
    "InfoNCE",
    "Inpainting",
    "LocalContrast",
    "MoCo",
    "ObjectiveOutput",
    "ParallelMode",
    "RotationPrediction",
    "SoftCon",
    "SparK",
    "VICReg",
    "VoCo",
]
