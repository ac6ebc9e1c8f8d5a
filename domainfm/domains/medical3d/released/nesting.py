"""The state dict inside a release file's nesting (``{"state_dict": ...}``, ``{"net": ...}``,
``{"model": ...}``), shared by the medical key maps, and the check that what a map reads is a
dict at all (:func:`require_mapping`).

Example::

    >>> unwrap({"state_dict": {"w": torch.ones(1)}}, "state_dict")
    {'w': tensor([1.])}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor


def unwrap(content: Any, key: str) -> Mapping[str, Tensor]:
    """``content[key]``: the state dict a release file nests under ``key``.

    Raises:
        KeyError: ``content`` is no dict with ``key``, naming its first keys (or its type).
    """
    if not isinstance(content, Mapping) or key not in content:
        keys = list(content)[:5] if isinstance(content, Mapping) else type(content).__name__
        raise KeyError(f"expected a dict with {key!r}, found {keys}")
    inner: Mapping[str, Tensor] = content[key]
    return inner


def require_mapping(value: Any, what: str) -> Mapping[str, Tensor]:
    """``value``, a dict (of tensors, by the file's word).

    Raises:
        TypeError: ``"expected <what>, found <type>"``.
    """
    if not isinstance(value, Mapping):
        raise TypeError(f"expected {what}, found {type(value).__name__}")
    return value
