"""The state dict inside a released weights file: the file itself (a flat
``torch.save(model.state_dict())``) or the entry it nests the state dict under (``{"model":
...}``, ``{"state_dict": ...}``, ``{"teacher": ...}``), checked to be a mapping, with errors
that name what was found instead. Shared by the released-checkpoint key maps.

Example::

    >>> nested_state({"model": {"w": torch.ones(1)}, "epoch": 3}, "model")
    {'w': tensor([1.])}
    >>> nested_state({"w": torch.ones(1)}, "state_dict", optional=True)  # a bare state dict
    {'w': tensor([1.])}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor


def flat_state(content: Any) -> Mapping[str, Tensor]:
    """``content`` itself: a file that holds a flat state dict.

    Raises:
        TypeError: ``content`` is not a dict (naming its type).
    """
    if not isinstance(content, Mapping):
        raise TypeError(f"expected a state dict, found {type(content).__name__}")
    return content


def nested_state(content: Any, key: str, *, optional: bool = False) -> Mapping[str, Tensor]:
    """``content[key]``: the state dict a file nests under ``key``; with ``optional``,
    ``content`` itself when it has no ``key`` (a state dict saved bare or wrapped).

    Raises:
        TypeError: ``content``, or what it holds under ``key``, is not a dict.
        KeyError: ``content`` has no ``key`` (not ``optional``), naming its first keys.
    """
    if not isinstance(content, Mapping):
        raise TypeError(f"expected a dict with {key!r}, found {type(content).__name__}")
    if key not in content:
        if optional:
            return content
        raise KeyError(f"expected a dict with {key!r}, found keys {list(content)[:6]}")
    inner = content[key]
    if not isinstance(inner, Mapping):
        raise TypeError(f"expected a state dict under {key!r}, found {type(inner).__name__}")
    return inner
