"""Spectral-temporal tokens (SatMAE): one token per date × band group × spatial patch.

SatMAE (Cong et al. 2022, "SatMAE: Pre-training Transformers for Temporal and Multi-Spectral
Satellite Imagery", arXiv:2207.08051) tokenizes a multispectral time series per **band group**
(bands of similar wavelength, each group with its own patch projection) and per **date**, adds
a group encoding and a temporal encoding to the spatial one, and masks the ``T × G × h × w``
tokens for MAE — independently, or consistently across dates/groups.

Here the series is laid out as a **cube** ``(B, C_g, S, H, W)`` with ``S = T · G`` slices
(date-major: slice ``s`` is group ``s % G`` of date ``s // G``) and ``C_g`` the largest group's
band count (smaller groups zero-padded, :func:`band_group_cube`). With ``patch_size (1, p,
p)`` the cube is an ordinary 3D token grid with axes ``("s", "h", "w")``, so the core's 3D
patching, masking (``RandomMasking``: independent; ``TubeMasking(axis="s")``: the same
spatial patches hidden in every date and group, SatMAE's consistent masking) and
:class:`~domainfm.core.objectives.mae.MAE` (target: each token's ``C_g × p × p`` pixels of
its group and date) work unchanged.

:class:`SpectralTemporalViT` is :class:`~domainfm.core.vit.VisionTransformerND` on that cube
with

* a **per-group patch projection** (``G`` weight matrices ``(D, C_g p²)``, SatMAE's separate
  ``PatchEmbed`` per group), and
* positions ``pos(s, i, j) = sincos2d(i, j) + group_embed[s % G] + sincos1d(s // G)`` —
  SatMAE concatenates spatial, group and time codes in slices of ``D``; we add them (so
  ``D`` needs no split). The temporal code is the date's **index** in the series, not its
  calendar date (SatMAE encodes year/month/hour): dates are ordered, not spaced.

Shapes::

    series          (T, C, H, W)       bands of T dates (one place, one window)
    cube            (C_g, T·G, H, W)   band_group_cube(series, band_names, groups)
    forward_tokens  (B, P + K, D)      K kept tokens of the T·G·(H/p)·(W/p) grid
    forward         (B, D)             pooled

Example::

    >>> groups = SATMAE_S2_GROUPS                      # 3 groups of <= 4 bands
    >>> cube = band_group_cube(torch.randn(2, 13, 32, 32), SENTINEL2_L1C_BANDS, groups)
    >>> cube.shape                                     # (C_g, T*G, H, W)
    torch.Size([4, 6, 32, 32])
    >>> vit = SpectralTemporalViT(group_size=4, num_groups=3, patch_size=8, embed_dim=64,
    ...                           depth=2, num_heads=4)
    >>> vit(cube[None]).shape
    torch.Size([1, 64])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Unpack

import torch
from einops import rearrange
from torch import Tensor, nn

from domainfm.core.backbone import BACKBONES
from domainfm.core.grid import TokenGrid
from domainfm.core.patching import patchify
from domainfm.core.pos_embed import cached_sincos_pos_embed, sincos_1d
from domainfm.core.vit import VisionTransformerND
from domainfm.core.vit_size import ViTSizeArgs

SATMAE_S2_GROUPS: tuple[tuple[str, ...], ...] = (
    ("B02", "B03", "B04", "B08"),
    ("B05", "B06", "B07", "B8A"),
    ("B11", "B12"),
)
"""SatMAE's Sentinel-2 band groups (10 m visible + NIR; red edge; SWIR); B01, B09 and B10
(60 m atmospheric bands) are left out, as in SatMAE."""

CUBE_AXES = ("s", "h", "w")
"""Axis names of the cube's token grid: ``s`` = date × band group."""


def band_group_cube(
    series: Tensor, band_names: Sequence[str], groups: Sequence[Sequence[str]]
) -> Tensor:
    """A time series ``(T, C, H, W)`` (or one date ``(C, H, W)``) → the cube
    ``(C_g, T·G, H, W)``: slice ``t·G + g`` holds group ``g``'s bands of date ``t``, zero
    padded to ``C_g`` = the largest group's size.

    Raises:
        ValueError: a group names a band that is not in ``band_names``, or a group is empty.
    """
    x = series[None] if series.ndim == 3 else series  # (T, C, H, W)
    names = list(band_names)
    if x.ndim != 4 or x.shape[1] != len(names):
        raise ValueError(
            f"series must be (T, C={len(names)}, H, W) for band_names {names}, got "
            f"{tuple(series.shape)}"
        )
    missing = sorted({b for g in groups for b in g} - set(names))
    if missing or not groups or any(not g for g in groups):
        raise ValueError(
            f"band groups {[list(g) for g in groups]} must be non-empty and name bands of "
            f"{names}; unknown: {missing}"
        )
    size = max(len(g) for g in groups)
    t, _, h, w = x.shape
    cube = x.new_zeros(size, t, len(groups), h, w)  # (C_g, T, G, H, W)
    for g, group in enumerate(groups):
        index = torch.tensor([names.index(b) for b in group])
        cube[: len(group), :, g] = x[:, index].transpose(0, 1)  # (|g|, T, H, W)
    return rearrange(cube, "c t g h w -> c (t g) h w")


