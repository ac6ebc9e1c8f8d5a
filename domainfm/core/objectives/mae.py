"""Masked autoencoding on any token grid (He et al. 2022, arXiv:2111.06377).

The encoder (any :class:`~domainfm.core.backbone.Backbone`) sees only the visible tokens;
this module owns the light decoder: visible tokens are projected to the decoder width, put
back on the full grid with a learned mask token at the hidden places, given fixed N-D sin-cos
positions, passed through timm ``Block``s, and the masked tokens are predicted. The loss is
the mean squared error against a pluggable per-token target
(:class:`~domainfm.core.objectives.mae_targets.NormalizedPixelTarget` by default), averaged
over masked tokens only.

Shapes::

    tokens    (B, K, D)   encoder output for the visible tokens (prefix tokens removed)
    keep_idx  (B, K)      their indices in the flattened grid
    mask      (B, N)      True where hidden; N - K of them per sample
    x         (B, C, *spatial) the input, for the target
    pred      (B, N, T)   ``reconstruct``; T = target.out_dim(C, patch_size)

With ``infonce_weight > 0`` the loss adds SSAST's discriminative term (Gong et al. 2022,
"SSAST: Self-Supervised Audio Spectrogram Transformer", arXiv:2110.09784, §2.3): a second
head maps each masked token's decoder feature to ``c_i`` (the target's width), and for each
sample the masked tokens classify which masked patch is theirs among all of them,

    L_d = - (1 / M) Σ_i log( exp(c_i · t_i) / Σ_j exp(c_i · t_j) ),   i, j over masked tokens,

with ``t_j`` the targets (normalized patches); ``loss = L_mse + infonce_weight · L_d``
(SSAST weighs the generative term 10× instead: the same optimum up to scale). Both terms
are logged (``mae``, ``mae_infonce``).

Data parallelism: :attr:`ParallelMode.LOCAL` (every sample's loss is local and equal batch
sizes give the global mean).

The decoder's input width, the input channels and the patch size are the backbone's: left
out, they are read from it by :meth:`MAE.bind_backbone` (which
:class:`~domainfm.tasks.pretrain_module.PretrainModule` calls at construction), so a config
names only the decoder's own sizes.

Example::

    >>> vit = VisionTransformerND(in_chans=1, spatial_dims=3, patch_size=8, embed_dim=64,
    ...                           depth=2, num_heads=4)
    >>> mae = MAE(decoder_dim=32, decoder_depth=1, decoder_heads=4)
    >>> mae.bind_backbone(vit)  # embed_dim 64, in_chans 1, patch_size (8, 8, 8)
    >>> x = torch.randn(2, 1, 16, 16, 16)
    >>> mask = RandomMasking(ratio=0.75)(vit.token_grid(x.shape[2:]), 2)
    >>> keep = keep_indices(mask)
    >>> tokens, grid = vit.forward_tokens(x, keep)
    >>> out = mae(tokens[:, vit.num_prefix_tokens:], grid, keep, mask, x)
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from domainfm.core.grid import TokenGrid
from domainfm.core.objectives.base import ObjectiveOutput, ParallelMode, SizedFromBackbone
from domainfm.core.objectives.mae_targets import MAETarget, NormalizedPixelTarget
from domainfm.core.objectives.registry import OBJECTIVES
from domainfm.core.patching import patchify_at
from domainfm.core.pos_embed import cached_sincos_pos_embed


def _gather_tokens(tokens: Tensor, index: Tensor) -> Tensor:
    """``(B, N, D)``, ``(B, M)`` → ``(B, M, D)``."""
    return torch.gather(tokens, 1, index[..., None].expand(-1, -1, tokens.shape[-1]))


@OBJECTIVES.register("mae")
class MAE(SizedFromBackbone):
    """MAE decoder + masked reconstruction loss.

    Args:
        embed_dim: encoder token width ``D``; default: the backbone's.
        in_chans: input channels ``C``; default: the backbone's.
        patch_size: the encoder's patch size per grid axis; default: the backbone's.
        decoder_dim: decoder width.
        decoder_depth: decoder blocks.
        decoder_heads: decoder attention heads.
        mlp_ratio: decoder MLP width relative to ``decoder_dim``.
        decoder_qkv_bias: bias on the decoder blocks' qkv projections.
        target: per-token target; default normalized pixels.
        infonce_weight: weight of SSAST's discriminative InfoNCE over masked patches
            (0: plain MAE).
        decoder_prefix_tokens: encoder prefix (class) tokens passed through the decoder with
            a zero position, as He et al.'s released code does (1); the caller then passes
            ``tokens`` as ``(B, decoder_prefix_tokens + K, D)``, prefix first. 0: patch
            tokens only.
        decoder_pos_reverse_axes: the decoder's sin-cos table with the last grid axis in the
            first channels (He et al.'s released 2D table; a released decoder trained with it
            needs it); tokens stay in C order.

    The decoder is built in the constructor when ``embed_dim``, ``in_chans`` and
    ``patch_size`` are all given, otherwise by :meth:`bind_backbone`; sizes given are
    checked against the backbone there.
    """

    parallel_mode = ParallelMode.LOCAL
    backbone_sizes = ("embed_dim", "in_chans", "patch_size")

    decoder_embed: nn.Linear
    mask_token: nn.Parameter
    decoder_blocks: nn.ModuleList
    decoder_norm: nn.LayerNorm
    decoder_pred: nn.Linear
    decoder_disc: nn.Linear | None

    def __init__(
        self,
        *,
        embed_dim: int | None = None,
        in_chans: int | None = None,
        patch_size: Sequence[int] | None = None,
        decoder_dim: int = 512,
        decoder_depth: int = 8,
        decoder_heads: int = 16,
        mlp_ratio: float = 4.0,
        target: MAETarget | None = None,
        decoder_qkv_bias: bool = True,
        infonce_weight: float = 0.0,
        decoder_prefix_tokens: int = 0,
        decoder_pos_reverse_axes: bool = False,
    ) -> None:
        super().__init__()
        if decoder_dim % decoder_heads:
            raise ValueError(
                f"decoder_dim={decoder_dim} must be divisible by decoder_heads={decoder_heads}"
            )
        if infonce_weight < 0:
            raise ValueError(f"infonce_weight={infonce_weight}: must be >= 0")
        self.target = target if target is not None else NormalizedPixelTarget()
        self.embed_dim = embed_dim
        self.in_chans = in_chans
        self.patch_size: tuple[int, ...] | None = (
            tuple(patch_size) if patch_size is not None else None
        )
        self.decoder_dim = decoder_dim
        self.decoder_depth = decoder_depth
        self.decoder_heads = decoder_heads
        self.mlp_ratio = mlp_ratio
        self.decoder_qkv_bias = decoder_qkv_bias
        self.infonce_weight = float(infonce_weight)
        if decoder_prefix_tokens < 0:
            raise ValueError(f"decoder_prefix_tokens={decoder_prefix_tokens}: must be >= 0")
        self.decoder_prefix_tokens = int(decoder_prefix_tokens)
        self.decoder_pos_reverse_axes = bool(decoder_pos_reverse_axes)
        self.build_heads_if_sized()

    def build_heads(self) -> None:
        """The decoder: embedding, mask token, blocks, norm and prediction head(s)."""
        assert self.embed_dim is not None and self.in_chans is not None
        assert self.patch_size is not None
        dim = self.decoder_dim
        self.decoder_embed = nn.Linear(self.embed_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.decoder_blocks = nn.ModuleList(
            Block(
                dim=dim,
                num_heads=self.decoder_heads,
                mlp_ratio=self.mlp_ratio,
                qkv_bias=self.decoder_qkv_bias,
                # eps 1e-6 as MAE's released decoder (timm types norm_layer as a class)
                norm_layer=partial(nn.LayerNorm, eps=1e-6),  # type: ignore[arg-type]
            )
            for _ in range(self.decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(dim, eps=1e-6)
        out_dim = self.target.out_dim(self.in_chans, self.patch_size)
        self.decoder_pred = nn.Linear(dim, out_dim)
        self.decoder_disc = nn.Linear(dim, out_dim) if self.infonce_weight > 0 else None
        nn.init.normal_(self.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _decoder_pos(self, grid: TokenGrid, ref: Tensor) -> Tensor:
        table = cached_sincos_pos_embed(
            grid.shape, self.mask_token.shape[-1], self.decoder_pos_reverse_axes
        )  # (1, N, Dd)
        return table.to(device=ref.device, dtype=ref.dtype)

    def _check_grid(self, grid: TokenGrid) -> None:
        self.ensure_sized()
        if grid.patch_size != self.patch_size:
            raise ValueError(
                f"grid patch_size {grid.patch_size} differs from MAE patch_size {self.patch_size}"
            )

    def decode(self, tokens: Tensor, grid: TokenGrid, keep_idx: Tensor) -> Tensor:
        """Visible tokens ``(B, P + K, D)`` (``P = decoder_prefix_tokens``) → decoder features
        on the full grid ``(B, N, Dd)``."""
        self._check_grid(grid)
        prefix = self.decoder_prefix_tokens
        if tokens.shape[0] != keep_idx.shape[0] or tokens.shape[1] != prefix + keep_idx.shape[1]:
            expected = (
                f"pass {prefix} prefix (class) token(s), then the visible patch tokens"
                if prefix
                else "pass patch tokens without prefix (class) tokens"
            )
            raise ValueError(
                f"tokens {tuple(tokens.shape)} and keep_idx {tuple(keep_idx.shape)} disagree; "
                f"{expected}"
            )
        embedded = self.decoder_embed(tokens)  # (B, P + K, Dd)
        lead, visible = embedded[:, :prefix], embedded[:, prefix:]
        batch, _, dim = visible.shape
        full = self.mask_token.to(visible.dtype).expand(batch, grid.num_tokens, dim)
        index = keep_idx[..., None].expand(-1, -1, dim)
        full = full.scatter(1, index, visible)  # (B, N, Dd) with visible tokens in place
        full = torch.cat([lead, full + self._decoder_pos(grid, full)], dim=1)
        for block in self.decoder_blocks:
            full = block(full)
        return self.decoder_norm(full)[:, prefix:]

    def reconstruct(self, tokens: Tensor, grid: TokenGrid, keep_idx: Tensor) -> Tensor:
        """Predictions for every token, ``(B, N, T)`` (e.g. for a reconstruction preview)."""
        features = self.decode(tokens, grid, keep_idx)  # first: checks the decoder is built
        pred: Tensor = self.decoder_pred(features)
        return pred

    def forward(
        self, tokens: Tensor, grid: TokenGrid, keep_idx: Tensor, mask: Tensor, x: Tensor
    ) -> ObjectiveOutput:
        """Masked reconstruction loss (see the module docstring for shapes)."""
        self._check_grid(grid)  # first: a wrong grid also makes the mask look wrong
        if mask.shape != (x.shape[0], grid.num_tokens):
            raise ValueError(
                f"mask must be (B={x.shape[0]}, N={grid.num_tokens}), got {tuple(mask.shape)}"
            )
        features = self.decode(tokens, grid, keep_idx)  # (B, N, Dd)
        masked_idx = mask.nonzero()[:, 1].view(mask.shape[0], -1)  # (B, M)
        masked = _gather_tokens(features, masked_idx)  # (B, M, Dd)
        pred = self.decoder_pred(masked)  # (B, M, T)
        with torch.no_grad():
            target = self._masked_target(x, grid, masked_idx)  # (B, M, T)
        loss = F.mse_loss(pred.float(), target.float())
        terms = {"mae": loss.detach()}
        if self.decoder_disc is not None:
            codes = self.decoder_disc(masked).float()  # (B, M, T)
            logits = codes @ target.float().transpose(1, 2)  # (B, M, M): c_i · t_j
            labels = torch.arange(logits.shape[1], device=logits.device).expand(logits.shape[0], -1)
            infonce = F.cross_entropy(logits.flatten(0, 1), labels.flatten())
            terms["mae_infonce"] = infonce.detach()
            loss = loss + self.infonce_weight * infonce
        return ObjectiveOutput(loss=loss, terms=terms)

    def _masked_target(self, x: Tensor, grid: TokenGrid, masked_idx: Tensor) -> Tensor:
        """The target at the masked tokens, ``(B, M, T)``.

        The default normalized-pixel target is computed for the masked patches only (it is
        per token, so this equals computing it everywhere and gathering); other targets are
        computed on the full grid and gathered.
        """
        target = self.target
        if type(target) is not NormalizedPixelTarget:
            return _gather_tokens(target(x, grid), masked_idx)
        pixels = patchify_at(x, grid, masked_idx)  # (B, M, T), a fresh tensor
        if not target.normalize:
            return pixels
        # (t - mean) / sqrt(unbiased var + eps) as NormalizedPixelTarget, in place; the two-pass
        # sum of squares is several times faster on CPU than torch.var's reduction
        pixels.sub_(pixels.mean(dim=-1, keepdim=True))
        sq_norm = torch.linalg.vector_norm(pixels, dim=-1, keepdim=True).square_()
        var = sq_norm.div_(pixels.shape[-1] - 1)
        return pixels.div_(var.add_(target.eps).sqrt_())
