"""The shared engine: token grids, patching, masking, the ViT-ND backbone and objectives."""

from domainfm.core.backbone import BACKBONES, Backbone
from domainfm.core.grid import TokenGrid
from domainfm.core.masking import (
    BlockMasking,
    MaskingCollate,
    RandomMasking,
    TubeMasking,
    keep_indices,
)
from domainfm.core.vit import VisionTransformerND

__all__ = [
    "BACKBONES",
    "Backbone",
    "BlockMasking",
    "MaskingCollate",
    "RandomMasking",
    "TokenGrid",
    "TubeMasking",
    "VisionTransformerND",
    "keep_indices",
]
