"""The Prithvi ViT encoder (NASA/IBM geospatial foundation models) over image time series.

Prithvi-EO-1.0 (Jakubik et al. 2023, "Foundation Models for Generalist Geospatial Artificial
Intelligence", arXiv:2310.18660) and Prithvi-EO-2.0 (Szwarcman et al. 2024, "Prithvi-EO-2.0: A
Versatile Multi-Temporal Foundation Model for Earth Observation Applications",
arXiv:2412.02732) are MAE-pretrained ViTs over Harmonized Landsat Sentinel-2 (HLS) time series
``(B, C, T, H, W)``: a Conv3d tubelet embedding (tubelet 1 frame, ``p x p`` pixels), a fixed
3D sin-cos position table, timm ``Block``s and a final LayerNorm, with a class token. The -TL
variants of 2.0 add two more fixed sin-cos embeddings, each times a learned scalar, to every
patch token (not to the class token), before the blocks:

* temporal: per frame ``(year, day of year)``, the first ``D // 2`` channels the 1D sin-cos
  of the year, the rest that of the day; every token of frame ``t`` gets frame ``t``'s;
* location: per sample ``(lat, lon)`` in degrees, halves as above; every token gets it.

Differences from :class:`~domainfm.core.vit.VisionTransformerND` (which this extends):

* the position table splits the channels ``6/16`` width, ``6/16`` height, ``4/16`` time,
  concatenated in the order ``(w, h, t)`` (:func:`prithvi_pos_embed`), and is **recomputed**
  for every input grid (any number of frames, any image size divisible by the patch), as the
  releases' own inference scripts do (they delete the stored table before loading); the
  released ``pos_embed`` is therefore dropped by name by the release key maps;
* every LayerNorm is ``torch.nn.LayerNorm``'s default ``eps=1e-5`` (upstream passes
  ``nn.LayerNorm`` to the blocks; timm's own default is 1e-6);
* ``forward_tokens`` / ``forward_intermediates`` / ``forward`` take the optional keyword
  arguments ``temporal_coords`` ``(B, T, 2)`` and ``location_coords`` ``(B, 2)``; left out
  (as the generic pipelines do), the embedding is not added, exactly as upstream skips it when
  the coordinates are ``None``. The coordinates of one call are held on the module for the
  duration of that call only (one call at a time per module instance).

Verified against NASA-IMPACT/hls-foundation-os ``geospatial_fm/geospatial_fm.py``
(``get_3d_sincos_pos_embed``, ``PatchEmbed``, ``TemporalViTEncoder``), the Prithvi-100M
``Prithvi.py`` (``MaskedAutoencoderViT``) and IBM/terratorch
``terratorch/models/backbones/prithvi_mae.py`` (``PrithviViT``, ``TemporalEncoder``,
``LocationEncoder``, ``_get_1d_sincos_embed_from_grid_torch``): code read, not run.

Shapes::

    x                  (B, C, T, H, W)      grid (T / tubelet, H / p, W / p), axes ("t", "h", "w")
    temporal_coords    (B, T_grid, 2)       (year, day of year), float
    location_coords    (B, 2)               (lat, lon) in degrees
    forward_tokens     (B, 1 + K, D)

Example::

    >>> vit = PrithviViT(in_chans=6, patch_size=(1, 16, 16), embed_dim=64, depth=2,
    ...                  num_heads=4, coords_encoding=("time", "location"))
    >>> x = torch.randn(2, 6, 3, 64, 64)                       # 3 frames -> 3x4x4 grid
    >>> when = torch.tensor([[[2020., 45.], [2020., 120.], [2020., 200.]]] * 2)
    >>> where = torch.tensor([[38.9, -77.0], [40.7, -74.0]])
    >>> tokens, grid = vit.forward_tokens(x, temporal_coords=when, location_coords=where)
    >>> tokens.shape
    torch.Size([2, 49, 64])
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal, Unpack

import torch
from torch import Tensor, nn

from domainfm.core.backbone import BACKBONES
from domainfm.core.grid import TokenGrid, to_ntuple
from domainfm.core.pos_embed import sincos_1d
from domainfm.core.vit import VisionTransformerND
from domainfm.core.vit_size import ViTShapeArgs, ViTSize

COORDS_ENCODINGS = ("time", "location")
"""The optional coordinate embeddings of Prithvi-EO-2.0 (``coords_encoding`` entries)."""

PRITHVI_AXES = ("t", "h", "w")


@functools.lru_cache(maxsize=32)
def prithvi_pos_embed(grid_shape: tuple[int, int, int], dim: int) -> Tensor:
    """Prithvi's fixed 3D sin-cos table for a ``(t, h, w)`` token grid, ``(1, t*h*w, dim)``
    (tokens in C order, no class-token row; computed once per grid, read-only).

    Channels: ``dim // 16 * 6`` for the width coordinate, as many for the height, ``dim // 16
    * 4`` for time, concatenated as ``(w, h, t)``; each part is the 1D sin-cos of
    :func:`~domainfm.core.pos_embed.sincos_1d` (temperature 10000).

    Raises:
        ValueError: when ``dim`` is not a multiple of 16.
    """
    if dim % 16:
        raise ValueError(f"the Prithvi position table needs dim divisible by 16, got {dim}")
    t, h, w = (int(s) for s in grid_shape)
    cpu = torch.device("cpu")  # also when called under a meta-device context
    tt, hh, ww = torch.meshgrid(*(torch.arange(s, device=cpu) for s in (t, h, w)), indexing="ij")
    spatial, temporal = dim // 16 * 6, dim // 16 * 4
    parts = [
        sincos_1d(ww.reshape(-1), spatial),
        sincos_1d(hh.reshape(-1), spatial),
        sincos_1d(tt.reshape(-1), temporal),
    ]
    return torch.cat(parts, dim=1)[None]


def _sincos_float32(values: Tensor, dim: int) -> Tensor:
    """``(M,)`` real-valued coordinates → ``(M, dim)`` ``[sin, cos]`` computed in float32,
    operation for operation as upstream's ``_get_1d_sincos_embed_from_grid_torch`` (a year
    near 2000 needs the release's own float32 rounding to give its numbers)."""
    omega = torch.arange(dim // 2, dtype=torch.float32, device=values.device) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    angles = values.float().reshape(-1, 1) * omega[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class CoordinateEmbed(nn.Module):
    """Sin-cos embedding of a coordinate pair times a scalar ``scale``: the first ``D // 2``
    channels encode ``coords[..., 0]``, the rest ``coords[..., 1]`` (Prithvi-EO-2.0's
    ``TemporalEncoder`` for ``(year, day)`` and ``LocationEncoder`` for ``(lat, lon)``).

    Args:
        embed_dim: width ``D``.
        learn_scale: ``scale`` is a learned parameter starting at 0.1; otherwise a fixed
            buffer of 1 (both are in the state dict, as upstream).
    """

    scale: Tensor

    def __init__(self, embed_dim: int, *, learn_scale: bool = False) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.first_dim = embed_dim // 2
        if learn_scale:
            self.scale = nn.Parameter(torch.full((1,), 0.1))
        else:
            self.register_buffer("scale", torch.ones(1))

    def forward(self, coords: Tensor) -> Tensor:
        """``(..., 2)`` → ``(..., D)`` (float32)."""
        first = _sincos_float32(coords[..., 0], self.first_dim)
        second = _sincos_float32(coords[..., 1], self.embed_dim - self.first_dim)
        both = torch.cat([first, second], dim=-1).reshape(*coords.shape[:-1], self.embed_dim)
        return self.scale * both


@BACKBONES.register("prithvi_vit")
class PrithviViT(VisionTransformerND):
    """Prithvi's ViT encoder over ``(B, C, T, H, W)`` (implements
    :class:`~domainfm.core.backbone.Backbone`; see the module docstring for what differs from
    :class:`~domainfm.core.vit.VisionTransformerND`).

    Args:
        in_chans: input bands ``C`` (6 HLS bands in the releases).
        patch_size: ``(tubelet, p, p)``; an int ``p`` means ``(1, p, p)`` as upstream.
        coords_encoding: coordinate embeddings to include, among ``"time"`` (needs a tubelet
            of 1 frame) and ``"location"`` (the -TL releases have both).
        coords_scale_learn: their scales are learned parameters (the -TL releases) rather
            than fixed ones.
        global_pool: ``"token"`` (class token) or ``"avg"`` (mean of patch tokens) in
            ``forward``.
        norm_eps: epsilon of every LayerNorm (1e-5, ``torch.nn.LayerNorm``'s, as upstream).
        size_args: the transformer's size, :class:`~domainfm.core.vit_size.ViTShapeArgs`
            (default Prithvi-EO-1.0-100M: ``embed_dim=768`` (a multiple of 16), ``depth=12,
            num_heads=12, mlp_ratio=4.0``; qkv bias as upstream).

    State dict keys: ``cls_token``, ``patch_embed.proj.{weight,bias}`` (Conv3d ``(D, C,
    tubelet, p, p)``), ``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*``,
    ``norm.*`` and, when enabled, ``temporal_embed_enc.scale`` / ``location_embed_enc.scale``
    (Prithvi-EO-1.0's flat names; 2.0 adds an ``encoder.`` prefix). No position table: it is
    recomputed per grid.
    """

    def __init__(
        self,
        *,
        in_chans: int = 6,
        patch_size: int | Sequence[int] = (1, 16, 16),
        coords_encoding: Sequence[str] = (),
        coords_scale_learn: bool = False,
        global_pool: Literal["token", "avg"] = "token",
        norm_eps: float = 1e-5,
        **size_args: Unpack[ViTShapeArgs],
    ) -> None:
        size = ViTSize.from_keywords(
            size_args,
            accepted=ViTShapeArgs,
            owner=type(self).__name__,
            qkv_bias=True,
            norm_eps=norm_eps,
        )
        embed_dim = size.embed_dim
        patch: tuple[int, ...] = (
            (1, patch_size, patch_size)
            if isinstance(patch_size, int)
            else to_ntuple(patch_size, 3, name="patch_size")
        )
        if embed_dim % 16:
            raise ValueError(
                f"embed_dim={embed_dim} must be a multiple of 16 (Prithvi's 3D sin-cos table "
                "gives 6/16 of the channels to width and height and 4/16 to time)"
            )
        encodings = tuple(str(c) for c in coords_encoding)
        unknown = [c for c in encodings if c not in COORDS_ENCODINGS]
        if unknown:
            raise ValueError(f"coords_encoding {unknown} unknown; known: {list(COORDS_ENCODINGS)}")
        if "time" in encodings and patch[0] != 1:
            raise ValueError(
                f"the temporal embedding needs a tubelet of 1 frame, got patch_size {patch}"
            )
        super().__init__(
            in_chans=in_chans,
            spatial_dims=3,
            patch_size=patch,
            **size.kwargs(),
            global_pool=global_pool,
            axes=PRITHVI_AXES,
        )
        for module in self.blocks.modules():  # timm's Block defaults to eps 1e-6
            if isinstance(module, nn.LayerNorm):
                module.eps = norm_eps
        self.coords_encoding = encodings
        self.temporal_embed_enc: CoordinateEmbed | None = None
        self.location_embed_enc: CoordinateEmbed | None = None
        if "time" in encodings:
            self.temporal_embed_enc = CoordinateEmbed(embed_dim, learn_scale=coords_scale_learn)
        if "location" in encodings:
            self.location_embed_enc = CoordinateEmbed(embed_dim, learn_scale=coords_scale_learn)
        self._call_coords: tuple[Tensor | None, Tensor | None] = (None, None)

    # -- positions ----------------------------------------------------------------------
    def _patch_pos_embed(self, grid: TokenGrid, ref: Tensor) -> Tensor:
        """Prithvi's 3D sin-cos table for this grid, ``(1, N, D)``."""
        t, h, w = grid.shape
        table = prithvi_pos_embed((t, h, w), self.embed_dim)
        return table.to(device=ref.device, dtype=ref.dtype)

    @contextmanager
    def _coords(self, temporal: Tensor | None, location: Tensor | None) -> Iterator[None]:
        """Hold one call's coordinates (checked against the model) for :meth:`_embed`."""
        if temporal is not None and self.temporal_embed_enc is None:
            raise ValueError(
                "temporal_coords given, but this model has no temporal embedding "
                f"(coords_encoding={list(self.coords_encoding)})"
            )
        if location is not None and self.location_embed_enc is None:
            raise ValueError(
                "location_coords given, but this model has no location embedding "
                f"(coords_encoding={list(self.coords_encoding)})"
            )
        previous = self._call_coords
        self._call_coords = (temporal, location)
        try:
            yield
        finally:
            self._call_coords = previous

    def _embed(self, x: Tensor, grid: TokenGrid, keep_idx: Tensor | None) -> Tensor:
        """Patch tokens with positions (and coordinate embeddings), after the class token."""
        tokens = super()._embed(x, grid, keep_idx)  # (B, 1 + K, D)
        temporal, location = self._call_coords
        if temporal is None and location is None:
            return tokens
        batch, prefix = x.shape[0], self.num_prefix_tokens
        patch = tokens[:, prefix:]
        if temporal is not None:
            assert self.temporal_embed_enc is not None  # checked by _coords
            frames = grid.shape[0]
            if tuple(temporal.shape) != (batch, frames, 2):
                raise ValueError(
                    f"temporal_coords must be (B={batch}, T={frames}, 2) (year, day of year), "
                    f"got shape {tuple(temporal.shape)}"
                )
            per_frame = self.temporal_embed_enc(temporal.to(x.device))  # (B, T, D)
            index = (
                keep_idx.to(x.device)
                if keep_idx is not None
                else torch.arange(grid.num_tokens, device=x.device).expand(batch, -1)
            )
            frame = torch.div(index, grid.num_tokens // frames, rounding_mode="floor")
            picked = torch.gather(per_frame, 1, frame[..., None].expand(-1, -1, self.embed_dim))
            patch = patch + picked.to(patch.dtype)
        if location is not None:
            assert self.location_embed_enc is not None
            if tuple(location.shape) != (batch, 2):
                raise ValueError(
                    f"location_coords must be (B={batch}, 2) (lat, lon), "
                    f"got shape {tuple(location.shape)}"
                )
            where = self.location_embed_enc(location.to(x.device))[:, None]  # (B, 1, D)
            patch = patch + where.to(patch.dtype)
        return torch.cat([tokens[:, :prefix], patch], dim=1)

    # -- forward paths ------------------------------------------------------------------
    def forward_tokens(
        self,
        x: Tensor,
        keep_idx: Tensor | None = None,
        *,
        temporal_coords: Tensor | None = None,
        location_coords: Tensor | None = None,
    ) -> tuple[Tensor, TokenGrid]:
        """Encode ``x`` ``(B, C, T, H, W)`` → normed tokens ``(B, 1 + K, D)`` and the grid
        (``keep_idx`` as :meth:`VisionTransformerND.forward_tokens`; coordinates as the
        module docstring)."""
        with self._coords(temporal_coords, location_coords):
            return super().forward_tokens(x, keep_idx)

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | Sequence[int] = 1,
        norm: bool = False,
        *,
        temporal_coords: Tensor | None = None,
        location_coords: Tensor | None = None,
    ) -> list[Tensor]:
        """Feature maps ``(B, D, T', H', W')`` after the selected blocks."""
        with self._coords(temporal_coords, location_coords):
            return super().forward_intermediates(x, indices, norm)

    def forward(
        self,
        x: Tensor,
        *,
        temporal_coords: Tensor | None = None,
        location_coords: Tensor | None = None,
    ) -> Tensor:
        """Pooled embedding ``(B, D)``."""
        tokens, _ = self.forward_tokens(
            x, temporal_coords=temporal_coords, location_coords=location_coords
        )
        return self.pool_tokens(tokens)
