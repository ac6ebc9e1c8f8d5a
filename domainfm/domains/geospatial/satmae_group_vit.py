"""SatMAE's group-channel ViT: one token per band group × spatial patch, positions made of a
spatial sin-cos table concatenated with a band-group code.

SatMAE (Cong et al. 2022, "SatMAE: Pre-training Transformers for Temporal and Multi-Spectral
Satellite Imagery", arXiv:2207.08051, §3.3) embeds each **band group** of a multispectral image
with its own patch projection, so an image of ``G`` groups on an ``h × w`` patch grid gives
``G · h · w`` tokens. Each token's position code is ``[pos(i, j) ‖ group(g)]``: the first
``D - D_c`` channels are a 2-D sin-cos table over the patch grid (the same for every group),
the last ``D_c`` a 1-D sin-cos code of the group index (the same for every patch). The class
token gets ``[pos_embed[0] ‖ channel_cls_embed]`` (zeros in the pretraining checkpoint, whose
row 0 of ``pos_embed`` is the sin-cos table's zero class row and which has no
``channel_cls_embed``).

Unlike :class:`~domainfm.domains.geospatial.spectral_temporal.SpectralTemporalViT` (which adds
its codes and takes a zero-padded band-group cube), this is the released architecture itself:
the input is the plain ``(B, C, H, W)`` raster with ``C`` = the bands of all groups, the stored
``pos_embed`` and ``channel_embed`` tables are loaded as they are (resampled to another patch
grid like a learned table), and the key names are SatMAE's.

Token grid: axes ``("g", "h", "w")``, shape ``(G, H/p, W/p)``, patch size ``(1, p, p)`` (one
band group × one spatial patch per token), flattened group-major as SatMAE does
(``(N, G, L, D) -> (N, G·L, D)``). ``forward_intermediates`` maps are therefore
``(B, D, G, H/p, W/p)``; average over axis 2 for a 2-D map.

Shapes::

    x                       (B, C, H, W)      C = sum of the group sizes
    forward_tokens(x)       (B, 1 + G·h·w, D), grid (G, h, w)
    forward(x)              (B, D)            class token after the final norm

Example::

    >>> vit = GroupChannelViT(channel_groups=((0, 1, 2, 6), (3, 4, 5, 7), (8, 9)),
    ...                       patch_size=8, grid_size=12, embed_dim=64, channel_embed=16,
    ...                       depth=2, num_heads=4)
    >>> tokens, grid = vit.forward_tokens(torch.randn(1, 10, 96, 96))
    >>> tokens.shape, grid.shape
    (torch.Size([1, 433, 64]), (3, 12, 12))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Unpack

import torch
from timm.layers import PatchEmbed
from torch import Tensor, nn

from domainfm.core.backbone import BACKBONES
from domainfm.core.grid import TokenGrid
from domainfm.core.kept_tokens import gather_kept
from domainfm.core.pos_embed import resample_pos_embed, sincos_1d, sincos_pos_embed
from domainfm.core.vit import VisionTransformerND
from domainfm.core.vit_size import VIT_LARGE, ViTSize, ViTSizeArgs

GROUP_AXES = ("g", "h", "w")
"""Axis names of the token grid: band group, rows, columns."""


def _check_groups(channel_groups: Sequence[Sequence[int]]) -> tuple[tuple[int, ...], ...]:
    """The groups as tuples; they must partition ``range(C)`` (every band in one group)."""
    groups = tuple(tuple(int(i) for i in g) for g in channel_groups)
    flat = sorted(i for g in groups for i in g)
    if not groups or any(not g for g in groups) or flat != list(range(len(flat))):
        raise ValueError(
            f"channel_groups {[list(g) for g in groups]} must be non-empty groups that together "
            "hold each input channel 0..C-1 exactly once"
        )
    return groups


@BACKBONES.register("satmae_group_channel_vit")
class GroupChannelViT(VisionTransformerND):
    """SatMAE's group-channel ViT encoder (see the module docstring).

    Args:
        channel_groups: input channel indices of each band group (SatMAE's
            ``--grouped_bands``), together ``0..C-1`` once each.
        patch_size: spatial patch side ``p``.
        grid_size: patch grid side(s) the stored ``pos_embed`` is for (12 for 96-pixel input
            with ``p = 8``); other grids resample it.
        channel_embed: ``D_c``, channels of the band-group code (the last ``D_c`` of ``D``).
        global_pool: as :class:`~domainfm.core.vit.VisionTransformerND`.
        channel_cls_embed: learn the class token's group-code part (SatMAE's fine-tuning
            model has it; the pretraining checkpoint does not: zeros).
        size_args: the transformer's size, :class:`~domainfm.core.vit_size.ViTSizeArgs`
            (default ViT-L: ``embed_dim=1024, depth=24, num_heads=16``, the others as
            :class:`~domainfm.core.vit.VisionTransformerND`'s).
    """

    def __init__(
        self,
        *,
        channel_groups: Sequence[Sequence[int]],
        patch_size: int = 8,
        grid_size: int | Sequence[int] = 12,
        channel_embed: int = 256,
        global_pool: Literal["token", "avg"] = "token",
        channel_cls_embed: bool = False,
        **size_args: Unpack[ViTSizeArgs],
    ) -> None:
        groups = _check_groups(channel_groups)
        size = ViTSize.from_keywords(
            size_args, accepted=ViTSizeArgs, owner=type(self).__name__, **VIT_LARGE
        )
        embed_dim = size.embed_dim
        if (
            not 0 < channel_embed < embed_dim
            or channel_embed % 2
            or (embed_dim - channel_embed) % 4
        ):
            raise ValueError(
                f"channel_embed={channel_embed} must be even, below embed_dim={embed_dim}, and "
                "leave a multiple of 4 channels for the 2-D position table"
            )
        super().__init__(
            in_chans=sum(len(g) for g in groups),
            spatial_dims=2,
            patch_size=patch_size,
            **size.kwargs(),
            pos_embed="learned",
            grid_size=grid_size,
            global_pool=global_pool,
        )
        self.channel_groups = groups
        self.spatial_patch = self.patch_size  # (p, p)
        self.patch_size = (1, *self.spatial_patch)  # per token along ("g", "h", "w")
        self.axes = GROUP_AXES
        embeds = [
            PatchEmbed(
                img_size=None,
                patch_size=patch_size,
                in_chans=len(g),
                embed_dim=embed_dim,
                strict_img_size=False,
            )
            for g in groups
        ]
        for embed in embeds:  # SatMAE: each projection initialized like a Linear
            weight = embed.proj.weight
            nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        self.patch_embed = nn.ModuleList(embeds)
        pos_dim = embed_dim - channel_embed
        table = sincos_pos_embed(self.grid_size, pos_dim)  # (h*w, D - D_c)
        self.pos_embed = nn.Parameter(torch.cat([table.new_zeros(1, pos_dim), table])[None])
        codes = sincos_1d(torch.arange(len(groups)), channel_embed)  # (G, D_c)
        self.channel_embed = nn.Parameter(codes[None])
        self.channel_cls_embed = (
            nn.Parameter(torch.zeros(1, 1, channel_embed)) if channel_cls_embed else None
        )

    # -- grid and positions -------------------------------------------------------------
    def token_grid(self, input_shape: Sequence[int]) -> TokenGrid:
        """The ``(G, H/p, W/p)`` grid of a ``(H, W)`` input; ``ValueError`` if ``p`` does not
        divide a side or the input is not 2-D."""
        shape = tuple(int(s) for s in input_shape)
        if len(shape) != 2:
            raise ValueError(
                f"{type(self).__name__} takes (B, C, H, W) input, got spatial shape {shape}"
            )
        spatial = TokenGrid.from_input(shape, self.spatial_patch, ("h", "w"))
        return TokenGrid(
            shape=(len(self.channel_groups), *spatial.shape),
            patch_size=self.patch_size,
            axes=self.axes,
        )

    def _patch_pos_embed(self, grid: TokenGrid, ref: Tensor) -> Tensor:
        """``[pos(i, j) ‖ channel_embed[g]]`` for every token, ``(1, G·h·w, D)``."""
        assert self.pos_embed is not None
        groups, h, w = grid.shape
        spatial = resample_pos_embed(self.pos_embed, (h, w), self.grid_size, num_prefix_tokens=1)
        spatial = spatial[:, 1:].to(ref.dtype)  # (1, hw, D - D_c)
        codes = self.channel_embed.to(ref.dtype)  # (1, G, D_c)
        table = torch.cat(
            [
                spatial[:, None].expand(-1, groups, -1, -1),
                codes[:, :, None].expand(-1, -1, h * w, -1),
            ],
            dim=-1,
        )  # (1, G, hw, D)
        return table.reshape(1, groups * h * w, self.embed_dim)

    def _prefix(self, batch: int) -> Tensor | None:
        assert self.cls_token is not None and self.pos_embed is not None
        cls_code = (
            self.channel_cls_embed
            if self.channel_cls_embed is not None
            else self.channel_embed.new_zeros(1, 1, self.channel_embed.shape[-1])
        )
        cls = self.cls_token + torch.cat([self.pos_embed[:, :1], cls_code], dim=-1)
        return cls.expand(batch, -1, -1)

    def _embed(self, x: Tensor, grid: TokenGrid, keep_idx: Tensor | None) -> Tensor:
        per_group = [
            embed(x[:, list(group)])  # (B, L, D)
            for embed, group in zip(self.patch_embed.children(), self.channel_groups, strict=True)
        ]
        tokens = torch.stack(per_group, dim=1).flatten(1, 2)  # (B, G*L, D), group-major
        tokens = tokens + self._patch_pos_embed(grid, tokens)
        if keep_idx is not None:
            tokens = gather_kept(tokens, keep_idx)  # (B, K, D)
        return self._prepend_prefix(tokens)
