"""A Vision Transformer for 1D, 2D and 3D token grids, built on timm's ``Block``.

The encoder of ViT (Dosovitskiy et al. 2021, arXiv:2010.11929) as used by MAE (He et al.
2022, arXiv:2111.06377) for inputs of any grid dimensionality: a 3D CT volume
``(B, 1, 96, 96, 96)``, a 13-band raster ``(B, 13, 64, 64)``, an image time series
``(B, C, T, H, W)`` with axes ``("t", "h", "w")`` or a log-mel spectrogram ``(B, 1, F, T)`` with
axes ``("f", "t")``. Attention is timm's (fused ``scaled_dot_product_attention``); nothing is
re-implemented here. Masked tokens can be dropped before the encoder (``keep_idx``), as MAE
does, so the encoder cost scales with the visible tokens only.

Example::

    >>> vit = VisionTransformerND(in_chans=1, spatial_dims=3, patch_size=16, embed_dim=64,
    ...                           depth=2, num_heads=4)
    >>> x = torch.randn(2, 1, 32, 32, 32)                 # (B, C, D, H, W) -> 2x2x2 grid
    >>> tokens, grid = vit.forward_tokens(x, keep_idx=torch.tensor([[0, 5], [1, 2]]))
    >>> tokens.shape                                       # (B, 1 cls + 2 kept, D)
    torch.Size([2, 3, 64])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any, Literal, Unpack

import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from domainfm.core.backbone import BACKBONES, backbone_grid
from domainfm.core.block_selection import select_blocks
from domainfm.core.grid import DEFAULT_AXES, TokenGrid, to_ntuple
from domainfm.core.kept_tokens import check_keep_idx, gather_kept
from domainfm.core.patch_embed import ConvPatchEmbed, build_patch_embed
from domainfm.core.patching import patchify_at
from domainfm.core.pos_embed import cached_sincos_pos_embed, resample_pos_embed
from domainfm.core.token_encoder import TokenEncoder
from domainfm.core.vit_size import ViTSize, ViTSizeArgs, check_count


def _per_patch_linear(
    patch_embed: nn.Module, patch_size: tuple[int, ...]
) -> nn.Conv1d | nn.Conv2d | nn.Conv3d | None:
    """The patch embedding's conv if it is a plain linear map of each patch, else ``None``.

    True for :class:`ConvPatchEmbed` and timm's ``PatchEmbed`` without norm or padding: kernel
    equal to stride equal to the patch size, no padding, dilation or groups.
    """
    if isinstance(patch_embed, PatchEmbed):
        if not (patch_embed.flatten and isinstance(patch_embed.norm, nn.Identity)) or getattr(
            patch_embed, "dynamic_img_pad", False
        ):
            return None
    elif not isinstance(patch_embed, ConvPatchEmbed):
        return None
    proj = patch_embed.proj
    if not isinstance(proj, nn.Conv1d | nn.Conv2d | nn.Conv3d):
        return None
    plain = (
        tuple(proj.kernel_size) == patch_size
        and tuple(proj.stride) == patch_size
        and isinstance(proj.padding, tuple)
        and not any(proj.padding)
        and all(d == 1 for d in proj.dilation)
        and proj.groups == 1
    )
    return proj if plain else None


def vit_blocks(size: ViTSize, **block_kwargs: Any) -> nn.ModuleList:
    r"""``size.depth`` timm ``Block``\ s with ``LayerNorm(eps=size.norm_eps)`` and stochastic
    depth rising linearly from 0 to ``size.drop_path_rate``; ``block_kwargs`` go to every
    block (e.g. ``proj_bias``, ``mlp_layer``)."""
    # on the CPU also when the model is built on the meta device
    rates = torch.linspace(0, size.drop_path_rate, size.depth, device="cpu").tolist()
    return nn.ModuleList(
        Block(
            dim=size.embed_dim,
            num_heads=size.num_heads,
            mlp_ratio=size.mlp_ratio,
            qkv_bias=size.qkv_bias,
            drop_path=rate,
            norm_layer=partial(nn.LayerNorm, eps=size.norm_eps),  # type: ignore[arg-type]
            **block_kwargs,
        )
        for rate in rates
    )


@BACKBONES.register("vit_nd")
class VisionTransformerND(TokenEncoder):
    """ViT encoder over an N-D token grid (implements :class:`~domainfm.core.backbone.Backbone`).

    Args:
        in_chans: input channels ``C`` (bands, modalities, ...).
        spatial_dims: number of grid axes of the input, 1 to 3 (time counts as an axis).
        patch_size: patch size, an int or one value per axis.
        class_token: prepend a learned class token (``num_prefix_tokens`` = 1).
        pos_embed: ``"sincos"`` (fixed, computed for any grid) or ``"learned"`` (a table for
            ``grid_size``, resampled when the input grid differs).
        grid_size: token grid the learned table is built for (required for ``"learned"``).
        global_pool: ``"token"`` (class token) or ``"avg"`` (mean of patch tokens) in ``forward``.
        axes: axis names, default ``("t",)``, ``("h", "w")`` or ``("d", "h", "w")``.
        size_args: the transformer's size, :class:`~domainfm.core.vit_size.ViTSizeArgs`
            (default ViT-B: ``embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0,
            qkv_bias=True, drop_path_rate=0.0``, stochastic depth rising linearly over the
            blocks, and ``norm_eps=1e-6``, the epsilon of every LayerNorm as timm's and MAE's
            ViTs; MONAI's ViT uses 1e-5).
    """

    def __init__(
        self,
        *,
        in_chans: int,
        spatial_dims: int,
        patch_size: int | Sequence[int] = 16,
        class_token: bool = True,
        pos_embed: Literal["sincos", "learned"] = "sincos",
        grid_size: int | Sequence[int] | None = None,
        global_pool: Literal["token", "avg"] = "token",
        axes: Sequence[str] | None = None,
        **size_args: Unpack[ViTSizeArgs],
    ) -> None:
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}")
        check_count("in_chans", in_chans)
        size = ViTSize.from_keywords(size_args, accepted=ViTSizeArgs, owner=type(self).__name__)
        embed_dim = size.embed_dim
        if pos_embed not in ("sincos", "learned"):
            raise ValueError(f"pos_embed must be 'sincos' or 'learned', got {pos_embed!r}")
        if global_pool == "token" and not class_token:
            raise ValueError("global_pool='token' needs class_token=True")
        self.spatial_dims = spatial_dims
        self.patch_size = to_ntuple(patch_size, spatial_dims, name="patch_size")
        self.axes = tuple(axes) if axes is not None else DEFAULT_AXES[spatial_dims]
        if len(self.axes) != spatial_dims:
            raise ValueError(f"axes must have {spatial_dims} names, got {self.axes}")
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.num_prefix_tokens = 1 if class_token else 0
        self.global_pool = global_pool
        self.pos_embed_type = pos_embed
        self.grad_checkpointing = False

        self.patch_embed = build_patch_embed(
            in_chans=in_chans, embed_dim=embed_dim, patch_size=self.patch_size
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        if pos_embed == "learned":
            if grid_size is None:
                raise ValueError(
                    "pos_embed='learned' needs grid_size (the token grid it is built for)"
                )
            self.grid_size = to_ntuple(grid_size, spatial_dims, name="grid_size")
            n = self.num_prefix_tokens + math.prod(self.grid_size)  # also on meta
            self.pos_embed: nn.Parameter | None = nn.Parameter(torch.zeros(1, n, embed_dim))
        else:
            self.grid_size = to_ntuple(grid_size or 1, spatial_dims, name="grid_size")
            self.pos_embed = None

        self.blocks = vit_blocks(size)
        self.norm = nn.LayerNorm(embed_dim, eps=size.norm_eps)
        self._init_weights()

    # -- construction -------------------------------------------------------------------
    def _init_weights(self) -> None:
        """MAE initialization: xavier-uniform linears/patch projection, normal(0.02) tokens."""
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=0.02)
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        proj = self.patch_embed.proj
        assert isinstance(proj, nn.Conv1d | nn.Conv2d | nn.Conv3d)
        nn.init.xavier_uniform_(proj.weight.view(proj.weight.shape[0], -1))
        for m in self.blocks.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in backward to save memory."""
        self.grad_checkpointing = enable

    # -- grid and positions -------------------------------------------------------------
    def token_grid(self, input_shape: Sequence[int]) -> TokenGrid:
        """The grid of a ``(*spatial)`` input; ``ValueError`` if it does not fit the model."""
        return backbone_grid(self, input_shape)

    def _patch_pos_embed(self, grid: TokenGrid, ref: Tensor) -> Tensor:
        """Positional table for the grid's patch tokens, ``(1, N, D)``."""
        if self.pos_embed is None:
            table = cached_sincos_pos_embed(grid.shape, self.embed_dim)  # (1, N, D)
            return table.to(device=ref.device, dtype=ref.dtype)
        table = resample_pos_embed(
            self.pos_embed, grid.shape, self.grid_size, num_prefix_tokens=self.num_prefix_tokens
        )
        return table[:, self.num_prefix_tokens :]

    def _prefix(self, batch: int) -> Tensor | None:
        if self.cls_token is None:
            return None
        cls: Tensor = self.cls_token
        if self.pos_embed is not None:
            cls = cls + self.pos_embed[:, :1]
        return cls.expand(batch, -1, -1)

    def _check_input(self, x: Tensor) -> TokenGrid:
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"x must be (B, C, *spatial) with {self.spatial_dims} spatial dims, "
                f"got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_chans:
            raise ValueError(f"x has {x.shape[1]} channels, model has in_chans={self.in_chans}")
        return self.token_grid(x.shape[2:])

    def _embed(self, x: Tensor, grid: TokenGrid, keep_idx: Tensor | None) -> Tensor:
        if keep_idx is None:
            tokens = self.patch_embed(x)  # (B, N, D)
            tokens = tokens + self._patch_pos_embed(grid, tokens)
        else:
            check_keep_idx(keep_idx, x.shape[0])
            tokens = self._embed_kept(x, grid, keep_idx.to(x.device))  # (B, K, D)
        return self._prepend_prefix(tokens)

    def _prepend_prefix(self, tokens: Tensor) -> Tensor:
        """Patch tokens ``(B, K, D)`` after the prefix tokens, ``(B, P + K, D)``."""
        prefix = self._prefix(tokens.shape[0])
        if prefix is None:
            return tokens
        return torch.cat([prefix.to(tokens.dtype), tokens], dim=1)

    def _embed_kept(self, x: Tensor, grid: TokenGrid, keep_idx: Tensor) -> Tensor:
        """Embedded, positioned tokens at ``keep_idx`` only, ``(B, K, D)``.

        With kernel == stride the patch conv is a matmul per patch, so only the kept patches
        are gathered and projected (a quarter of the conv's work at 75% masking); the weight
        stays the conv's ``patch_embed.proj.weight``. Other patch embeddings embed all tokens
        and gather.
        """
        proj = _per_patch_linear(self.patch_embed, self.patch_size)
        if proj is None:
            tokens = gather_kept(self.patch_embed(x), keep_idx)  # (B, K, D)
        else:
            weight = proj.weight.reshape(proj.weight.shape[0], -1)  # (D, C * prod(patch))
            tokens = F.linear(
                patchify_at(x, grid, keep_idx, channels_last=False), weight, proj.bias
            )
        table = self._patch_pos_embed(grid, tokens)[0]  # (N, D)
        return tokens + F.embedding(keep_idx, table)

    def _block(self, block: nn.Module, tokens: Tensor) -> Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            out: Tensor = checkpoint(block, tokens, use_reentrant=False)
            return out
        result: Tensor = block(tokens)
        return result

    # -- forward paths ------------------------------------------------------------------
    def forward_tokens(self, x: Tensor, keep_idx: Tensor | None = None) -> tuple[Tensor, TokenGrid]:
        """Encode ``x`` ``(B, C, *spatial)`` → normed tokens ``(B, P + K, D)`` and the grid.

        Args:
            x: input batch.
            keep_idx: ``(B, K)`` indices into the flattened grid of the tokens to encode
                (see :func:`domainfm.core.masking.keep_indices`); all tokens when ``None``.
        """
        grid = self._check_input(x)
        tokens = self._embed(x, grid, keep_idx)
        for block in self.blocks:
            tokens = self._block(block, tokens)
        return self.norm(tokens), grid

    def forward_intermediates(
        self, x: Tensor, indices: int | Sequence[int] = 1, norm: bool = False
    ) -> list[Tensor]:
        """Feature maps after selected blocks, each ``(B, D, *grid.shape)``.

        Args:
            x: input ``(B, C, *spatial)`` (no token dropping).
            indices: block indices to return, or an int ``n`` for the last ``n`` blocks.
            norm: apply the final LayerNorm to each returned map.
        """
        grid = self._check_input(x)
        wanted = select_blocks(indices, len(self.blocks))
        tokens = self._embed(x, grid, None)
        maps = []
        for i, block in enumerate(self.blocks[: wanted[-1] + 1]):
            tokens = self._block(block, tokens)
            if i in wanted:
                out = self.norm(tokens) if norm else tokens
                patch = out[:, self.num_prefix_tokens :]  # (B, N, D)
                maps.append(patch.transpose(1, 2).reshape(x.shape[0], self.embed_dim, *grid.shape))
        return maps

    def pool_tokens(self, tokens: Tensor) -> Tensor:
        """``forward_tokens`` output ``(B, P + N, D)`` → pooled ``(B, D)`` (class token or
        mean of patch tokens)."""
        if self.global_pool == "token":
            return tokens[:, 0]
        return tokens[:, self.num_prefix_tokens :].mean(dim=1)
