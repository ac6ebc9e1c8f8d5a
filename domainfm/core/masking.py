"""Mask generators over any token grid, and a collate function that applies them.

A generator returns a boolean mask ``(B, N)`` over the flattened grid (``True`` = masked,
i.e. hidden from the encoder). Every sample gets exactly the same number of masked tokens, so
visible tokens can be dropped with a dense ``keep_idx`` ``(B, K)`` (see :func:`keep_indices`).

* :class:`RandomMasking` — uniform random tokens (MAE, He et al. 2022, arXiv:2111.06377).
* :class:`BlockMasking` — axis-aligned boxes/spans of tokens (BEiT, Bao et al. 2022,
  arXiv:2106.08254; spans on 1D grids as in wav2vec 2.0).
* :class:`TubeMasking` — one mask over the other axes, repeated along one axis: the same
  spatial mask at every time step (VideoMAE, Tong et al. 2022, arXiv:2203.12602) or in every
  band group (SatMAE's consistent masking, Cong et al. 2022, arXiv:2207.08051).

Masks are drawn in dataloader workers through :class:`MaskingCollate`, not in the training
step. With ``generator=None`` a generator draws from the global torch RNG, which PyTorch seeds
per worker from the loader's base seed, so runs are reproducible under ``seed_everything``.
A pretraining data module takes its masking as one :class:`MaskingSpec` (kind, ratio, the
backbone's patch size) and builds the collate from it.

Example::

    >>> grid = TokenGrid.from_input((8, 64, 64), patch_size=(2, 16, 16), axes=("t", "h", "w"))
    >>> mask = TubeMasking(ratio=0.75, axis="t")(grid, batch_size=2)
    >>> mask.shape, int(mask[0].sum())
    (torch.Size([2, 64]), 48)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
from torch import Tensor
from torch.utils.data import default_collate

from domainfm.core.grid import TokenGrid


class MaskGenerator(Protocol):
    """Draws ``(B, N)`` boolean masks for a grid with an exact masked count per sample."""

    ratio: float

    def __call__(
        self, grid: TokenGrid, batch_size: int, generator: torch.Generator | None = None
    ) -> Tensor: ...


def _check_ratio(ratio: float) -> float:
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"mask ratio must be in (0, 1), got ratio={ratio}")
    return float(ratio)


def num_masked(num_tokens: int, ratio: float) -> int:
    """Tokens masked out of ``num_tokens``: ``round(ratio * N)``, kept in ``[1, N - 1]``."""
    if num_tokens < 2:
        raise ValueError(f"masking needs a grid of at least 2 tokens, got {num_tokens}")
    return min(max(round(ratio * num_tokens), 1), num_tokens - 1)


def keep_indices(mask: Tensor) -> Tensor:
    """Sorted indices of the visible tokens, ``(B, N)`` bool → ``(B, K)`` long.

    Raises:
        ValueError: if samples have different numbers of visible tokens.
    """
    visible = (~mask).sum(dim=1)
    if visible.numel() and bool((visible != visible[0]).any()):
        raise ValueError(
            f"every sample must keep the same number of tokens, got {visible.tolist()}"
        )
    k = int(visible[0]) if visible.numel() else 0
    return (~mask).nonzero()[:, 1].view(mask.shape[0], k)


def _random_mask(batch_size: int, n: int, n_mask: int, generator: torch.Generator | None) -> Tensor:
    noise = torch.rand(batch_size, n, generator=generator)
    ranks = noise.argsort(dim=1).argsort(dim=1)  # rank of each token's noise
    return ranks < n_mask


class RandomMasking:
    """Mask ``round(ratio * N)`` tokens uniformly at random in each sample.

    Args:
        ratio: fraction of tokens to mask, in (0, 1).
    """

    def __init__(self, *, ratio: float = 0.75) -> None:
        self.ratio = _check_ratio(ratio)

    def __call__(
        self, grid: TokenGrid, batch_size: int, generator: torch.Generator | None = None
    ) -> Tensor:
        n = grid.num_tokens
        return _random_mask(batch_size, n, num_masked(n, self.ratio), generator)


class BlockMasking:
    """Mask axis-aligned boxes of tokens (spans on 1D grids) until the ratio is reached.

    Boxes of ``min_block``–``max_block_fraction * N`` tokens with a random aspect ratio
    (log-uniform in ``[1/max_aspect, max_aspect]`` per axis pair) are placed at random; the
    last box is trimmed (or random tokens added) so the masked count is exact.

    Args:
        ratio: fraction of tokens to mask, in (0, 1).
        min_block: smallest box, in tokens.
        max_block_fraction: largest box as a fraction of the grid.
        max_aspect: largest side ratio of a box.
    """

    def __init__(
        self,
        *,
        ratio: float = 0.5,
        min_block: int = 4,
        max_block_fraction: float = 0.25,
        max_aspect: float = 3.0,
    ) -> None:
        self.ratio = _check_ratio(ratio)
        if min_block < 1:
            raise ValueError(f"min_block must be >= 1, got min_block={min_block}")
        if not 0.0 < max_block_fraction <= 1.0:
            raise ValueError(
                f"max_block_fraction must be in (0, 1], got max_block_fraction={max_block_fraction}"
            )
        if max_aspect < 1.0:
            raise ValueError(f"max_aspect must be >= 1, got max_aspect={max_aspect}")
        self.min_block = min_block
        self.max_block_fraction = max_block_fraction
        self.max_aspect = max_aspect

    def _box_sides(self, grid: TokenGrid, generator: torch.Generator | None) -> list[int]:
        n = grid.num_tokens
        hi = max(self.min_block, int(self.max_block_fraction * n))
        volume = self.min_block + float(torch.rand(1, generator=generator)) * (hi - self.min_block)
        log_aspects = (torch.rand(grid.ndim, generator=generator) * 2 - 1) * math.log(
            self.max_aspect
        )
        log_aspects = log_aspects - log_aspects.mean()  # product of the aspects is 1
        base = volume ** (1.0 / grid.ndim)
        sides = [round(base * math.exp(float(a))) for a in log_aspects]
        return [min(max(s, 1), g) for s, g in zip(sides, grid.shape, strict=True)]

    def _one(self, grid: TokenGrid, n_mask: int, generator: torch.Generator | None) -> Tensor:
        mask = torch.zeros(grid.shape, dtype=torch.bool)
        for _ in range(100 * grid.num_tokens):
            if int(mask.sum()) >= n_mask:
                break
            sides = self._box_sides(grid, generator)
            starts = [
                int(torch.randint(0, g - s + 1, (1,), generator=generator))
                for g, s in zip(grid.shape, sides, strict=True)
            ]
            box = tuple(slice(a, a + s) for a, s in zip(starts, sides, strict=True))
            before = mask.clone()
            mask[box] = True
            if int(mask.sum()) > n_mask:  # trim the newest box to the exact count
                new = (mask & ~before).flatten().nonzero()[:, 0]
                excess = int(mask.sum()) - n_mask
                drop = new[torch.randperm(new.numel(), generator=generator)[:excess]]
                mask.view(-1)[drop] = False
        flat = mask.flatten()
        short = n_mask - int(flat.sum())
        if short > 0:  # only for pathological settings: top up at random
            free = (~flat).nonzero()[:, 0]
            flat[free[torch.randperm(free.numel(), generator=generator)[:short]]] = True
        return flat

    def __call__(
        self, grid: TokenGrid, batch_size: int, generator: torch.Generator | None = None
    ) -> Tensor:
        n_mask = num_masked(grid.num_tokens, self.ratio)
        return torch.stack([self._one(grid, n_mask, generator) for _ in range(batch_size)])


class TubeMasking:
    """One mask over the other axes, repeated along ``axis`` (time or band group).

    Args:
        axis: name of the grid axis along which the mask is constant (e.g. ``"t"``).
        ratio: fraction of tokens to mask, in (0, 1).
        base: generator for the mask of one slice; default :class:`RandomMasking`.
    """

    def __init__(
        self, *, axis: str, ratio: float = 0.75, base: MaskGenerator | None = None
    ) -> None:
        self.axis = axis
        self.ratio = _check_ratio(ratio)
        self.base = base if base is not None else RandomMasking(ratio=ratio)

    def __call__(
        self, grid: TokenGrid, batch_size: int, generator: torch.Generator | None = None
    ) -> Tensor:
        a = grid.axis(self.axis)
        if grid.ndim == 1:
            raise ValueError(f"tube masking along {self.axis!r} needs a grid with another axis")
        rest = tuple(s for i, s in enumerate(grid.shape) if i != a)
        sub = TokenGrid(
            shape=rest,
            patch_size=tuple(p for i, p in enumerate(grid.patch_size) if i != a),
            axes=tuple(n for i, n in enumerate(grid.axes) if i != a),
        )
        mask = self.base(sub, batch_size, generator).view(batch_size, *rest)
        mask = mask.unsqueeze(a + 1).expand(batch_size, *grid.shape)  # repeat along the tube axis
        return mask.reshape(batch_size, grid.num_tokens)


class MaskingCollate:
    """Collate samples and draw a mask for the batch (runs in dataloader workers).

    The batch is ``default_collate(samples)``; the input tensor is the batch itself or
    ``batch[key]`` for dict samples. Adds ``"mask"`` ``(B, N)`` and ``"keep_idx"`` ``(B, K)``
    to dict batches, or returns ``{"input": x, "mask": ..., "keep_idx": ...}`` otherwise.
    When samples carry a ``"seed"`` (see :class:`~domainfm.data.sampling.SeededSampler`) the
    mask is drawn from a generator seeded by them, so it does not depend on the worker.

    Args:
        masking: the mask generator.
        patch_size: the backbone's patch size (int or per axis).
        axes: grid axis names (needed by :class:`TubeMasking`).
        key: the input's key in dict samples.
    """

    def __init__(
        self,
        *,
        masking: MaskGenerator,
        patch_size: int | Sequence[int],
        axes: Sequence[str] | None = None,
        key: str = "input",
    ) -> None:
        self.masking = masking
        self.patch_size = patch_size
        self.axes = axes
        self.key = key

    def __call__(self, samples: list[Any]) -> dict[str, Any]:
        batch = default_collate(samples)
        if not isinstance(batch, dict):
            batch = {self.key: batch}
        x = batch[self.key]
        grid = TokenGrid.from_input(x.shape[2:], self.patch_size, self.axes)
        generator = None
        if "seed" in batch:  # samples carry seeds (SeededSampler): the mask follows from them
            seed = hash(tuple(batch["seed"].tolist())) & (2**63 - 1)
            generator = torch.Generator().manual_seed(seed)
        mask = self.masking(grid, x.shape[0], generator)
        batch["mask"] = mask
        batch["keep_idx"] = keep_indices(mask)
        return batch


MaskingKind = Literal["random", "block", "tube"]


@dataclass(frozen=True)
class MaskingSpec:
    """The MAE masking of a pretraining data module's batches (drawn in the loader workers).

    Args:
        patch_size: the backbone's patch size, an int or one per grid axis (the mask's token
            grid).
        ratio: fraction of tokens hidden from the encoder, in (0, 1).
        kind: ``"random"`` (:class:`RandomMasking`), ``"block"`` (:class:`BlockMasking`) or
            ``"tube"`` (:class:`TubeMasking`: the same mask along the grid's first axis, for
            time series and band-group cubes); which kinds fit depends on the data module.

    Example (the ``data`` section of a ``domainfm fit`` config)::

        masking: {patch_size: 16, ratio: 0.75, kind: random}
    """

    patch_size: int | Sequence[int] = 16
    ratio: float = 0.75
    kind: MaskingKind = "random"

    def generator(self, *, tube_axis: str | None = None) -> MaskGenerator:
        """The mask generator of :attr:`kind` (``"tube"`` along ``tube_axis``)."""
        if self.kind == "random":
            return RandomMasking(ratio=self.ratio)
        if self.kind == "block":
            return BlockMasking(ratio=self.ratio)
        if self.kind == "tube" and tube_axis is not None:
            return TubeMasking(axis=tube_axis, ratio=self.ratio)
        raise ValueError(f"masking kind={self.kind!r} needs a grid axis to repeat the mask along")

    def collate(
        self,
        *,
        kinds: Sequence[MaskingKind] = ("random", "block", "tube"),
        patch_size: int | Sequence[int] | None = None,
        axes: Sequence[str] | None = None,
    ) -> MaskingCollate:
        """The :class:`MaskingCollate` drawing these masks.

        Args:
            kinds: the kinds the data module supports.
            patch_size: the grid's patch size when it is not :attr:`patch_size` as given
                (e.g. ``(1, p, p)`` for a cube).
            axes: the grid's axis names (``"tube"`` repeats along the first).

        Raises:
            ValueError: :attr:`kind` is not among ``kinds``.
        """
        if self.kind not in kinds:
            raise ValueError(f"masking kind={self.kind!r} is not one of {list(kinds)} here")
        return MaskingCollate(
            masking=self.generator(tube_axis=axes[0] if axes else None),
            patch_size=self.patch_size if patch_size is None else patch_size,
            axes=axes,
        )


DEFAULT_MASKING = MaskingSpec()
"""Random masking of 75 % of the tokens of a patch-16 grid (MAE's default)."""
