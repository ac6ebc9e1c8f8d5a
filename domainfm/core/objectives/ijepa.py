"""I-JEPA: predict the target encoder's features of target blocks from a context block.

Assran et al. 2023, "Self-Supervised Learning from Images with a Joint-Embedding Predictive
Architecture", CVPR 2023, arXiv:2301.08243, on any token grid (images, CT volumes, band x
time cubes, F x T spectrograms). Per sample, with the context block ``x`` (indices ``C``)
and ``M`` (``T`` below) target blocks ``B_i``
(:class:`~domainfm.core.jepa_masking.MultiBlockMasking`):

* the *context encoder* ``f_θ`` is the backbone on the context tokens only
  (``forward_tokens(x, keep_idx=C)``): ``s_x = {s_xj}_{j ∈ C}``;
* the *target encoder* ``f_θ̄`` is an EMA copy of the backbone on the *full* input; its
  output, layer-normalized over the channels (``F.layer_norm`` without affine, as the
  official code), gives the targets ``s_y(i) = {s_yj}_{j ∈ B_i}``, under a stop-gradient;
* the *predictor* ``g_φ`` (:class:`JEPAPredictor`, a narrow ViT) takes ``s_x`` and, for
  each block, a learned mask token plus the fixed sin-cos position of every target token,
  and predicts ``ŝ_y(i) = g_φ(s_x, {m_j}_{j ∈ B_i})``, one block per sequence;
* the loss (paper, Sec. 3) is the average distance between predictions and targets,

      L = (1 / M) Σ_i Σ_{j ∈ B_i} D(ŝ_yj, s_yj),

  with ``D`` the official code's ``F.smooth_l1_loss`` (Huber with ``β = 1``), not the
  paper's squared L2: the mean over samples, blocks, target tokens and channels. The target
  encoder follows the context encoder as ``θ̄ ← m θ̄ + (1 - m) θ`` after each step. (The
  paper evaluates the target encoder; ``domainfm export`` exports the backbone, the context
  encoder.)

**EMA.** The target encoder (an :class:`~domainfm.core.ema.EMATeacher` of the backbone,
made by :meth:`IJEPA.bind_backbone`) is a submodule of this objective, so it is saved in
checkpoints (``objectives.<name>.target_encoder.teacher.*``) and restored on resume;
:class:`~domainfm.tasks.pretrain_module.PretrainModule` updates it after each batch with its
other teachers (:meth:`IJEPA.update_target`, cosine momentum from ``ema_momentum``; the
official schedule is linear from 0.996 to 1). It runs in the module's train/eval mode, as the
official one, so a backbone with stochastic depth has it in the target encoder too (I-JEPA's
ViTs have none).

**Masks** are drawn in the training step on the backbone's token grid of the batch, from
the global torch RNG (restored on resume, seeded by ``seed_everything``): the pretraining
data modules' collates draw MAE masks (left unused here). The context encoder needs a
backbone whose ``forward_tokens`` takes ``keep_idx`` (a ViT); prefix (class) tokens are
dropped from both encoders' outputs (the official ViTs have none).

Data parallelism (:attr:`parallel_mode` ``LOCAL``): every term is one sample's and nothing
crosses ranks. With the same seed on every rank (``seed_everything``) the ranks draw the same
blocks, so the mean of the rank losses is the loss of the concatenated batch with those
blocks and DDP's averaging gives its gradient. Nothing is gathered, so no multi-process test.

Shapes::

    batch[key] = x           (B, C, *spatial)
    masks.context            (B, Kc)      masks.targets  (B, T, Kt)
    context tokens s_x       (B, Kc, D)   targets s_y    (B, T, Kt, D)
    predictor sequences      (B * T, Kc + Kt, Dp), Dp = predictor_dim
    predictions ŝ_y          (B, T, Kt, D)

Example::

    >>> vit = VisionTransformerND(in_chans=1, spatial_dims=3, patch_size=8, embed_dim=64,
    ...                           depth=2, num_heads=4, class_token=False, global_pool="avg")
    >>> ijepa = IJEPA(predictor_dim=32, predictor_depth=2, predictor_heads=4)
    >>> ijepa.bind_backbone(vit)          # predictor sized from it, EMA target copied
    >>> x = torch.randn(2, 1, 48, 48, 48)                      # a 6 x 6 x 6 grid
    >>> out = ijepa(vit, x, ijepa.masking(vit.token_grid(x.shape[2:]), 2))
    >>> out.loss.backward()                                    # no gradient reaches the target
    >>> ijepa.update_target(vit, momentum=0.996)
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from domainfm.core.batch_features import BatchFeatures
from domainfm.core.ema import EMATeacher
from domainfm.core.grid import TokenGrid
from domainfm.core.jepa_masking import JEPAMasks, MultiBlockMasking
from domainfm.core.kept_tokens import gather_kept
from domainfm.core.objectives.base import ObjectiveOutput, ParallelMode, SizedFromBackbone
from domainfm.core.objectives.registry import OBJECTIVES
from domainfm.core.pos_embed import cached_sincos_pos_embed
from domainfm.core.vit import vit_blocks
from domainfm.core.vit_size import ViTSize

INIT_STD = 0.02
"""Standard deviation of the predictor's truncated-normal initialization (official)."""
RESCALED = ("attn.proj.weight", "mlp.fc2.weight")
"""The output projections of a block, scaled down with its depth at initialization."""


