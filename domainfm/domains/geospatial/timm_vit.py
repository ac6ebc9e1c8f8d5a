"""timm's ``VisionTransformer`` behind the backbone contract, for releases whose ViT has parts
:class:`~domainfm.core.vit.VisionTransformerND` lacks (DINOv2 layer scale ``ls1``/``ls2``).

An adapter, not a fork: :class:`TimmViT` *is* a ``timm.models.vision_transformer.
VisionTransformer`` (``num_classes=0``, ``dynamic_img_size=True``), so its state dict keys are
timm's own (``cls_token``, ``pos_embed``, ``patch_embed.proj.*``, ``blocks.N.{norm1,
attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma}.*``, ``norm.*``), the
layout of timm's ``vit_base_patch14_dinov2`` and of TorchGeo's DINOv2-style releases
(SoftCon). Nothing is re-implemented: the patch embedding, position handling (a learned table
resampled bicubically for another grid by timm), blocks and pooling are timm's. Subclasses
(:mod:`~domainfm.domains.geospatial.scale_mae_vit`, :mod:`~domainfm.domains.geospatial.dofa_vit`)
replace only the position or patch embedding.

Shapes (``p`` the patch size, ``P`` the prefix tokens: 1 with the class token)::

    x                              (B, in_chans, H, W), H and W divisible by p
    forward_tokens(x, keep_idx)    tokens (B, P + K, D) after the final norm, grid (H/p, W/p)
    forward_intermediates(x, n)    n maps (B, D, H/p, W/p)
    forward(x)                     (B, D): class token (``global_pool="token"``) or patch mean

**Masked encoding**: ``keep_idx`` selects tokens after the positional embedding (all patches
are embedded first), so the result equals encoding the kept tokens alone, without the saving
of VisionTransformerND's per-patch gather.

Example::

    >>> vit = TimmViT(in_chans=13, img_size=224, patch_size=14, embed_dim=64, depth=2,
    ...               num_heads=4, init_values=1e-5)
    >>> tokens, grid = vit.forward_tokens(torch.randn(2, 13, 56, 56), torch.tensor([[0, 3]] * 2))
    >>> tokens.shape, grid.shape
    (torch.Size([2, 3, 64]), (4, 4))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Unpack

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from domainfm.core.backbone import BACKBONES, backbone_grid
from domainfm.core.block_selection import select_blocks
from domainfm.core.grid import TokenGrid
from domainfm.core.kept_tokens import gather_kept
from domainfm.core.vit_size import ViTSize, ViTSizeArgs

HEADLESS_ANY_SIZE: dict[str, Any] = {"num_classes": 0, "fc_norm": False, "dynamic_img_size": True}
"""The ``VisionTransformer`` settings of every :class:`TimmViT`: no classifier head nor its
norm, and inputs of any size (the position table resampled per input)."""


@BACKBONES.register("timm_vit")
class TimmViT(VisionTransformer):
    """timm ViT encoder (implements :class:`~domainfm.core.backbone.Backbone`), 2D rasters.

    Args:
        in_chans: input bands.
        img_size: the image side the learned position table is built for (``grid = img_size
            / patch_size``); other sides resample it.
        patch_size: square patch side.
        init_values: layer-scale init (DINOv2: ``1e-5``; the weights overwrite it), ``None``
            for no layer scale.
        class_token: prepend a class token.
        pos_embed: ``"learn"`` (a table, key ``pos_embed``) or ``"none"`` (subclasses that
            compute positions).
        global_pool: ``"token"`` or ``"avg"`` pooling in ``forward``.
        final_norm: a final LayerNorm (``norm.*``); releases without one use ``False``.
        size_args: the transformer's size, :class:`~domainfm.core.vit_size.ViTSizeArgs`
            (default ViT-B: ``embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0,
            qkv_bias=True, drop_path_rate=0.0, norm_eps=1e-6``, timm's epsilon).
    """

    def __init__(
        self,
        *,
        in_chans: int,
        img_size: int = 224,
        patch_size: int = 16,
        init_values: float | None = None,
        class_token: bool = True,
        pos_embed: Literal["learn", "none"] = "learn",
        global_pool: Literal["token", "avg"] = "token",
        final_norm: bool = True,
        **size_args: Unpack[ViTSizeArgs],
    ) -> None:
        size = ViTSize.from_keywords(size_args, accepted=ViTSizeArgs, owner=type(self).__name__)
        super().__init__(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=in_chans,
            global_pool=global_pool,
            **size.timm_kwargs(),
            init_values=init_values,
            class_token=class_token,
            pos_embed=pos_embed,
            final_norm=final_norm,
            **HEADLESS_ANY_SIZE,
        )
        self.in_chans = in_chans
        self.spatial_dims = 2
        self.patch_size = (patch_size, patch_size)
        self.axes = ("h", "w")

    def token_grid(self, input_shape: Sequence[int]) -> TokenGrid:
        """The grid of an ``(H, W)`` input; ``ValueError`` if it does not fit the model."""
        return backbone_grid(self, input_shape)

    def _check_input(self, x: Tensor) -> TokenGrid:
        if x.ndim != 4:
            raise ValueError(f"x must be (B, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_chans:
            raise ValueError(f"x has {x.shape[1]} channels, model has in_chans={self.in_chans}")
        return self.token_grid(x.shape[2:])

    def _embed_tokens(self, x: Tensor) -> Tensor:
        """Patch embedding plus positions and prefix tokens, ``(B, P + N, D)``."""
        return self.norm_pre(self._pos_embed(self.patch_embed(x)))

    def forward_tokens(self, x: Tensor, keep_idx: Tensor | None = None) -> tuple[Tensor, TokenGrid]:
        """Encode ``x`` ``(B, C, H, W)`` → normed tokens ``(B, P + K, D)`` and the grid.

        Args:
            x: input batch.
            keep_idx: ``(B, K)`` indices into the flattened grid of the tokens to encode; all
                tokens when ``None``.
        """
        grid = self._check_input(x)
        tokens = self._embed_tokens(x)
        if keep_idx is not None:
            prefix, patches = tokens.split(
                [self.num_prefix_tokens, tokens.shape[1] - self.num_prefix_tokens], dim=1
            )
            tokens = torch.cat([prefix, gather_kept(patches, keep_idx)], dim=1)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens), grid

    def forward_intermediates(  # type: ignore[override]
        self, x: Tensor, indices: int | Sequence[int] = 1, norm: bool = False
    ) -> list[Tensor]:
        """Feature maps ``(B, D, H/p, W/p)`` after the selected blocks (last ``n`` if int),
        timm's ``forward_intermediates`` (``norm``: the final norm applied to each)."""
        grid = self._check_input(x)
        wanted = select_blocks(indices, len(self.blocks))
        tokens = self._embed_tokens(x)
        maps: list[Tensor] = []
        for i, block in enumerate(list(self.blocks)[: wanted[-1] + 1]):
            tokens = block(tokens)
            if i in wanted:
                out = self.norm(tokens) if norm else tokens
                patch = out[:, self.num_prefix_tokens :]
                maps.append(patch.transpose(1, 2).reshape(x.shape[0], -1, *grid.shape))
        return maps

    def pool_tokens(self, tokens: Tensor) -> Tensor:
        """``forward_tokens`` output → pooled ``(B, D)`` as in ``forward``."""
        return self.forward_head(tokens, pre_logits=True)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        """Pooled embedding ``(B, D)``."""
        tokens, _ = self.forward_tokens(x)
        return self.pool_tokens(tokens)
