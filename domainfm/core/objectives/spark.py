"""SparK: masked image modeling for convolutional encoders, in 2D and 3D.

Tian, Jiang, Diao, Lin, Liu & Yuan 2023, "Designing BERT for Convolutional Networks: Sparse
and Hierarchical Masked Modeling", ICLR 2023, arXiv:2301.03580; the released code is
github.com/keyu-tian/SparK (``pretrain/spark.py``). It is nnssl's default 3D pretraining, and
it pretrains what MAE cannot: a CNN (a :class:`~domainfm.domains.geospatial.timm_cnn.TimmCNN`
or the SegResNet encoder), which has no tokens to drop.

**Method**, for an encoder with maps ``f_i`` of stride ``s_i`` and coarsest stride ``P``
(``patch_size``), an input ``x`` ``(B, C, *S)`` and its patch grid ``g = S / P`` (``N`` cells):

1. *Mask*: a random ``round(ratio · N)`` of the cells of each sample are hidden
   (``mask`` ``(B, N)``, True = hidden; ``a = ¬mask``, ratio 0.6 by default).
2. *Sparse encoding* (masked convolution emulated on dense tensors,
   :mod:`~domainfm.core.sparse_masking`): ``x_0 = x ⊙ a↑P`` and each stage's output is
   multiplied by ``a`` upsampled to it, ``f_i = stage_i(f_{i-1}) ⊙ a↑(P/s_i)``, so masked
   positions stay empty and no stage reads values spread into them.
3. *Densify and decode* (:mod:`~domainfm.core.objectives.spark_decoder`): masked positions of
   every ``f_i`` get a learned mask token, and a light UNet-like decoder goes from stride
   ``P`` to the input resolution, adding each densified map at its stride; a 1-wide
   convolution predicts ``x̂`` ``(B, C, *S)``.
4. *Loss*: per-patch normalized pixels (``norm_pix_loss``) on the masked patches only. With
   ``t_n`` the ``T = C · prod(P)`` values of patch ``n`` of ``x`` and ``p_n`` those of
   ``x̂``::

       t̃_n = (t_n - mean(t_n)) / sqrt(var(t_n) + eps)          var unbiased, eps 1e-6
       L   = Σ_{b,n} mask_bn · ‖p_bn - t̃_bn‖² / T  /  Σ_{b,n} mask_bn

Shapes::

    x                                  (B, C, *S), every side divisible by P
    mask                               (B, N) bool, N = prod(S / P), True = hidden
    encode(backbone, x, mask)          [f_i (B, C_i, *S / s_i)], shallow→deep, zero where hidden
    reconstruct(backbone, x, mask)     x̂ (B, C, *S)
    masked_loss(x̂, x, mask)            scalar

Deviations from the released code (2D ResNet/ConvNeXt only): the encoder is re-masked after
each *stage* (the modules a backbone names in ``stage_modules()``) rather than after every
convolution, so inside a stage masked positions may fill with values spread from visible
neighbours before the stage's output is emptied again, and the backbone's own normalization
layers compute their statistics over all positions (masked zeros included) instead of the
visible ones; the normalization choices of the densify layers and the decoder are in
:mod:`~domainfm.core.objectives.spark_decoder`.

Data parallelism: :attr:`ParallelMode.LOCAL`. The loss is a mean over masked patches and
every sample has the same number of them, so it is the mean of per-sample terms; nothing
crosses ranks (there is no 2-process test for that reason). The mask is drawn from the global
torch RNG (seeded by ``seed_everything``, restored on resume), as the released code does.

The input channels, ``patch_size`` and the stage pyramid (``feature_channels``,
``feature_strides``) are the backbone's: left out, :meth:`SparK.bind_backbone` reads them
(:class:`~domainfm.tasks.pretrain_module.PretrainModule` calls it at construction).

Example::

    >>> cnn = SegResNetEncoder3D(in_chans=1, init_filters=8)         # strides 1, 2, 4, 8
    >>> spark = SparK(decoder_width=64)
    >>> module = PretrainModule(backbone=cnn, objectives={"spark": spark})
    >>> out = spark.forward_batch(BatchFeatures(cnn, {"input": torch.randn(2, 1, 32, 32, 32)}))
    >>> out.loss.shape, sorted(out.terms)
    (torch.Size([]), ['spark'])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from domainfm.core.batch_features import BatchFeatures
from domainfm.core.grid import TokenGrid
from domainfm.core.masking import RandomMasking
from domainfm.core.objectives.base import (
    ObjectiveOutput,
    ParallelMode,
    SizedFromBackbone,
    sizes_from_backbone,
)
from domainfm.core.objectives.mae_targets import NormalizedPixelTarget
from domainfm.core.objectives.registry import OBJECTIVES
from domainfm.core.objectives.spark_decoder import (
    DecoderNorm,
    Densify,
    DensifyNorm,
    LightDecoder,
    stage_level,
)
from domainfm.core.patching import patchify, unpatchify
from domainfm.core.registry import INIT_KWARGS_ATTR
from domainfm.core.sparse_masking import expand_mask, remasked


def _pyramid(objective: SparK, backbone: nn.Module) -> dict[str, tuple[int, ...]]:
    """The backbone's ``feature_channels`` / ``feature_strides``, checked against those the
    objective was given (``ValueError`` when absent, different, or without stage modules)."""
    stage_modules = getattr(backbone, "stage_modules", None)
    try:
        count = len(stage_modules()) if callable(stage_modules) else None
    except NotImplementedError:
        count = None
    if count is None:
        raise ValueError(
            f"SparK needs a multi-scale CNN backbone naming its stage modules (stage_modules()), "
            f"e.g. TimmCNN or SegResNetEncoder3D; {type(backbone).__name__} names none"
        )
    found: dict[str, tuple[int, ...]] = {}
    for name in ("feature_channels", "feature_strides"):
        value = tuple(int(v) for v in getattr(backbone, name, ()))
        given = getattr(objective, name)
        if given is not None and given != value:
            raise ValueError(f"SparK {name} {given} differs from the backbone's {value}")
        found[name] = value
    if count != len(found["feature_channels"]):
        raise ValueError(
            f"{type(backbone).__name__} names {count} stage modules for "
            f"{len(found['feature_channels'])} maps"
        )
    return found


@OBJECTIVES.register("spark")
class SparK(SizedFromBackbone):
    """Sparse masked encoding of a CNN + hierarchical decoder + masked normalized-pixel MSE.

    Args:
        view: the batch key of the input ``(B, C, *S)``.
        mask_ratio: fraction of the patch-grid cells hidden, in (0, 1) (paper: 0.6).
        decoder_width: the decoder's width at the coarsest level, halved at every ×2 step
            (the released ResNet-50 setting: 768).
        densify_norm: ``"ln"`` or ``"none"`` (see :mod:`~domainfm.core.objectives.
            spark_decoder`).
        decoder_norm: ``"group"`` (per sample) or ``"batch"`` (the released code's).
        normalize_target: per-patch normalized pixels (``True``, the paper's) or raw pixels.
        in_chans: input channels; default: the backbone's.
        patch_size: the coarsest stride per axis; default: the backbone's.
        feature_channels: channels of each encoder map; default: the backbone's.
        feature_strides: total stride of each encoder map; default: the backbone's.

    The densify layers and the decoder are built in the constructor when every size is
    given, otherwise by :meth:`bind_backbone`.
    """

    parallel_mode: ClassVar[ParallelMode] = ParallelMode.LOCAL
    backbone_sizes = ("in_chans", "patch_size", "feature_channels", "feature_strides")

    densify: nn.ModuleList
    decoder: LightDecoder

    def __init__(
        self,
        *,
        view: str = "input",
        mask_ratio: float = 0.6,
        decoder_width: int = 768,
        densify_norm: DensifyNorm = "ln",
        decoder_norm: DecoderNorm = "group",
        normalize_target: bool = True,
        in_chans: int | None = None,
        patch_size: Sequence[int] | None = None,
        feature_channels: Sequence[int] | None = None,
        feature_strides: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.view = view
        self.masking = RandomMasking(ratio=mask_ratio)
        self.mask_ratio = float(mask_ratio)
        self.decoder_width = int(decoder_width)
        self.densify_norm: DensifyNorm = densify_norm
        self.decoder_norm: DecoderNorm = decoder_norm
        self.target = NormalizedPixelTarget(normalize=normalize_target)
        self.in_chans = in_chans
        self.patch_size = tuple(int(p) for p in patch_size) if patch_size is not None else None
        self.feature_channels = _ints(feature_channels)
        self.feature_strides = _ints(feature_strides)
        self.build_heads_if_sized()

    # -- sizes and heads ---------------------------------------------------------------
    def bind_backbone(self, backbone: nn.Module) -> None:
        """Take ``in_chans``, ``patch_size`` and the stage pyramid from ``backbone`` (checking
        those given) and build the densify layers and the decoder.

        Raises:
            ValueError: a given size differs from the backbone's, or the backbone is not a
                multi-scale CNN naming its stage modules.
        """
        sizes: dict[str, Any] = dict(_pyramid(self, backbone))
        sizes.update(
            sizes_from_backbone(self, backbone, in_chans=self.in_chans, patch_size=self.patch_size)
        )
        recorded = getattr(self, INIT_KWARGS_ATTR, None)
        if isinstance(recorded, dict):
            recorded.update(sizes)
        for name, value in sizes.items():
            setattr(self, name, value)
        self.build_heads_if_sized()

    def build_heads(self) -> None:
        """One :class:`Densify` per encoder map and the :class:`LightDecoder`."""
        assert self.in_chans is not None and self.patch_size is not None
        assert self.feature_channels is not None and self.feature_strides is not None
        stride = self.patch_size[0]
        if any(p != stride for p in self.patch_size):
            raise ValueError(f"SparK needs the same stride on every axis, got {self.patch_size}")
        if (
            len(self.feature_channels) != len(self.feature_strides)
            or max(self.feature_strides) != stride
        ):
            raise ValueError(
                f"feature_channels {self.feature_channels} and feature_strides "
                f"{self.feature_strides} must pair up, the largest stride being {stride}"
            )
        dims = len(self.patch_size)
        self.decoder = LightDecoder(
            spatial_dims=dims,
            width=self.decoder_width,
            patch_stride=stride,
            out_chans=self.in_chans,
            norm=self.decoder_norm,
        )
        self.levels = tuple(stage_level(s, stride) for s in self.feature_strides)
        self.densify = nn.ModuleList(
            Densify(
                spatial_dims=dims,
                in_channels=c,
                out_channels=self.decoder.widths[j],
                kernel_size=1 if j == 0 else 3,
                norm=self.densify_norm,
            )
            for c, j in zip(self.feature_channels, self.levels, strict=True)
        )

    # -- the method ----------------------------------------------------------------------
    def grid(self, x: Tensor) -> TokenGrid:
        """The patch grid of ``x`` ``(B, C, *S)`` at the coarsest stride."""
        self.ensure_sized()
        assert self.patch_size is not None
        if x.ndim != len(self.patch_size) + 2 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"SparK expects (B, {self.in_chans}, {len(self.patch_size)} spatial axes), "
                f"got {tuple(x.shape)}"
            )
        return TokenGrid.from_input(x.shape[2:], self.patch_size)

    def draw_mask(self, x: Tensor) -> Tensor:
        """A random mask ``(B, N)`` (True = hidden) of ``mask_ratio`` of the cells of ``x``."""
        return self.masking(self.grid(x), x.shape[0]).to(x.device)

    def _active(self, x: Tensor, mask: Tensor) -> Tensor:
        """``(B, N)`` hidden mask → ``(B, *g)`` visible mask on the grid of ``x``."""
        grid = self.grid(x)
        if mask.shape != (x.shape[0], grid.num_tokens):
            raise ValueError(
                f"mask must be (B={x.shape[0]}, N={grid.num_tokens}), got {tuple(mask.shape)}"
            )
        return (~mask.bool()).view(x.shape[0], *grid.shape)

    def encode(self, backbone: nn.Module, x: Tensor, mask: Tensor) -> list[Tensor]:
        """The sparse maps ``f_i``, shallow→deep: ``x`` masked, every stage re-masked."""
        active = self._active(x, mask)
        modules = backbone.stage_modules()  # type: ignore[operator]
        with remasked(modules, active):
            maps: list[Tensor] = backbone.forward_intermediates(  # type: ignore[operator]
                x * expand_mask(active, x.shape[2:]).to(x.dtype)
            )
        return maps

    def reconstruct(self, backbone: nn.Module, x: Tensor, mask: Tensor) -> Tensor:
        """The prediction ``x̂`` ``(B, C, *S)`` (normalized per patch when the target is)."""
        active = self._active(x, mask)
        maps = self.encode(backbone, x, mask)
        if len(maps) != len(self.densify):
            raise ValueError(
                f"the backbone returned {len(maps)} maps, SparK has {len(self.densify)}"
            )
        levels: list[Tensor | None] = [None] * len(self.decoder.widths)
        for f, densify, j in zip(maps, self.densify, self.levels, strict=True):
            d = densify(f, active)
            skip = levels[j]
            levels[j] = d if skip is None else skip + d
        return self.decoder(levels)

    def masked_loss(self, pred: Tensor, x: Tensor, mask: Tensor) -> Tensor:
        """Mean over hidden patches of the per-patch MSE to the (normalized) target."""
        grid = self.grid(x)
        dtype = torch.promote_types(pred.dtype, torch.float32)  # the loss in at least float32
        with torch.no_grad():
            target = self.target(x.to(dtype), grid)  # (B, N, T)
        per_patch = (patchify(pred.to(dtype), grid) - target).square().mean(dim=-1)  # (B, N)
        hidden = mask.to(per_patch.dtype)
        return (per_patch * hidden).sum() / hidden.sum()

    def forward(
        self, backbone: nn.Module, x: Tensor, mask: Tensor | None = None
    ) -> ObjectiveOutput:
        """The loss of ``x`` under ``mask`` (drawn when ``None``)."""
        mask = self.draw_mask(x) if mask is None else mask
        loss = self.masked_loss(self.reconstruct(backbone, x, mask), x, mask)
        return ObjectiveOutput(loss=loss, terms={"spark": loss.detach()})

    def forward_batch(self, features: BatchFeatures) -> ObjectiveOutput:
        """The loss of ``batch[view]`` under a freshly drawn mask."""
        return self(features.backbone, features.batch[self.view])

    @torch.no_grad()
    def preview(self, features: BatchFeatures) -> dict[str, Tensor]:
        """``{"input", "masked", "reconstruction"}`` ``(B, C, *S)``: the input, the masked
        input and the prediction mapped back to each patch's mean/std at the hidden patches
        (the input at the visible ones), for
        :class:`~domainfm.tasks.monitors.preview.ReconstructionPreview`."""
        x = features.batch[self.view].float()
        mask = self.draw_mask(x)
        grid = self.grid(x)
        pred = patchify(self.reconstruct(features.backbone, x, mask).float(), grid)
        pixels = patchify(x, grid)
        if self.target.normalize:
            std = (pixels.var(dim=-1, keepdim=True) + self.target.eps).sqrt()
            pred = pred * std + pixels.mean(dim=-1, keepdim=True)
        hidden = mask[..., None]
        channels = x.shape[1]
        return {
            "input": x,
            "masked": unpatchify(pixels.masked_fill(hidden, 0.0), grid, channels),
            "reconstruction": unpatchify(torch.where(hidden, pred, pixels), grid, channels),
        }


def _ints(values: Sequence[int] | None) -> tuple[int, ...] | None:
    return tuple(int(v) for v in values) if values is not None else None