class JEPAPredictor(nn.Module):
    """I-JEPA's predictor: a narrow ViT from context tokens to the targets' features.

    The context tokens are mapped to the predictor width and given the fixed N-D sin-cos
    position of their grid token; each target block gets ``Kt`` copies of a learned mask
    token plus its tokens' positions; context and queries of one block form one sequence
    ``(Kc + Kt, Dp)`` through the blocks; the queries' outputs, normed and mapped back to the
    encoder width, are the predictions. Initialization as the official predictor: truncated
    normal (std 0.02) linears and mask token, zero biases, and the output projections of
    block ``l`` (1-based) divided by ``sqrt(2 l)``.

    Args:
        embed_dim: the encoder width ``D``.
        size: the predictor's transformer (``size.embed_dim`` is its width ``Dp``).
    """

    def __init__(self, *, embed_dim: int, size: ViTSize) -> None:
        super().__init__()
        dim = size.embed_dim
        self.embed = nn.Linear(embed_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = vit_blocks(size)
        self.norm = nn.LayerNorm(dim, eps=size.norm_eps)
        self.proj = nn.Linear(dim, embed_dim)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=INIT_STD)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.mask_token, std=INIT_STD)
        with torch.no_grad():
            for layer, block in enumerate(self.blocks, start=1):
                for name, weight in block.named_parameters():
                    if name in RESCALED:
                        weight.div_(math.sqrt(2.0 * layer))

    def forward(
        self, context: Tensor, grid: TokenGrid, context_idx: Tensor, target_idx: Tensor
    ) -> Tensor:
        """Predictions ``(B, T, Kt, D)`` from context tokens ``(B, Kc, D)`` at
        ``context_idx`` ``(B, Kc)`` for the target blocks ``target_idx`` ``(B, T, Kt)``."""
        dim = self.mask_token.shape[-1]
        table = cached_sincos_pos_embed(grid.shape, dim)[0].to(context.device)  # (N, Dp)
        ctx = self.embed(context)
        ctx = ctx + F.embedding(context_idx, table).to(ctx.dtype)  # (B, Kc, Dp)
        batch, blocks, kt = target_idx.shape
        kc = ctx.shape[1]
        queries = self.mask_token + F.embedding(target_idx, table).to(ctx.dtype)  # (B, T, Kt, Dp)
        seq = torch.cat([ctx[:, None].expand(-1, blocks, -1, -1), queries], dim=2)
        seq = seq.flatten(0, 1)  # (B * T, Kc + Kt, Dp)
        for block in self.blocks:
            seq = block(seq)
        out: Tensor = self.proj(self.norm(seq[:, kc:]))  # (B * T, Kt, D)
        return out.view(batch, blocks, kt, -1)


