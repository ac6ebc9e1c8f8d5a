"""Standardization ``(x - mean) / std`` with one floor on ``std``.

A band, channel or feature with (near) zero spread would blow up when divided by its
``std``; every standardization in domainfm divides by ``max(std, STD_FLOOR)`` instead
(:func:`floor_std`), for tensors, numpy arrays and plain floats alike.

Example::

    >>> standardize(torch.tensor([2.0, 5.0]), torch.tensor([1.0, 5.0]), torch.tensor([2.0, 0.0]))
    tensor([0.5000, 0.0000])
    >>> floor_std(0.0)
    1e-06
"""

from __future__ import annotations

from typing import TypeVar, overload

import numpy as np
from torch import Tensor

STD_FLOOR = 1e-6
"""Smallest ``std`` anything is divided by."""

ArrayT = TypeVar("ArrayT", Tensor, np.ndarray)


@overload
def floor_std(std: float, floor: float = STD_FLOOR) -> float: ...
@overload
def floor_std(std: ArrayT, floor: float = STD_FLOOR) -> ArrayT: ...
def floor_std(
    std: float | Tensor | np.ndarray, floor: float = STD_FLOOR
) -> float | Tensor | np.ndarray:
    """``max(std, floor)``, elementwise for a tensor or array (same type and dtype)."""
    if isinstance(std, Tensor):
        return std.clamp_min(floor)
    if isinstance(std, np.ndarray):
        return np.maximum(std, floor)
    return max(std, floor)


def standardize(x: ArrayT, mean: ArrayT, std: ArrayT, *, floor: float = STD_FLOOR) -> ArrayT:
    """``(x - mean) / max(std, floor)`` (``mean`` and ``std`` broadcast against ``x``)."""
    return (x - mean) / floor_std(std, floor)