class GroupPatchEmbed(nn.Module):
    """One linear patch projection per band group over the cube's ``(1, p, p)`` patches.

    Args:
        group_size: ``C_g``, channels of the cube.
        num_groups: ``G``.
        patch_size: spatial patch side ``p``.
        embed_dim: ``D``.
    """

    def __init__(self, *, group_size: int, num_groups: int, patch_size: int, embed_dim: int):
        super().__init__()
        self.num_groups = num_groups
        self.patch_size = (1, patch_size, patch_size)
        fan_in = group_size * patch_size * patch_size
        self.weight = nn.Parameter(torch.empty(num_groups, embed_dim, fan_in))
        self.bias = nn.Parameter(torch.zeros(num_groups, embed_dim))
        for g in range(num_groups):
            nn.init.xavier_uniform_(self.weight[g])

    def forward(self, x: Tensor) -> Tensor:
        """Cube ``(B, C_g, T·G, H, W)`` → tokens ``(B, N, D)`` in grid order."""
        grid = TokenGrid.from_input(x.shape[2:], self.patch_size, CUBE_AXES)
        _, h, w = grid.shape
        patches = patchify(x, grid)  # (B, N, p*p*C_g), channels last as the MAE target
        patches = rearrange(
            patches,
            "b (t g hw) (q c) -> b t g hw (c q)",
            g=self.num_groups,
            hw=h * w,
            c=x.shape[1],
        )  # channels first within a patch, as a conv weight (C_g, 1, p, p) flattens
        tokens = torch.einsum("btgnp,gdp->btgnd", patches, self.weight)
        tokens = tokens + self.bias[None, None, :, None]  # (B, T, G, hw, D)
        return rearrange(tokens, "b t g n d -> b (t g n) d")


@BACKBONES.register("spectral_temporal_vit")
class SpectralTemporalViT(VisionTransformerND):
    """ViT over band-group × date × patch tokens (see the module docstring).

    Args:
        group_size: ``C_g``, the cube's channels (the largest band group).
        num_groups: ``G``, band groups per date.
        patch_size: spatial patch side ``p`` (tokens are ``1 × p × p`` in the cube).
        class_token, global_pool: as :class:`~domainfm.core.vit.VisionTransformerND`.
        band_groups: the groups' band names (recorded with the weights; documentation only).
        size_args: the transformer's size (``embed_dim``, ``depth``, ``num_heads``, …) as
            :class:`~domainfm.core.vit.VisionTransformerND`'s.
    """

    def __init__(
        self,
        *,
        group_size: int,
        num_groups: int,
        patch_size: int = 8,
        class_token: bool = True,
        global_pool: Literal["token", "avg"] = "token",
        band_groups: Sequence[Sequence[str]] | None = None,
        **size_args: Unpack[ViTSizeArgs],
    ) -> None:
        if num_groups < 1 or group_size < 1:
            raise ValueError(f"group_size={group_size} and num_groups={num_groups} must be >= 1")
        if band_groups is not None and (
            len(band_groups) != num_groups or max(len(g) for g in band_groups) != group_size
        ):
            raise ValueError(
                f"band_groups {[list(g) for g in band_groups]} do not match "
                f"num_groups={num_groups} and group_size={group_size}"
            )
        super().__init__(
            in_chans=group_size,
            spatial_dims=3,
            patch_size=(1, patch_size, patch_size),
            **size_args,
            class_token=class_token,
            global_pool=global_pool,
            axes=CUBE_AXES,
        )
        self.num_groups = num_groups
        self.band_groups = [list(g) for g in band_groups] if band_groups is not None else None
        self.patch_embed = GroupPatchEmbed(
            group_size=group_size,
            num_groups=num_groups,
            patch_size=patch_size,
            embed_dim=self.embed_dim,
        )
        self.group_embed = nn.Parameter(torch.zeros(num_groups, self.embed_dim))
        nn.init.normal_(self.group_embed, std=0.02)

    def token_grid(self, input_shape: Sequence[int]) -> TokenGrid:
        grid = super().token_grid(input_shape)
        if grid.shape[0] % self.num_groups:
            raise ValueError(
                f"the cube has {grid.shape[0]} slices, not a multiple of num_groups="
                f"{self.num_groups} (slices are dates x band groups; see band_group_cube)"
            )
        return grid

    def _patch_pos_embed(self, grid: TokenGrid, ref: Tensor) -> Tensor:
        """``sincos2d(i, j) + group_embed[s % G] + sincos1d(s // G)``, ``(1, N, D)``."""
        s, h, w = grid.shape
        dim = self.embed_dim
        spatial = cached_sincos_pos_embed((h, w), dim)[0].to(ref.device, ref.dtype)  # (hw, D)
        times = sincos_1d(torch.arange(s // self.num_groups), dim).to(ref.device, ref.dtype)
        table = (
            spatial[None, None]  # (1, 1, hw, D)
            + self.group_embed.to(ref.dtype)[None, :, None]  # (1, G, 1, D)
            + times[:, None, None]  # (T, 1, 1, D)
        )  # (T, G, hw, D)
        return table.reshape(1, s * h * w, dim)
