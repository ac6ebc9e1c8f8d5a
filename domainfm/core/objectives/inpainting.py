"""Inpainting: reconstruct the clean input from a corrupted view over the full token grid.

Swin UNETR's masked-volume inpainting task (Tang et al. 2022, "Self-Supervised Pre-Training
of Swin Transformers for 3D Medical Image Analysis", arXiv:2111.14791, term ``L_inpaint``):
the encoder sees a view with random boxes cut out (noise-filled, see
:class:`~domainfm.domains.medical3d.swin_ssl_views.SwinSSLViews`) and the volume is
reconstructed; the loss is the L1 distance to the clean view over the *whole* volume, as
the official ``Loss`` does (``L1Loss`` between reconstruction and rotated clean crop).

The head is a per-token **linear pixel head** as in SimMIM (Xie et al. 2022, "SimMIM: a
Simple Framework for Masked Image Modeling", arXiv:2111.09886): every token of the last grid
predicts the ``prod(patch_size) * C`` voxels of its patch, and
:func:`~domainfm.core.patching.unpatchify` puts the patches back in place. Swin UNETR
itself decodes the bottleneck with a transposed-convolution / upsampling decoder
(``SSLHead.conv``); a linear pixel head is used here instead because it works unchanged on
any backbone's token grid — the ViT's 16³ patches and :class:`SwinViT3D`'s /32 last stage
alike, in 1 to 3 spatial dims — and SimMIM shows it is enough for pretraining. Unlike MAE the
encoder sees the full (corrupted) grid, so windowed-attention encoders work.

Shapes::

    features.tokens(view)    (B, N, D) patch tokens and their TokenGrid
    head(tokens)             (B, N, prod(patch_size) * C)
    reconstruction           (B, C, *spatial)  (unpatchify)
    features.batch[target]   (B, C, *spatial)  the clean view
    loss                     scalar: mean over views of the mean |reconstruction - target|

Data parallelism: :attr:`ParallelMode.LOCAL` (per-voxel loss, mean over the local batch).

Example::

    >>> inpaint = Inpainting()
    >>> inpaint.bind_backbone(vit)  # embed_dim, in_chans, patch_size: the backbone's
    >>> features = BatchFeatures(vit, {"view1": v1, "view2": v2, "target1": t1, "target2": t2})
    >>> inpaint.forward_batch(features).loss.shape
    torch.Size([])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from domainfm.core.batch_features import BatchFeatures
from domainfm.core.grid import TokenGrid
from domainfm.core.objectives.base import (
    ObjectiveOutput,
    ParallelMode,
    SizedFromBackbone,
    view_keys,
)
from domainfm.core.objectives.registry import OBJECTIVES
from domainfm.core.patching import unpatchify


def _check_sizes(
    embed_dim: int | None, in_chans: int | None, patch: tuple[int, ...] | None
) -> None:
    """``ValueError`` for a size that is given and invalid (``None``: not known yet)."""
    if patch is not None and (not 1 <= len(patch) <= 3 or any(int(p) < 1 for p in patch)):
        raise ValueError(f"patch_size must have 1 to 3 positive values, got patch_size={patch!r}")
    if (embed_dim is not None and embed_dim < 1) or (in_chans is not None and in_chans < 1):
        raise ValueError(
            f"embed_dim and in_chans must be >= 1, got embed_dim={embed_dim}, in_chans={in_chans}"
        )


@OBJECTIVES.register("inpainting")
class Inpainting(SizedFromBackbone):
    """A linear pixel head on every token + L1 (or L2) to the clean target, over views.

    Args:
        embed_dim: the backbone's token width ``D``; default: the backbone's.
        in_chans: input channels ``C``; default: the backbone's.
        patch_size: input elements per token along each spatial axis (1 to 3 values); must
            equal the backbone grid's patch size; default: the backbone's.
        views: batch keys of the corrupted views the encoder sees.
        targets: batch keys of the clean targets, one per view.
        loss: ``"l1"`` (Swin UNETR) or ``"l2"`` (mean squared error).

    The head is built in the constructor when the three sizes are given, otherwise by
    :meth:`bind_backbone`.
    """

    parallel_mode: ClassVar[ParallelMode] = ParallelMode.LOCAL
    backbone_sizes = ("embed_dim", "in_chans", "patch_size")

    head: nn.Linear

    def __init__(
        self,
        *,
        embed_dim: int | None = None,
        in_chans: int | None = None,
        patch_size: int | Sequence[int] | None = None,
        views: Sequence[str] = ("view1", "view2"),
        targets: Sequence[str] = ("target1", "target2"),
        loss: Literal["l1", "l2"] = "l1",
    ) -> None:
        super().__init__()
        if loss not in ("l1", "l2"):
            raise ValueError(f"loss must be 'l1' or 'l2', got loss={loss!r}")
        self.views, self.targets = view_keys(views, targets, "targets")
        patch = None
        if patch_size is not None:
            patch = (patch_size,) if isinstance(patch_size, int) else tuple(patch_size)
        _check_sizes(embed_dim, in_chans, patch)
        self.embed_dim = embed_dim
        self.in_chans = in_chans
        self.patch_size = tuple(int(p) for p in patch) if patch is not None else None
        self.loss = loss
        self.build_heads_if_sized()

    def build_heads(self) -> None:
        """The linear pixel head ``D -> prod(patch_size) * C``."""
        embed_dim, in_chans, patch = self.embed_dim, self.in_chans, self.patch_size
        assert embed_dim is not None and in_chans is not None and patch is not None
        _check_sizes(embed_dim, in_chans, patch)
        self.head = nn.Linear(embed_dim, math.prod(patch) * in_chans)

    def reconstruct(self, tokens: Tensor, grid: TokenGrid) -> Tensor:
        """Patch tokens ``(B, N, D)`` on ``grid`` → reconstruction ``(B, C, *spatial)``.

        Raises:
            ValueError: if the grid's patch size is not this head's ``patch_size``.
        """
        self.ensure_sized()
        if grid.patch_size != self.patch_size:
            raise ValueError(
                f"Inpainting patch_size {self.patch_size} does not match the backbone's token "
                f"grid patch size {grid.patch_size}; leave patch_size out to take the backbone's"
            )
        if tokens.ndim != 3 or tokens.shape[1] != grid.num_tokens:
            raise ValueError(
                f"tokens must be (B, {grid.num_tokens}, D) for grid {grid.shape}, "
                f"got {tuple(tokens.shape)}"
            )
        pixels = self.head(tokens)  # (B, N, prod(patch) * C)
        assert self.in_chans is not None  # built
        return unpatchify(pixels, grid, self.in_chans)  # (B, C, *spatial)

    def _view_loss(self, features: BatchFeatures, view: str, target_key: str) -> Tensor:
        tokens, grid = features.tokens(view)  # (*lead, N, D)
        tokens = tokens.reshape(-1, *tokens.shape[-2:])  # (B, N, D)
        target: Tensor = features.batch[target_key]
        target = target.reshape(-1, *target.shape[-(grid.ndim + 1) :])  # (B, C, *spatial)
        pred = self.reconstruct(tokens, grid)
        if pred.shape != target.shape:
            raise ValueError(
                f"batch[{target_key!r}] has shape {tuple(target.shape)}, the reconstruction of "
                f"batch[{view!r}] {tuple(pred.shape)}"
            )
        pred, target = pred.float(), target.float()  # the loss in at least float32
        if self.loss == "l1":
            return F.l1_loss(pred, target)
        return F.mse_loss(pred, target)

    def forward_batch(self, features: BatchFeatures) -> ObjectiveOutput:
        """Mean over views of the mean per-voxel distance to the clean target."""
        per_view = [
            self._view_loss(features, view, target)
            for view, target in zip(self.views, self.targets, strict=True)
        ]
        loss = torch.stack(per_view).mean()
        return ObjectiveOutput(loss=loss, terms={"inpainting": loss})

    @torch.no_grad()
    def preview(self, features: BatchFeatures) -> dict[str, Tensor]:
        """``{"input", "masked", "reconstruction"}`` ``(B, C, *spatial)`` of the first view:
        the clean target, the corrupted view and the reconstruction (the keys of
        :class:`~domainfm.tasks.monitors.preview.ReconstructionPreview`)."""
        view, target_key = self.views[0], self.targets[0]
        tokens, grid = features.tokens(view)
        tokens = tokens.reshape(-1, *tokens.shape[-2:])
        shape = (-1, self.in_chans, *grid.input_shape)
        return {
            "input": features.batch[target_key].reshape(shape).float(),
            "masked": features.batch[view].reshape(shape).float(),
            "reconstruction": self.reconstruct(tokens, grid).float(),
        }
