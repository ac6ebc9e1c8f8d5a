"""CROMA's single-modality encoder: a ViT without a position table, positions given by a 2D
ALiBi attention bias (Fuller et al. 2023, "CROMA: remote sensing representations with
contrastive radar-optical masked autoencoders", arXiv:2311.00566).

As TorchGeo 0.8.1 ``torchgeo/models/croma.py`` (``ViT``, ``BaseTransformer``, ``Attention``,
``FFN``, ``get_2dalibi``; code based on antofuller/CROMA ``pretrain_croma.py``):

* patches of ``8 × 8`` pixels flattened channel-major (``c i j``) and embedded by a linear
  layer ``linear_input`` (no class token, no position table);
* pre-norm blocks ``transformer.layers.N.0`` (attention: ``input_norm``, ``to_qkv`` without
  bias, ``to_out``) and ``transformer.layers.N.1`` (``input_norm``, ``net.0`` → GELU →
  ``net.3``), 16 heads, then ``transformer.norm_out``;
* the attention logits get ``-slope_h · dist(i, j)``, the Euclidean distance between the
  patches' grid positions, with ALiBi slopes ``slope_h = s^(h+1)``, ``s = 2^(-2^(3 - log2 n))``
  for ``n`` heads. The bias is computed for each input grid (any ``H × W``, upstream builds
  it for one square size) and gathered at the kept tokens when masking.

The GAP-FFN heads (``s1_GAP_FFN``, ``s2_GAP_FFN``), trained for CROMA's contrastive loss, are
not part of this encoder; ``forward`` is the global average of the tokens (CROMA's "GAP"
before that FFN).

Shapes::

    x                              (B, in_chans, H, W), H and W divisible by 8
    forward_tokens(x, keep_idx)    (B, K, D), grid (H/8, W/8)
    forward(x)                     (B, D) mean of the tokens

Example::

    >>> enc = CROMAEncoder(in_chans=12, embed_dim=64, depth=2, num_heads=16)
    >>> enc(torch.randn(2, 12, 32, 40)).shape
    torch.Size([2, 64])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Unpack

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from domainfm.core.backbone import BACKBONES, backbone_grid
from domainfm.core.block_selection import select_blocks
from domainfm.core.grid import TokenGrid
from domainfm.core.kept_tokens import gather_kept
from domainfm.core.token_encoder import TokenEncoder
from domainfm.core.vit_size import ViTDimsArgs, ViTSize


def alibi_slopes(num_heads: int) -> Tensor:
    """ALiBi slopes ``(num_heads,)``: ``s^(h+1)`` with ``s = 2^(-2^(3 - log2 n))``."""
    start = 2 ** (-(2 ** -(math.log2(num_heads) - 3)))
    return torch.tensor([start * start**i for i in range(num_heads)], dtype=torch.float32)


def alibi_2d_bias(
    grid: tuple[int, int], num_heads: int, device: torch.device | None = None
) -> Tensor:
    """``(num_heads, N, N)`` bias ``-slope_h · ‖pos_i - pos_j‖`` for a row-major grid."""
    rows, cols = torch.meshgrid(
        torch.arange(grid[0], dtype=torch.float32, device=device),
        torch.arange(grid[1], dtype=torch.float32, device=device),
        indexing="ij",
    )
    pos = torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=1)  # (N, 2)
    dist = torch.cdist(pos.double(), pos.double()).float()  # (N, N)
    return -alibi_slopes(num_heads).to(device)[:, None, None] * dist[None]


class CROMAAttention(nn.Module):
    """Pre-norm self-attention with an additive bias (keys ``input_norm``, ``to_qkv``,
    ``to_out``)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.input_norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, dim * 3, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        q, k, v = self.to_qkv(self.input_norm(x)).chunk(3, dim=-1)
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=self.num_heads) for t in (q, k, v))
        mixed = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        out: Tensor = self.to_out(rearrange(mixed, "b h n d -> b n (h d)"))
        return out


