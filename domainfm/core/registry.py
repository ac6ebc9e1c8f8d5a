"""Name → constructor registries, filled by a decorator at each definition site.

Strings only appear at the CLI/config edge; inside the library objects are passed around.
A registry turns a config string into the class that defines it, e.g.::

    OBJECTIVES = Registry("objective")

    @OBJECTIVES.register("infonce")
    class InfoNCE(nn.Module): ...

    OBJECTIVES.get("infonce")  # -> InfoNCE
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")

INIT_KWARGS_ATTR = "_domainfm_init_kwargs"
NAME_ATTR = "_domainfm_registry_name"


def _record_init_kwargs(cls: type) -> None:
    """Wrap ``cls.__init__`` so each instance keeps the keyword arguments it was built with
    (those of a ``**kwargs`` parameter flat, beside the named ones)."""
    init = cls.__init__  # type: ignore[misc]
    signature = inspect.signature(init)
    spread = [  # ``**size: Unpack[...]`` groups: recorded flat, as they are passed
        name for name, p in signature.parameters.items() if p.kind is p.VAR_KEYWORD
    ]

    @functools.wraps(init)
    def wrapped(self: Any, *args: Any, **kwargs: Any) -> None:
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        if not hasattr(self, INIT_KWARGS_ATTR) or type(self) is cls:
            params = dict(bound.arguments)
            params.pop(next(iter(signature.parameters)))  # self
            for name in spread:
                params.update(params.pop(name, {}))
            object.__setattr__(self, INIT_KWARGS_ATTR, params)
        init(self, *args, **kwargs)

    cls.__init__ = wrapped  # type: ignore[misc]


def init_config(obj: object) -> dict[str, Any]:
    """``{"architecture": registry name, "kwargs": constructor kwargs}`` of a registered object.

    Raises:
        TypeError: if ``obj``'s class was not registered with ``record_init=True``.
    """
    name = getattr(type(obj), NAME_ATTR, None)
    kwargs = getattr(obj, INIT_KWARGS_ATTR, None)
    if name is None or kwargs is None:
        raise TypeError(
            f"{type(obj).__name__} is not a registered class that records its constructor "
            "arguments; register it with @BACKBONES.register(name)"
        )
    return {"architecture": name, "kwargs": dict(kwargs)}


class Registry(Generic[T]):
    """A named table of constructors with a registering decorator.

    Args:
        kind: what the entries are ("objective", "backbone", ...), used in error messages.
        record_init: registered classes remember their constructor keyword arguments, so an
            instance can be described by :func:`init_config` and rebuilt from it.
    """

    def __init__(self, kind: str, *, record_init: bool = False) -> None:
        self.kind = kind
        self.record_init = record_init
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that records the decorated object under ``name`` (unique)."""

        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            if self.record_init and isinstance(obj, type):
                setattr(obj, NAME_ATTR, name)
                _record_init_kwargs(obj)
            return obj

        return decorator

    def get(self, name: str) -> T:
        """The entry called ``name``; a ``KeyError`` lists the known names otherwise."""
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise KeyError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def remove(self, name: str) -> T:
        """Take the entry ``name`` out (a plugin being unloaded); returns it."""
        if name not in self._entries:
            raise KeyError(f"unknown {self.kind} {name!r}")
        return self._entries.pop(name)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)
