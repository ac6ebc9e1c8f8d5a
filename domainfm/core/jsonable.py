"""Turn constructor kwargs and metadata into JSON-safe values (tuples → lists, objects → names)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any

from domainfm.core.registry import init_config


def to_jsonable(value: Any) -> Any:
    """A JSON-serializable version of ``value``.

    Registered objects (those with recorded constructor kwargs) become
    ``{"architecture": name, "kwargs": {...}}``; other objects become ``{"class": qualname}``.
    """

    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Enum):
        return to_jsonable(value.value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    try:
        config = init_config(value)
    except TypeError:
        cls = type(value)
        return {"class": f"{cls.__module__}.{cls.__qualname__}"}
    return to_jsonable(config)
