"""Scale-MAE's encoder: a ViT whose sin-cos positions are scaled by the ground sample
distance (Reed et al. 2023, "Scale-MAE: a scale-aware masked autoencoder for multiscale
geospatial representation learning", arXiv:2212.14532).

As TorchGeo 0.8.1 ``torchgeo/models/scale_mae.py`` (``ScaleMAE._pos_embed``,
``get_2d_sincos_pos_embed_with_resolution``) and bair-climate-initiative/scale-mae
``mae/util/pos_embed.py``: the patch at row ``i``, column ``j`` gets the 2D sin-cos code of
``(j · r, i · r)`` — the first half of the channels encodes the column, the second the row,
each ``[sin, cos]`` with ``ω_k = 10000^(-2k/(D/2))`` in float32 — where ``r`` (``gsd_ratio``,
upstream ``res``/``input_res``) is the resolution relative to pretraining: evaluation
(``mae/eval/knn.py``) uses ``eval_base_resolution × 224 / input side``. The class token gets
a zero position. The table is **computed** for every input grid (any ``H × W``); the release's
stored ``pos_embed`` is not used by the model (TorchGeo ignores it too) and is dropped by name.

Everything else is timm's ViT (:class:`~domainfm.domains.geospatial.timm_vit.TimmViT`):
ViT-L/16 with qkv bias, LayerNorm eps 1e-6, a final ``norm``, class-token pooling.

Example::

    >>> vit = ScaleMAEViT(in_chans=3, embed_dim=64, depth=2, num_heads=4, gsd_ratio=0.5)
    >>> vit(torch.randn(2, 3, 64, 48)).shape
    torch.Size([2, 64])
"""

from __future__ import annotations

from typing import Literal, Unpack

import torch
from torch import Tensor

from domainfm.core.backbone import BACKBONES
from domainfm.core.vit_size import VIT_LARGE, ViTShapeArgs, ViTSize
from domainfm.domains.geospatial.timm_vit import TimmViT


def _sincos(positions: Tensor, dim: int) -> Tensor:
    """``(M,)`` → ``(M, dim)`` ``[sin, cos]`` of ``pos · ω_k`` in the positions' dtype."""
    omega = torch.arange(dim // 2, dtype=positions.dtype, device=positions.device)
    omega = 1.0 / 10000 ** (omega / (dim / 2.0))
    angles = positions.reshape(-1)[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def gsd_sincos_pos_embed(
    grid: tuple[int, int], dim: int, gsd_ratio: float, *, device: torch.device | None = None
) -> Tensor:
    """Scale-MAE's table ``(H·W, dim)`` for a grid ``(H, W)`` (row-major): column codes then
    row codes of the coordinates scaled by ``gsd_ratio``."""
    rows = torch.arange(grid[0], dtype=torch.float32, device=device) * gsd_ratio
    cols = torch.arange(grid[1], dtype=torch.float32, device=device) * gsd_ratio
    row_pos, col_pos = torch.meshgrid(rows, cols, indexing="ij")
    return torch.cat([_sincos(col_pos, dim // 2), _sincos(row_pos, dim // 2)], dim=1)


@BACKBONES.register("scale_mae_vit")
class ScaleMAEViT(TimmViT):
    """Scale-MAE encoder (implements :class:`~domainfm.core.backbone.Backbone`).

    Args:
        in_chans: input bands (3 for the fMoW RGB release).
        gsd_ratio: ``r`` of the module docstring (1.0 as TorchGeo's default).
        img_size, patch_size: the position grid's image side and the patch side (224, 16).
        global_pool: ``"token"`` (class token) or ``"avg"``.
        size_args: the transformer's size, :class:`~domainfm.core.vit_size.ViTShapeArgs`
            (default ViT-L: ``embed_dim=1024, depth=24, num_heads=16, mlp_ratio=4.0,
            drop_path_rate=0.0``; qkv bias and LayerNorm epsilon 1e-6 as the release).
    """

    def __init__(
        self,
        *,
        in_chans: int,
        gsd_ratio: float = 1.0,
        img_size: int = 224,
        patch_size: int = 16,
        global_pool: Literal["token", "avg"] = "token",
        **size_args: Unpack[ViTShapeArgs],
    ) -> None:
        if not gsd_ratio > 0:
            raise ValueError(f"gsd_ratio must be > 0, got {gsd_ratio}")
        size = ViTSize.from_keywords(
            size_args, accepted=ViTShapeArgs, owner=type(self).__name__, **VIT_LARGE
        )
        super().__init__(
            in_chans=in_chans,
            img_size=img_size,
            patch_size=patch_size,
            **size.kwargs(),
            pos_embed="none",
            global_pool=global_pool,
        )
        self.gsd_ratio = float(gsd_ratio)

    def _pos_embed(self, x: Tensor) -> Tensor:
        """``(B, H', W', D)`` patches → class token (zero position) + positioned patches."""
        batch, height, width, dim = x.shape
        table = gsd_sincos_pos_embed((height, width), dim, self.gsd_ratio, device=x.device)
        tokens = x.reshape(batch, height * width, dim) + table.to(x.dtype)
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(batch, -1, -1), tokens], dim=1)
        out: Tensor = self.pos_drop(tokens)
        return out
