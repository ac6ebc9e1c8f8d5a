"""MONAI's 3D Swin encoder with the patch merging MONAI used before 1.5, for weights trained
with it (Tang et al. 2022 SSL, SuPreM, VoCo).

Until MONAI 1.5 (Project-MONAI/MONAI#8285, January 2025) the 3D ``PatchMerging`` of
``SwinTransformer`` (``downsample="merging"``, Swin UNETR's default, also with
``use_v2=True``) concatenated the eight ``2×2×2`` neighbours of a voxel in the order
``(d, h, w)`` offsets::

    (0,0,0) (1,0,0) (0,1,0) (0,0,1) (1,0,1) (0,1,0) (0,0,1) (1,1,1)

— two neighbours twice, two never (MONAI#4757, #7324; kept on purpose for existing weights,
MONAI#5106). MONAI 1.5 changed it to eight distinct offsets. Released weights trained with
the old order (SuPreM ships its own copy of the old file:
``supervised_pretraining/backbone/swinunetr.py``; VoCo pins ``monai==1.3.0``) load into the
new one without any key or shape difference but compute other features from stage 2 on.
:class:`SwinViT3DLegacy` is :class:`~domainfm.domains.medical3d.swin.SwinViT3D` with that
old merging; key names, shapes and everything else are the same.

Shapes: as :class:`~domainfm.domains.medical3d.swin.SwinViT3D`.

Example::

    >>> swin = SwinViT3DLegacy(in_chans=1, feature_size=12, use_v2=True)
    >>> [m.shape[1] for m in swin.forward_intermediates(torch.randn(1, 1, 64, 64, 64),
    ...                                                  indices=5)]
    [12, 24, 48, 96, 192]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from domainfm.core.backbone import BACKBONES
from domainfm.domains.medical3d.swin import SwinViT3D

LEGACY_OFFSETS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),
    (1, 0, 0),
    (0, 1, 0),
    (0, 0, 1),
    (1, 0, 1),
    (0, 1, 0),
    (0, 0, 1),
    (1, 1, 1),
)
"""The ``(d, h, w)`` offsets, in concatenation order, of MONAI < 1.5's 3D patch merging."""


class LegacyPatchMerging(nn.Module):
    """3D patch merging of MONAI < 1.5: ``(B, D, H, W, C)`` → ``(B, D/2, H/2, W/2, 2C)``,
    the neighbours concatenated in :data:`LEGACY_OFFSETS` order, then ``norm`` (LayerNorm of
    ``8C``) and ``reduction`` (``8C → 2C``, no bias): MONAI's parameter names and shapes.

    Args:
        dim: channels ``C`` of the input.
        norm_layer: the norm's class (MONAI passes it when it builds a stage).
        spatial_dims: 3 (MONAI passes it; the old order is defined for 3D only).
    """

    def __init__(
        self, dim: int, norm_layer: type[nn.Module] = nn.LayerNorm, spatial_dims: int = 3
    ) -> None:
        super().__init__()
        if spatial_dims != 3:
            raise ValueError(f"LegacyPatchMerging is 3D only, got spatial_dims={spatial_dims}")
        self.dim = dim
        self.reduction = nn.Linear(8 * dim, 2 * dim, bias=False)
        self.norm = norm_layer(8 * dim)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 5:
            raise ValueError(f"expected (B, D, H, W, C), got shape {tuple(x.shape)}")
        _, d, h, w, _ = x.shape
        if d % 2 or h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2, 0, d % 2))
        parts = [x[:, i::2, j::2, k::2, :] for i, j, k in LEGACY_OFFSETS]
        merged: Tensor = self.reduction(self.norm(torch.cat(parts, -1)))
        return merged


@BACKBONES.register("swin_vit_3d_legacy")
class SwinViT3DLegacy(SwinViT3D):
    """:class:`~domainfm.domains.medical3d.swin.SwinViT3D` whose four patch-merging layers
    use the order of MONAI < 1.5 (:class:`LegacyPatchMerging`, built by MONAI in place of its
    own, so the initialization is the same); same arguments, keys and shapes.
    """

    patch_merging = LegacyPatchMerging
