"""The BEATs audio encoder: a patch-embedded fbank through a post-LN (DeepNorm) Transformer
with a convolutional position embedding and gated, bucketed relative position bias.

BEATs (Chen et al. 2022, "BEATs: Audio Pre-Training with Acoustic Tokenizers",
arXiv:2212.09058) as written in microsoft/unilm ``beats/BEATs.py`` (``BEATs``,
``BEATs.extract_features``) and ``beats/backbone.py`` (``TransformerEncoder``,
``TransformerSentenceEncoderLayer``, ``MultiheadAttention`` with
``_relative_positions_bucket`` / ``compute_bias`` and the ``gru_rel_pos`` gate). No package
installs that code; this is a re-implementation from its structure with the same parameter
names, so a released ``checkpoint["model"]`` maps onto it key for key (the weight-normed
position convolution under torch's current parametrization names). Inference only matches:
dropout, layer drop and the layer-wise gradient decay of training are not modeled, and a
padding mask is not supported (feed whole clips).

Forward pass (eval mode), for an fbank ``(B, 1, F, T)`` (``F`` = 128 mel bins):

1. ``patch_embedding`` (``Conv2d(1, embed_dim, p, stride=p)``, bias per ``conv_bias``) over
   the fbank laid out ``(B, 1, T, F)`` as BEATs does, giving tokens in **time-major** order
   (index ``t * F' + f``); frames that do not fill a patch are dropped (strided conv);
   ``layer_norm``; ``post_extract_proj`` to ``encoder_embed_dim`` when the widths differ.
2. ``encoder``: ``x + GELU(pos_conv(x))`` (a grouped ``Conv1d`` over the token sequence, kernel
   ``conv_pos``, padding ``conv_pos // 2``, the last output dropped for an even kernel,
   weight-normed over dim 2), then ``encoder.layer_norm`` unless ``layer_norm_first``.
3. Each layer: multi-head attention whose logits get a per-head relative position bias
   ``relative_attention_bias[bucket(j - i)]`` (T5-style log buckets: half the buckets per
   direction, exact below ``num_buckets // 4``, logarithmic up to ``max_distance``), one table
   shared by all layers; with ``gru_rel_pos`` the bias of query ``i`` in head ``h`` is scaled
   by ``a * (b * grep_a[h] - 1) + 2`` where ``(a, b) = sigmoid(sum of 4-groups of
   grep_linear(q_i))`` from the unscaled query. Post-LN layers
   (``x = LN(alpha * x + attn(x))``, ``x = LN(alpha * x + FFN(x))``, ``alpha =
   (2 * layers) ** 0.25`` with ``deep_norm``, else 1) or pre-LN layers with
   ``layer_norm_first`` (then ``encoder.layer_norm`` closes the stack).

Shapes::

    x                          (B, 1, F, T)      normalized BEATs fbank (F = 128)
    token_grid((F, T))         (F // p, T // p)  axes ("f", "t")
    forward_tokens(x)          (B, N, D), grid   tokens in grid order (f-major), no prefix
    forward_intermediates(x)   [(B, D, F // p, T // p)]
    forward(x)                 (B, D)            mean of the tokens

Example::

    >>> enc = BEATsEncoder(**{**BEATS_ITER3_ARCH, "encoder_layers": 2})
    >>> enc(torch.randn(1, 1, 128, 96)).shape           # 8 x 6 tokens of width 768
    torch.Size([1, 768])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from domainfm.core.backbone import BACKBONES
from domainfm.core.block_selection import select_blocks
from domainfm.core.constructor_arguments import ConstructorConfig
from domainfm.core.grid import TokenGrid
from domainfm.core.kept_tokens import gather_kept
from domainfm.core.token_encoder import TokenEncoder

BEATS_ITER3_ARCH: dict[str, Any] = {
    "input_patch_size": 16,
    "embed_dim": 512,
    "conv_bias": False,
    "encoder_layers": 12,
    "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12,
    "activation_fn": "gelu",
    "layer_norm_first": False,
    "deep_norm": True,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "relative_position_embedding": True,
    "num_buckets": 320,
    "max_distance": 800,
    "gru_rel_pos": True,
}
"""The architecture fields of the BEATs iter3 / iter3+ checkpoints' ``cfg`` (every one is a
constructor argument of :class:`BEATsEncoder` under the same name)."""


@dataclass(frozen=True, kw_only=True)
class BEATsArch(ConstructorConfig):
    """The architecture fields of a BEATs ``cfg``, checked (a :class:`BEATsEncoder` takes
    each as a keyword argument and builds one of these; its Transformer reads it).

    Attributes:
        input_patch_size: patch side ``p`` over (time, mel) of the fbank.
        embed_dim: patch-embedding width.
        conv_bias: bias on the patch embedding.
        encoder_layers: Transformer layers.
        encoder_embed_dim: token width ``D``.
        encoder_ffn_embed_dim: hidden width of the feed-forward blocks.
        encoder_attention_heads: attention heads.
        activation_fn: feed-forward activation (``"gelu"``, exact erf form).
        layer_norm_first: pre-LN layers (else post-LN).
        deep_norm: DeepNorm residual scale ``(2 * layers) ** 0.25`` in post-LN layers.
        conv_pos: kernel of the convolutional position embedding.
        conv_pos_groups: its groups.
        relative_position_embedding: add the bucketed relative position bias.
        num_buckets: relative position buckets (both directions).
        max_distance: distance where the log buckets end.
        gru_rel_pos: gate the bias per query (``grep_linear``, ``grep_a``).

    Raises:
        ValueError: another activation than GELU, ``deep_norm`` with ``layer_norm_first``,
            or heads that do not divide ``encoder_embed_dim``.
    """

    input_patch_size: int
    embed_dim: int
    conv_bias: bool
    encoder_layers: int
    encoder_embed_dim: int
    encoder_ffn_embed_dim: int
    encoder_attention_heads: int
    activation_fn: str
    layer_norm_first: bool
    deep_norm: bool
    conv_pos: int
    conv_pos_groups: int
    relative_position_embedding: bool
    num_buckets: int
    max_distance: int
    gru_rel_pos: bool

    def __post_init__(self) -> None:
        if self.activation_fn != "gelu":
            raise ValueError(f"activation_fn={self.activation_fn!r}: only 'gelu' is implemented")
        if self.deep_norm and self.layer_norm_first:
            raise ValueError("deep_norm and layer_norm_first exclude each other (as in BEATs)")
        if self.encoder_embed_dim % self.encoder_attention_heads:
            raise ValueError(
                f"encoder_embed_dim={self.encoder_embed_dim} must be divisible by "
                f"encoder_attention_heads={self.encoder_attention_heads}"
            )


def relative_position_buckets(
    query_length: int, key_length: int, *, num_buckets: int, max_distance: int
) -> Tensor:
    """Bidirectional log buckets of ``key - query`` offsets, ``(query_length, key_length)``
    long (BEATs' ``_relative_positions_bucket``, computed in float32 as there)."""
    offsets = (
        torch.arange(key_length, dtype=torch.long)[None, :]
        - torch.arange(query_length, dtype=torch.long)[:, None]
    )
    half = num_buckets // 2
    buckets = (offsets > 0).long() * half
    distance = offsets.abs()
    max_exact = half // 2
    scaled = (
        torch.log(distance.clamp(min=1).float() / max_exact)
        / math.log(max_distance / max_exact)
        * (half - max_exact)
    ).long()
    large = torch.clamp(max_exact + scaled, max=half - 1)
    return buckets + torch.where(distance < max_exact, distance, large)


class BEATsAttention(nn.Module):
    """Self-attention with BEATs' gated relative position bias (parameter names as BEATs')."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        relative_attention_bias: nn.Embedding | None,
        gru_rel_pos: bool,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        if relative_attention_bias is not None:
            self.relative_attention_bias = relative_attention_bias  # shared by every layer
        self.gru_rel_pos = gru_rel_pos
        if gru_rel_pos:
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, num_heads, 1, 1))

    def _heads(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, N, hd)

    def forward(self, x: Tensor, position_bias: Tensor | None) -> Tensor:
        """``x`` ``(B, N, D)``, ``position_bias`` ``(H, N, N)`` or ``None`` → ``(B, N, D)``."""
        q, k, v = (
            self._heads(self.q_proj(x)),
            self._heads(self.k_proj(x)),
            self._heads(self.v_proj(x)),
        )
        mask = None
        if position_bias is not None:
            mask = position_bias[None].to(q.dtype)  # (1, H, N, N)
            if self.gru_rel_pos:
                b, h, n, _ = q.shape
                gates = torch.sigmoid(self.grep_linear(q).view(b, h, n, 2, 4).sum(-1))
                gate_a, gate_b = gates.chunk(2, dim=-1)  # (B, H, N, 1) each
                mask = (gate_a * (gate_b * self.grep_a - 1.0) + 2.0) * mask
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, N, hd)
        out = out.transpose(1, 2).reshape(x.shape)
        projected: Tensor = self.out_proj(out)
        return projected


class BEATsLayer(nn.Module):
    """One BEATs Transformer layer, post-LN (with DeepNorm's residual scale) or pre-LN."""

    def __init__(
        self,
        dim: int,
        ffn_dim: int,
        num_heads: int,
        *,
        layer_norm_first: bool,
        deep_norm_alpha: float,
        relative_attention_bias: nn.Embedding | None,
        gru_rel_pos: bool,
    ) -> None:
        super().__init__()
        self.self_attn = BEATsAttention(
            dim, num_heads, relative_attention_bias=relative_attention_bias, gru_rel_pos=gru_rel_pos
        )
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.layer_norm_first = layer_norm_first
        self.alpha = deep_norm_alpha

    def _ffn(self, x: Tensor) -> Tensor:
        out: Tensor = self.fc2(F.gelu(self.fc1(x).float()).type_as(x))
        return out

    def forward(self, x: Tensor, position_bias: Tensor | None) -> Tensor:
        """``(B, N, D)`` → ``(B, N, D)``."""
        if self.layer_norm_first:
            x = x + self.self_attn(self.self_attn_layer_norm(x), position_bias)
            return x + self._ffn(self.final_layer_norm(x))
        x = self.self_attn_layer_norm(x * self.alpha + self.self_attn(x, position_bias))
        out: Tensor = self.final_layer_norm(x * self.alpha + self._ffn(x))
        return out


class BEATsTransformer(nn.Module):
    """BEATs' ``TransformerEncoder``: conv position embedding, layers, layer norm."""

    def __init__(self, arch: BEATsArch) -> None:
        super().__init__()
        dim, heads, kernel = arch.encoder_embed_dim, arch.encoder_attention_heads, arch.conv_pos
        conv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=arch.conv_pos_groups)
        self.pos_conv = nn.Sequential(weight_norm(conv, name="weight", dim=2))
        self.conv_pos = kernel
        self.num_buckets, self.max_distance = arch.num_buckets, arch.max_distance
        shared = nn.Embedding(arch.num_buckets, heads) if arch.relative_position_embedding else None
        alpha = (2.0 * arch.encoder_layers) ** 0.25 if arch.deep_norm else 1.0
        self.layers = nn.ModuleList(
            BEATsLayer(
                dim,
                arch.encoder_ffn_embed_dim,
                heads,
                layer_norm_first=arch.layer_norm_first,
                deep_norm_alpha=alpha,
                relative_attention_bias=shared,
                gru_rel_pos=arch.gru_rel_pos,
            )
            for _ in range(arch.encoder_layers)
        )
        self.layer_norm = nn.LayerNorm(dim)
        self.layer_norm_first = arch.layer_norm_first

    def position_bias(self, length: int, device: torch.device) -> Tensor | None:
        """Per-head bias ``(H, N, N)`` of a length-``N`` sequence (``None`` without it)."""
        table = getattr(self.layers[0].self_attn, "relative_attention_bias", None)
        if not isinstance(table, nn.Embedding):
            return None
        buckets = relative_position_buckets(
            length, length, num_buckets=self.num_buckets, max_distance=self.max_distance
        )
        bias: Tensor = table(buckets.to(device))  # (N, N, H)
        return bias.permute(2, 0, 1)

    def embed(self, x: Tensor) -> Tensor:
        """Tokens ``(B, N, D)`` plus the conv position embedding (and the first layer norm
        of post-LN models)."""
        conv = self.pos_conv(x.transpose(1, 2))  # (B, D, N + 1 for an even kernel)
        if self.conv_pos % 2 == 0:
            conv = conv[:, :, :-1]
        x = x + F.gelu(conv).transpose(1, 2)
        return x if self.layer_norm_first else self.layer_norm(x)


@BACKBONES.register("beats")
class BEATsEncoder(TokenEncoder):
    """BEATs encoder (see the module docstring; implements
    :class:`~domainfm.core.backbone.Backbone`).

    Every architecture argument is required and named as in a BEATs checkpoint's ``cfg``
    (:data:`BEATS_ITER3_ARCH` holds the iter3 values): a model is never built from defaults.

    Args: the fields of :class:`BEATsArch`, under the same names.
    """

    def __init__(
        self,
        *,
        input_patch_size: int,
        embed_dim: int,
        conv_bias: bool,
        encoder_layers: int,
        encoder_embed_dim: int,
        encoder_ffn_embed_dim: int,
        encoder_attention_heads: int,
        activation_fn: str,
        layer_norm_first: bool,
        deep_norm: bool,
        conv_pos: int,
        conv_pos_groups: int,
        relative_position_embedding: bool,
        num_buckets: int,
        max_distance: int,
        gru_rel_pos: bool,
    ) -> None:
        super().__init__()
        arch = BEATsArch.from_arguments(locals())
        self.patch_size = (input_patch_size, input_patch_size)
        self.embed_dim = encoder_embed_dim
        self.num_prefix_tokens = 0
        self.axes = ("f", "t")
        self.patch_embedding = nn.Conv2d(
            1, embed_dim, input_patch_size, stride=input_patch_size, bias=conv_bias
        )
        self.layer_norm = nn.LayerNorm(embed_dim)
        self.post_extract_proj = (
            nn.Linear(embed_dim, encoder_embed_dim) if embed_dim != encoder_embed_dim else None
        )
        self.encoder = BEATsTransformer(arch)

    def token_grid(self, input_shape: Sequence[int]) -> TokenGrid:
        """``(F // p, T // p)`` tokens, axes ``("f", "t")``; trailing frames or bins that do
        not fill a patch are dropped, as BEATs' strided patch convolution does.

        Raises:
            ValueError: for another number of dims or an input smaller than one patch.
        """
        shape = tuple(int(s) for s in input_shape)
        if len(shape) != 2:
            raise ValueError(f"BEATsEncoder takes (B, 1, F, T) input, got spatial shape {shape}")
        grid = tuple(s // p for s, p in zip(shape, self.patch_size, strict=True))
        if min(grid) < 1:
            raise ValueError(f"input {shape} is smaller than one {self.patch_size} patch")
        return TokenGrid(shape=grid, patch_size=self.patch_size, axes=self.axes)

    def _layers_out(self, x: Tensor, last: int) -> tuple[list[Tensor], TokenGrid]:
        """Outputs of layers ``0..last`` (time-major tokens) and the grid."""
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"x must be (B, 1, F, T), got shape {tuple(x.shape)}")
        grid = self.token_grid(x.shape[2:])
        tokens = self.patch_embedding(x.transpose(2, 3))  # (B, C, T', F') as BEATs lays it out
        tokens = self.layer_norm(tokens.flatten(2).transpose(1, 2))  # (B, T'F', C)
        if self.post_extract_proj is not None:
            tokens = self.post_extract_proj(tokens)
        tokens = self.encoder.embed(tokens)
        bias = self.encoder.position_bias(tokens.shape[1], tokens.device)
        outs = []
        for layer in self.encoder.layers[: last + 1]:
            tokens = layer(tokens, bias)
            outs.append(tokens)
        return outs, grid

    def _final_norm(self, tokens: Tensor) -> Tensor:
        if self.encoder.layer_norm_first:
            normed: Tensor = self.encoder.layer_norm(tokens)
            return normed
        return tokens

    @staticmethod
    def _grid_order(tokens: Tensor, grid: TokenGrid) -> Tensor:
        """Time-major ``(B, T'F', D)`` → grid (f-major) order ``(B, F'T', D)``."""
        f, t = grid.shape
        b, _, d = tokens.shape
        return tokens.view(b, t, f, d).transpose(1, 2).reshape(b, f * t, d)

    def forward_tokens(self, x: Tensor, keep_idx: Tensor | None = None) -> tuple[Tensor, TokenGrid]:
        """Encode ``x`` ``(B, 1, F, T)`` → tokens ``(B, N, D)`` in grid order and the grid.

        The relative position bias spans the whole sequence, so every token is encoded;
        ``keep_idx`` ``(B, K)`` gathers the kept ones afterwards.
        """
        outs, grid = self._layers_out(x, len(self.encoder.layers) - 1)
        tokens = self._grid_order(self._final_norm(outs[-1]), grid)
        if keep_idx is not None:
            tokens = gather_kept(tokens, keep_idx)
        return tokens, grid

    def forward_intermediates(
        self, x: Tensor, indices: int | Sequence[int] = 1, norm: bool = False
    ) -> list[Tensor]:
        """Feature maps ``(B, D, F', T')`` after the selected layers (last ``n`` if int);
        ``norm`` applies the closing layer norm of pre-LN models (post-LN layers end normed)."""
        wanted = select_blocks(indices, len(self.encoder.layers))
        outs, grid = self._layers_out(x, wanted[-1])
        maps = []
        for i in wanted:
            tokens = self._final_norm(outs[i]) if norm else outs[i]
            tokens = self._grid_order(tokens, grid)
            maps.append(tokens.transpose(1, 2).reshape(x.shape[0], self.embed_dim, *grid.shape))
        return maps
