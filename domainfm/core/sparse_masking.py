"""Masked convolution on dense tensors: a patch mask upsampled to every map of a CNN, and
the re-masking of each stage's output while a masked input is encoded.

SparK (Tian et al. 2023, "Designing BERT for Convolutional Networks: Sparse and Hierarchical
Masked Modeling", arXiv:2301.03580, §3.1) treats the visible patches of a masked image as a
sparse set: a convolution computes only at visible positions and masked positions stay
*empty*. On dense tensors this is emulated by zeroing the masked positions of the input and
multiplying the output of every stage by the mask at that stage's resolution, so that the next
stage reads zeros there, not values a convolution spread in from visible neighbours::

    a        (B, *g)          True where visible, on the coarsest grid g = input / P
    a_s      (B, 1, *g * f)   ``expand_mask(a, shape)``: each cell repeated f = shape / g
                              times per axis (nearest upsampling)
    x_0      = x ⊙ a_P                              the masked input  (B, C, *g * P)
    f_i      = stage_i(f_{i-1}) ⊙ a_{s_i}           stage i's map, zero where masked

:func:`remasked` applies the second line with forward hooks on the stage modules (a
:class:`~domainfm.core.multiscale.MultiScaleBackbone` names them in ``stage_modules()``), so
any CNN whose stages are modules is encoded sparsely without changing its code or weights.

Example::

    >>> active = torch.tensor([[[True, False], [False, True]]])     # (1, 2, 2)
    >>> expand_mask(active, (4, 4))[0, 0].int()
    tensor([[1, 1, 0, 0],
            [1, 1, 0, 0],
            [0, 0, 1, 1],
            [0, 0, 1, 1]], dtype=torch.int32)
    >>> with remasked(backbone.stage_modules(), active):
    ...     maps = backbone.forward_intermediates(x * expand_mask(active, x.shape[2:]))
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn


def expand_mask(active: Tensor, shape: Sequence[int]) -> Tensor:
    """A grid mask ``(B, *g)`` upsampled (nearest) to ``(B, 1, *shape)``.

    Raises:
        ValueError: unless ``shape`` has one size per grid axis, each a multiple of the grid's.
    """
    grid = tuple(active.shape[1:])
    sizes = tuple(int(s) for s in shape)
    if len(sizes) != len(grid) or any(s % g for s, g in zip(sizes, grid, strict=True)):
        raise ValueError(
            f"a map of spatial shape {sizes} is not a multiple of the mask grid {grid}"
        )
    out = active[:, None]
    for axis, (s, g) in enumerate(zip(sizes, grid, strict=True)):
        out = out.repeat_interleave(s // g, dim=axis + 2)
    return out


@contextmanager
def remasked(modules: Sequence[nn.Module], active: Tensor) -> Iterator[None]:
    """While inside, the output ``(B, C, *spatial)`` of each of ``modules`` is multiplied by
    ``active`` ``(B, *g)`` upsampled to its spatial shape (:func:`expand_mask`); the hooks
    are removed on exit.

    Hooks run in registration order, so hooks registered on these modules before entering see
    the output before it is re-masked.
    """

    def remask(module: nn.Module, args: Any, output: Any) -> Tensor:
        if not isinstance(output, Tensor) or output.ndim != active.ndim + 1:
            raise TypeError(
                f"{type(module).__name__} returns {type(output).__name__} "
                f"{tuple(getattr(output, 'shape', ()))}; re-masking needs a "
                f"(B, C, *spatial) map with {active.ndim - 1} spatial axes"
            )
        return output * expand_mask(active, output.shape[2:]).to(output.dtype)

    handles = [m.register_forward_hook(remask) for m in modules]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
