"""I-JEPA's context and target blocks on any token grid (1D spans, 2D rectangles, 3D boxes).

Assran et al. 2023, "Self-Supervised Learning from Images with a Joint-Embedding Predictive
Architecture", arXiv:2301.08243, Sec. 3 ("Targets", "Context"), as the official multi-block
mask collator draws them (github.com/facebookresearch/ijepa, ``src/masks/multiblock.py``).
For each batch, on a grid of ``N`` tokens over ``n`` axes:

1. one *target* block shape: volume ``V = int(N * s)``, ``s ~ U(target_scale)``, aspect
   ratios from ``target_aspect`` (below); and one *context* block shape: ``s ~
   U(context_scale)``, aspect ratio 1;
2. per sample, ``num_targets`` target blocks ``B_1 … B_T`` at uniform random positions
   (they may overlap each other), then one context block at a uniform random position with
   every target token removed from it. A context left with ``min_context`` tokens or fewer is
   drawn again; after 20 such draws the last target still removed is given back (the
   official fallback, so the context may then overlap that target; rare on grids of a few
   hundred tokens), and a context block with no target left to give back is taken whatever
   its size;
3. equal counts across the batch: every context (every target block) is cut to the smallest
   context (target block) of the batch, keeping its first tokens in grid order (the official
   truncation), so the encoder and predictor take dense ``(B, K)`` indices.

**Block shapes on ``n`` axes.** The side along axis ``i`` is
``round(V^(1/n) * r_i / (r_0 … r_{n-1})^(1/n))``, clamped to ``[1, grid_i]``, with
``r_i ~ U(aspect)`` for ``i < n - 1`` and ``r_{n-1} = 1``: each side over the last axis's
side is the drawn ratio, and the sides multiply to about ``V``. In 2D this is the official
``h = round(sqrt(V a))``, ``w = round(sqrt(V / a))``; in 1D a block is a span of ``V``
tokens.

Deviations from the official collator, none of them in the paper: the scale and the aspect
ratio are drawn independently (the official code uses one uniform number for both, so its
larger target blocks are always its taller ones); a side may reach the whole grid and a block
may touch the last row (the official code keeps sides one token short of the grid and never
places a block against its far edge, an off-by-one that on a 4 x 4 x 4 grid caps the
context box at 27 of the 64 tokens); ``min_context`` applies to the context only (a target
block is never constrained, so its size is fixed by its shape; the official check on it
loops forever where a target block has at most ``min_keep`` tokens, as on small 3D grids).

Shapes::

    grid                TokenGrid, N = grid.num_tokens
    JEPAMasks.context   (B, Kc) long, sorted indices into the flattened grid
    JEPAMasks.targets   (B, T, Kt) long, sorted within each block

Example::

    >>> grid = TokenGrid.from_input((224, 224), patch_size=16)            # 14 x 14
    >>> masks = MultiBlockMasking()(grid, batch_size=2)
    >>> masks.targets.shape[:2], masks.context.shape[0]
    (torch.Size([2, 4]), 2)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from domainfm.core.constructor_arguments import ConstructorConfig
from domainfm.core.grid import TokenGrid

CONTEXT_RETRIES = 20
"""Context draws with too few tokens before one target is given back (official: 20)."""


@dataclass(frozen=True)
class JEPAMasks:
    """The context and target indices of one batch (see the module docstring for shapes)."""

    context: Tensor
    targets: Tensor


def _uniform(bounds: tuple[float, float], generator: torch.Generator | None) -> float:
    low, high = bounds
    return low + float(torch.rand(1, generator=generator)) * (high - low)


def _range(name: str, value: Sequence[float], low: float, high: float) -> tuple[float, float]:
    """``value`` as a ``(min, max)`` pair with ``low < min <= max <= high``."""
    pair = tuple(float(v) for v in value)
    if len(pair) != 2 or not low < pair[0] <= pair[1] <= high:
        raise ValueError(
            f"{name} must be (min, max) with {low} < min <= max <= {high}, got {value}"
        )
    return pair[0], pair[1]


def random_box(
    shape: Sequence[int], sides: Sequence[int], generator: torch.Generator | None
) -> Tensor:
    """A boolean grid ``shape`` with one box of ``sides`` set at a uniform random position."""
    box = torch.zeros(tuple(shape), dtype=torch.bool)
    starts = [
        int(torch.randint(0, g - s + 1, (1,), generator=generator))
        for g, s in zip(shape, sides, strict=True)
    ]
    box[tuple(slice(a, a + s) for a, s in zip(starts, sides, strict=True))] = True
    return box


@dataclass(frozen=True, kw_only=True)
class MultiBlockMasking(ConstructorConfig):
    """Draws I-JEPA's context and target blocks (defaults: the paper's, Sec. 3 and Table 6).

    Attributes:
        num_targets: target blocks per sample ``T`` (paper: 4).
        target_scale: range of a target block's volume as a fraction of the grid
            (paper: ``(0.15, 0.2)``).
        target_aspect: range of a target block's side ratios (paper: ``(0.75, 1.5)``).
        context_scale: range of the context block's volume before the targets are removed
            (paper: ``(0.85, 1.0)``).
        min_context: a context must keep more than this many tokens (official
            ``min_keep``: 10), see the module docstring.

    Raises:
        ValueError: naming the first invalid attribute.
    """

    num_targets: int = 4
    target_scale: tuple[float, float] = (0.15, 0.2)
    target_aspect: tuple[float, float] = (0.75, 1.5)
    context_scale: tuple[float, float] = (0.85, 1.0)
    min_context: int = 10

    def __post_init__(self) -> None:
        if self.num_targets < 1:
            raise ValueError(f"num_targets must be >= 1, got num_targets={self.num_targets}")
        if self.min_context < 0:
            raise ValueError(f"min_context must be >= 0, got min_context={self.min_context}")
        for name, low, high in (
            ("target_scale", 0.0, 1.0),
            ("target_aspect", 0.0, math.inf),
            ("context_scale", 0.0, 1.0),
        ):
            object.__setattr__(self, name, _range(name, getattr(self, name), low, high))

    def block_shape(
        self,
        grid: TokenGrid,
        scale: tuple[float, float],
        aspect: tuple[float, float],
        generator: torch.Generator | None = None,
    ) -> tuple[int, ...]:
        """The sides of a block with volume fraction ``~ U(scale)`` and side ratios
        ``~ U(aspect)`` on ``grid`` (see the module docstring)."""
        volume = int(grid.num_tokens * _uniform(scale, generator))
        ratios = [_uniform(aspect, generator) for _ in range(grid.ndim - 1)] + [1.0]
        norm = math.prod(ratios) ** (1.0 / grid.ndim)
        base = volume ** (1.0 / grid.ndim)
        sides = (round(base * r / norm) for r in ratios)
        return tuple(min(max(s, 1), g) for s, g in zip(sides, grid.shape, strict=True))

    def _context(
        self,
        grid: TokenGrid,
        sides: tuple[int, ...],
        targets: list[Tensor],
        generator: torch.Generator | None,
    ) -> Tensor:
        """One sample's context: a box of ``sides`` minus the target blocks (relaxed as the
        module docstring says), as a boolean grid."""
        removed, failures = len(targets), 0
        while True:
            context = random_box(grid.shape, sides, generator)
            for target in targets[:removed]:
                context &= ~target
            if int(context.sum()) > self.min_context or removed == 0:
                return context
            failures += 1
            if failures == CONTEXT_RETRIES:
                removed, failures = removed - 1, 0

    def __call__(
        self, grid: TokenGrid, batch_size: int, generator: torch.Generator | None = None
    ) -> JEPAMasks:
        """Context ``(B, Kc)`` and target ``(B, T, Kt)`` indices for ``batch_size`` samples.

        Args:
            grid: the backbone's token grid of the batch.
            batch_size: ``B`` >= 1.
            generator: the random source; ``None``: the global torch RNG.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        target_sides = self.block_shape(grid, self.target_scale, self.target_aspect, generator)
        context_sides = self.block_shape(grid, self.context_scale, (1.0, 1.0), generator)
        contexts: list[Tensor] = []
        targets: list[list[Tensor]] = []
        for _ in range(batch_size):
            blocks = [
                random_box(grid.shape, target_sides, generator) for _ in range(self.num_targets)
            ]
            context = self._context(grid, context_sides, blocks, generator)
            contexts.append(context.flatten().nonzero()[:, 0])
            targets.append([block.flatten().nonzero()[:, 0] for block in blocks])
        kc = min(len(c) for c in contexts)
        kt = min(len(t) for sample in targets for t in sample)
        return JEPAMasks(
            context=torch.stack([c[:kc] for c in contexts]),
            targets=torch.stack([torch.stack([t[:kt] for t in sample]) for sample in targets]),
        )
