"""A ViT with DeiT's two prefix tokens (class + distillation), as SSAST's encoder is built.

DeiT (Touvron et al. 2021, "Training data-efficient image transformers & distillation
through attention", arXiv:2012.12877) prepends a learned distillation token beside the class
token; SSAST (Gong et al. 2022, arXiv:2110.09784) and AST build their audio encoder from
timm's distilled DeiT, so the released weights carry ``cls_token``, ``dist_token`` and a
learned ``pos_embed`` with two prefix rows. This is
:class:`~domainfm.core.vit.VisionTransformerND` (timm ``Block``s, the same key names, token
dropping with ``keep_idx``) with the second prefix token; nothing else differs. It equals
timm's ``VisionTransformerDistilled`` on the same weights (the tests check it).

Shapes (SSAST-Base-Patch: 16×16 patches over a ``(B, 1, 128 mel, 1024 frames)`` Kaldi
fbank; SSAST-Frame: ``(128, 2)`` patches, one token per 2 frames)::

    x                       (B, 1, F, T)
    forward_tokens(x)       (B, 2 + N, D), grid     # N = (F / pf) * (T / pt)
    forward(x)              (B, D)   mean of patch tokens ("avg") or (cls + dist) / 2 ("token")

SSAST's pretraining gives the prefix tokens no training signal (its losses read the patch
outputs only) and its fine-tuning default is the mean of the patch tokens (``ft_avgtok``),
hence ``global_pool="avg"`` by default; ``"token"`` is its ``ft_cls`` (mean of the two
prefix outputs).

Example::

    >>> vit = DistilledVisionTransformerND(in_chans=1, spatial_dims=2, patch_size=16,
    ...     embed_dim=64, depth=2, num_heads=4, grid_size=(8, 64), axes=("f", "t"))
    >>> tokens, grid = vit.forward_tokens(torch.randn(2, 1, 128, 1024))
    >>> tokens.shape, grid.shape
    (torch.Size([2, 514, 64]), (8, 64))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, Unpack

import torch
from torch import Tensor, nn

from domainfm.core.backbone import BACKBONES
from domainfm.core.vit import VisionTransformerND
from domainfm.core.vit_size import ViTSizeArgs


@BACKBONES.register("vit_nd_distilled")
class DistilledVisionTransformerND(VisionTransformerND):
    """:class:`~domainfm.core.vit.VisionTransformerND` with DeiT's distillation token
    (``num_prefix_tokens`` = 2: class, then distillation).

    Args:
        in_chans, spatial_dims, patch_size, grid_size, axes, size_args: as for
            :class:`~domainfm.core.vit.VisionTransformerND` (``size_args``: ``embed_dim``,
            ``depth``, ``num_heads``, … of :class:`~domainfm.core.vit_size.ViTSizeArgs`).
        pos_embed: ``"learned"`` (a ``(1, 2 + N, D)`` table for ``grid_size``, prefix rows
            first, as DeiT/SSAST store it) or ``"sincos"`` (fixed, prefix tokens without
            position).
        global_pool: ``"avg"`` (mean of patch tokens) or ``"token"`` (mean of the class and
            distillation tokens).
    """

    def __init__(
        self,
        *,
        in_chans: int,
        spatial_dims: int,
        patch_size: int | Sequence[int] = 16,
        pos_embed: Literal["sincos", "learned"] = "learned",
        grid_size: int | Sequence[int] | None = None,
        global_pool: Literal["token", "avg"] = "avg",
        axes: Sequence[str] | None = None,
        **size_args: Unpack[ViTSizeArgs],
    ) -> None:
        if global_pool not in ("token", "avg"):
            raise ValueError(f"global_pool must be 'token' or 'avg', got {global_pool!r}")
        super().__init__(
            in_chans=in_chans,
            spatial_dims=spatial_dims,
            patch_size=patch_size,
            class_token=True,
            pos_embed=pos_embed,
            grid_size=grid_size,
            global_pool=global_pool,
            axes=axes,
            **size_args,
        )
        self.num_prefix_tokens = 2
        self.dist_token = nn.Parameter(torch.zeros(1, 1, self.embed_dim))
        nn.init.normal_(self.dist_token, std=0.02)
        if self.pos_embed is not None:  # the base class sized it for one prefix token
            rows = self.num_prefix_tokens + math.prod(self.grid_size)
            self.pos_embed = nn.Parameter(torch.zeros(1, rows, self.embed_dim))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def _prefix(self, batch: int) -> Tensor:
        """Class and distillation tokens with their positions, ``(B, 2, D)``."""
        assert self.cls_token is not None  # always built here
        prefix = torch.cat([self.cls_token, self.dist_token], dim=1)
        if self.pos_embed is not None:
            prefix = prefix + self.pos_embed[:, : self.num_prefix_tokens]
        return prefix.expand(batch, -1, -1)

    def pool_tokens(self, tokens: Tensor) -> Tensor:
        """``forward_tokens`` output ``(B, 2 + N, D)`` → ``(B, D)``: mean of the patch tokens
        (``"avg"``) or of the two prefix tokens (``"token"``)."""
        if self.global_pool == "token":
            return (tokens[:, 0] + tokens[:, 1]) / 2
        return tokens[:, self.num_prefix_tokens :].mean(dim=1)
