"""Reconstruction targets for masked autoencoding: what the MAE decoder predicts per token.

A target maps the input ``(B, C, *spatial)`` and its grid to ``(B, N, out_dim)``. The default,
:class:`NormalizedPixelTarget`, is MAE's per-patch normalized pixels (He et al. 2022,
arXiv:2111.06377, ``norm_pix_loss``). Domains plug in other targets (HOG or normalized
difference indices for FG-MAE, Wang et al. 2023, arXiv:2310.18653) through the same protocol.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor

from domainfm.core.grid import TokenGrid
from domainfm.core.patching import patchify


class MAETarget:
    """Per-token reconstruction target: the base class of every target (a plain class, not a
    ``Protocol``, so that configs can pick a subclass by ``class_path``)."""

    def out_dim(self, in_chans: int, patch_size: Sequence[int]) -> int:
        """Width of one token's target for this many channels and this patch size."""
        raise NotImplementedError

    def __call__(self, x: Tensor, grid: TokenGrid) -> Tensor:
        """``(B, C, *spatial)`` → ``(B, N, out_dim)``."""
        raise NotImplementedError


class NormalizedPixelTarget(MAETarget):
    """The patch's pixels, each token normalized to zero mean and unit variance.

    Args:
        normalize: subtract the token mean and divide by ``sqrt(var + eps)`` (unbiased var,
            as in the MAE reference code); raw pixels when ``False``.
        eps: variance floor.
    """

    def __init__(self, *, normalize: bool = True, eps: float = 1e-6) -> None:
        self.normalize = normalize
        self.eps = eps

    def out_dim(self, in_chans: int, patch_size: Sequence[int]) -> int:
        return in_chans * math.prod(patch_size)

    def __call__(self, x: Tensor, grid: TokenGrid) -> Tensor:
        target = patchify(x, grid)  # (B, N, P * C)
        if not self.normalize:
            return target
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        return (target - mean) / (var + self.eps).sqrt()
