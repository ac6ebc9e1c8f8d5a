"""Name → constructor registries, filled by a decorator at each definition site.

Strings only appear at the CLI/config edge; inside the library objects are passed around.
A registry turns a config string into the class that defines it, e.g.::

    OBJECTIVES = Registry("objective")

    @OBJECTIVES.register("infonce")
    class InfoNCE(nn.Module): ...

    OBJECTIVES.get("infonce")  # -> InfoNCE
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of constructors with a registering decorator.

    Args:
        kind: what the entries are ("objective", "backbone", ...), used in error messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that records the decorated object under ``name`` (unique)."""

        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """The entry called ``name``; a ``KeyError`` lists the known names otherwise."""
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise KeyError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)