@OBJECTIVES.register("ijepa")
class IJEPA(SizedFromBackbone):
    """I-JEPA latent prediction (see the module docstring): predictor + EMA target encoder.

    Args:
        embed_dim: the backbone's token width ``D``; default: the backbone's.
        target_scale: target block volume range, as a fraction of the grid.
        target_aspect: target block side-ratio range.
        num_targets: target blocks per sample (paper: 4).
        context_scale: context block volume range before the targets are removed.
        min_context: a context keeps more than this many tokens (official: 10).
        predictor_dim: predictor width ``Dp`` (official: 384).
        predictor_depth: predictor blocks (official: 12).
        predictor_heads: predictor attention heads (official: the encoder's).
        mlp_ratio: predictor MLP width relative to ``Dp``.
        key: the batch key of the input ``(B, C, *spatial)``.

    The masking arguments are those of
    :class:`~domainfm.core.jepa_masking.MultiBlockMasking` (defaults: the paper's).
    """

    parallel_mode: ClassVar[ParallelMode] = ParallelMode.LOCAL

    predictor: JEPAPredictor
    target_encoder: EMATeacher | None

    def __init__(
        self,
        *,
        embed_dim: int | None = None,
        target_scale: tuple[float, float] = (0.15, 0.2),
        target_aspect: tuple[float, float] = (0.75, 1.5),
        num_targets: int = 4,
        context_scale: tuple[float, float] = (0.85, 1.0),
        min_context: int = 10,
        predictor_dim: int = 384,
        predictor_depth: int = 12,
        predictor_heads: int = 12,
        mlp_ratio: float = 4.0,
        key: str = "input",
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.key = key
        self.target_encoder = None
        self.masking = MultiBlockMasking.from_arguments(locals())
        self.predictor_size = ViTSize(
            embed_dim=predictor_dim,
            depth=predictor_depth,
            num_heads=predictor_heads,
            mlp_ratio=mlp_ratio,
        )
        self.build_heads_if_sized()

    def build_heads(self) -> None:
        """The predictor, from the encoder width to the predictor's and back."""
        assert self.embed_dim is not None
        self.predictor = JEPAPredictor(embed_dim=self.embed_dim, size=self.predictor_size)

    def bind_backbone(self, backbone: nn.Module) -> None:
        """Size the predictor from ``backbone`` (see
        :meth:`~domainfm.core.objectives.base.SizedFromBackbone.bind_backbone`) and make the
        target encoder, an EMA copy of it, once."""
        super().bind_backbone(backbone)
        if self.target_encoder is None:
            self.target_encoder = EMATeacher(backbone)

    def _teacher(self) -> EMATeacher:
        self.ensure_sized()
        if self.target_encoder is None:
            raise RuntimeError(
                "IJEPA has no target encoder yet: bind it to the backbone first "
                "(bind_backbone, as PretrainModule does)"
            )
        return self.target_encoder

    @torch.no_grad()
    def update_target(self, backbone: nn.Module, momentum: float) -> None:
        """One EMA step of the target encoder towards ``backbone``:
        ``θ̄ ← momentum · θ̄ + (1 - momentum) · θ``."""
        self._teacher().update(backbone, momentum)

    def targets(self, x: Tensor, target_idx: Tensor) -> Tensor:
        """The targets ``(B, T, Kt, D)``: the target encoder's patch tokens of the full input,
        layer-normalized over ``D`` and gathered at ``target_idx`` ``(B, T, Kt)``; no
        gradient flows into them."""
        encoder = self._teacher().teacher
        with torch.no_grad():
            tokens, _ = encoder.forward_tokens(x)  # type: ignore[operator]
            tokens = tokens[:, int(getattr(encoder, "num_prefix_tokens", 0)) :]
            tokens = F.layer_norm(tokens, (tokens.shape[-1],))  # (B, N, D)
            batch, blocks, kt = target_idx.shape
            picked = gather_kept(tokens, target_idx.flatten(1))  # (B, T * Kt, D)
        return picked.view(batch, blocks, kt, -1)

    def forward_batch(self, features: BatchFeatures) -> ObjectiveOutput:
        """The loss of ``batch[key]`` with context and target blocks drawn on the backbone's
        token grid."""
        x: Tensor = features.batch[self.key]
        backbone = features.backbone
        grid = backbone.token_grid(x.shape[2:])  # type: ignore[operator]
        return self(backbone, x, self.masking(grid, x.shape[0]))

    def forward(self, backbone: nn.Module, x: Tensor, masks: JEPAMasks) -> ObjectiveOutput:
        """The loss of input ``x`` ``(B, C, *spatial)`` with the context encoder
        ``backbone`` and the blocks ``masks`` (see the module docstring)."""
        context_idx, target_idx = masks.context, masks.targets
        batch = x.shape[0]
        dims = (context_idx.ndim, target_idx.ndim)
        if dims != (2, 3) or {context_idx.shape[0], target_idx.shape[0]} != {batch}:
            raise ValueError(
                f"masks must be context (B, Kc) and targets (B, T, Kt) for B={batch}, got "
                f"{tuple(context_idx.shape)} and {tuple(target_idx.shape)}"
            )
        context_idx, target_idx = context_idx.to(x.device), target_idx.to(x.device)
        targets = self.targets(x, target_idx)  # (B, T, Kt, D)
        tokens, grid = backbone.forward_tokens(x, context_idx)  # type: ignore[operator]
        context = tokens[:, int(getattr(backbone, "num_prefix_tokens", 0)) :]  # (B, Kc, D)
        pred = self.predictor(context, grid, context_idx, target_idx)  # (B, T, Kt, D)
        with torch.autocast(device_type=x.device.type, enabled=False):
            dtype = torch.promote_types(pred.dtype, torch.float32)
            loss = F.smooth_l1_loss(pred.to(dtype), targets.to(dtype))
        return ObjectiveOutput(loss=loss)
