from __future__ import annotations

from dataclasses import dataclass

import pytest

from domainfm.core.constructor_arguments import ConstructorConfig, constructor_arguments


@dataclass(frozen=True, kw_only=True)
class Size(ConstructorConfig):
    width: int
    depth: int


class Base:
    def __init__(self, *, width: int, name: str = "base") -> None:
        self.width, self.name = width, name


class Child(Base):
    def __init__(self, *, width: int, name: str = "child") -> None:
        self.arguments = constructor_arguments(locals())
        super().__init__(**self.arguments)


def test_constructor_arguments_leave_out_self_and_the_super_cell() -> None:
    child = Child(width=3)
    assert child.arguments == {"width": 3, "name": "child"}
    assert (child.width, child.name) == (3, "child")


def test_config_from_arguments_and_back() -> None:
    size = Size.from_arguments({"width": 8, "name": "x"}, depth=2)
    assert size == Size(width=8, depth=2)
    assert size.kwargs() == {"width": 8, "depth": 2}
    with pytest.raises(TypeError, match=r"missing from the arguments: \['depth'\]"):
        Size.from_arguments({"width": 8})