class CROMAFeedForward(nn.Module):
    """Pre-norm MLP (keys ``input_norm``, ``net.0``, ``net.3``)."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.input_norm = nn.LayerNorm(dim)
        self.net = nn.Sequential(
            nn.Linear(dim, dim * mult), nn.GELU(), nn.Dropout(0.0), nn.Linear(dim * mult, dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.net(self.input_norm(x))
        return out


class CROMATransformer(nn.Module):
    """``layers.N.{0: attention, 1: feed-forward}`` and ``norm_out``."""

    def __init__(self, dim: int, depth: int, num_heads: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([CROMAAttention(dim, num_heads), CROMAFeedForward(dim)])
            for _ in range(depth)
        )
        self.norm_out = nn.LayerNorm(dim)


@BACKBONES.register("croma_vit")
class CROMAEncoder(TokenEncoder):
    """CROMA radar or optical encoder (implements :class:`~domainfm.core.backbone.Backbone`).

    Args:
        in_chans: input bands (2 for Sentinel-1 VV/VH, 12 for Sentinel-2 without B10).
        patch_size: square patch side (8).
        size_args: :class:`~domainfm.core.vit_size.ViTDimsArgs`: ``embed_dim`` (base 768,
            large 1024), ``depth`` (base: 12 optical, 6 radar; large: 24 optical, 12 radar),
            ``num_heads`` (16 in both releases, the default). The MLP ratio (4), qkv (no
            bias) and LayerNorm epsilon (1e-5) are the release's.
    """

    def __init__(
        self,
        *,
        in_chans: int,
        patch_size: int = 8,
        **size_args: Unpack[ViTDimsArgs],
    ) -> None:
        super().__init__()
        size = ViTSize.from_keywords(
            size_args, accepted=ViTDimsArgs, owner=type(self).__name__, num_heads=16
        )
        embed_dim, depth, num_heads = size.embed_dim, size.depth, size.num_heads
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.spatial_dims = 2
        self.patch_size = (patch_size, patch_size)
        self.axes = ("h", "w")
        self.num_prefix_tokens = 0
        self.linear_input = nn.Linear(in_chans * patch_size * patch_size, embed_dim)
        self.transformer = CROMATransformer(embed_dim, depth, num_heads)

    def token_grid(self, input_shape: Sequence[int]) -> TokenGrid:
        """The grid of an ``(H, W)`` input; ``ValueError`` if it does not fit the model."""
        return backbone_grid(self, input_shape)

    def _embed(self, x: Tensor) -> tuple[Tensor, TokenGrid]:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"x must be (B, {self.in_chans}, H, W), got shape {tuple(x.shape)}")
        grid = self.token_grid(x.shape[2:])
        p = self.patch_size[0]
        patches = rearrange(x, "b c (h i) (w j) -> b (h w) (c i j)", i=p, j=p)
        return self.linear_input(patches), grid

    def _blocks(self, tokens: Tensor, bias: Tensor, wanted: Sequence[int] = ()) -> list[Tensor]:
        outs = []
        for i, layer in enumerate(self.transformer.layers):
            attn, ffn = layer[0], layer[1]  # type: ignore[index]
            tokens = attn(tokens, bias) + tokens
            tokens = ffn(tokens) + tokens
            if i in wanted:
                outs.append(tokens)
        return [*outs, tokens]

    def forward_tokens(self, x: Tensor, keep_idx: Tensor | None = None) -> tuple[Tensor, TokenGrid]:
        """Encode ``x`` → normed tokens ``(B, K, D)`` (all ``N`` without ``keep_idx``)."""
        tokens, grid = self._embed(x)
        bias = alibi_2d_bias((grid.shape[0], grid.shape[1]), self.num_heads, device=x.device)[
            None
        ]  # (1, h, N, N)
        if keep_idx is not None:
            tokens = gather_kept(tokens, keep_idx)
            idx = keep_idx.to(x.device)
            rows = bias[0][:, idx].permute(1, 0, 2, 3)  # (B, h, K, N)
            bias = torch.gather(
                rows, 3, idx[:, None, None, :].expand(-1, rows.shape[1], idx.shape[1], -1)
            )
        tokens = self._blocks(tokens, bias)[-1]
        return self.transformer.norm_out(tokens), grid

    def forward_intermediates(
        self, x: Tensor, indices: int | Sequence[int] = 1, norm: bool = False
    ) -> list[Tensor]:
        """Feature maps ``(B, D, H/8, W/8)`` after the selected blocks (last ``n`` if int);
        ``norm`` applies ``norm_out`` to each."""
        wanted = select_blocks(indices, len(self.transformer.layers))
        tokens, grid = self._embed(x)
        bias = alibi_2d_bias((grid.shape[0], grid.shape[1]), self.num_heads, device=x.device)[None]
        outs = self._blocks(tokens, bias, wanted)[:-1]
        if norm:
            outs = [self.transformer.norm_out(t) for t in outs]
        return [t.transpose(1, 2).reshape(x.shape[0], self.embed_dim, *grid.shape) for t in outs]
