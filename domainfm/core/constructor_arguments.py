"""A constructor's own keyword arguments, passed on whole or as a frozen group.

A registered backbone keeps an explicit keyword signature (the registry records its bound
arguments, see :func:`~domainfm.core.registry.init_config`), yet hands those arguments on:
all of them to a base class that takes the same names (:func:`constructor_arguments`), or a
group of them as one object (the ViT size, the BEATs architecture). A
:class:`ConstructorConfig` is such a group: a frozen dataclass whose field names are the
constructor's parameter names, built once from the constructor's own arguments with
:meth:`ConstructorConfig.from_arguments` instead of re-spelling ``name=name`` per field, and
spread back into keyword arguments with :meth:`ConstructorConfig.kwargs`.

Both read the constructor's ``locals()``; names the constructor binds before that call must
not shadow a parameter.

Example::

    >>> @dataclass(frozen=True, kw_only=True)
    ... class Size(ConstructorConfig):
    ...     width: int
    ...     depth: int
    >>> def build(*, width: int, name: str) -> Size:
    ...     return Size.from_arguments(locals(), depth=2)
    >>> build(width=8, name="x").kwargs()
    {'width': 8, 'depth': 2}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

NOT_ARGUMENTS = frozenset({"self", "__class__"})
"""Names in a method's ``locals()`` that are no arguments: the instance and the cell that a
zero-argument ``super()`` adds."""


def constructor_arguments(local_names: Mapping[str, Any]) -> dict[str, Any]:
    """A constructor's keyword arguments from its ``locals()`` (without ``self`` and the
    ``__class__`` cell), e.g. to pass all of them to a base class taking the same names."""
    return {name: value for name, value in local_names.items() if name not in NOT_ARGUMENTS}


@dataclass(frozen=True)
class ConstructorConfig:
    """Base of frozen, keyword-only dataclasses of constructor arguments (no fields itself)."""

    @classmethod
    def from_arguments(cls, arguments: Mapping[str, Any], **fixed: Any) -> Self:
        """The config read from a constructor's own ``arguments`` (its ``locals()``), with
        ``fixed`` values for the fields the constructor does not take.

        Raises:
            TypeError: a field neither among ``arguments`` nor in ``fixed``, or a ``fixed``
                name that is not a field or that the constructor takes itself.
        """
        names = [field.name for field in dataclasses.fields(cls)]
        missing = [name for name in names if name not in arguments and name not in fixed]
        unknown = sorted(set(fixed) - set(names))
        clashing = sorted(set(fixed) & set(arguments))
        if missing or unknown or clashing:
            raise TypeError(
                f"{cls.__name__} fields missing from the arguments: {missing}; fixed values "
                f"that are no field: {unknown}; fixed values for taken arguments: {clashing}"
            )
        return cls(**{name: fixed[name] if name in fixed else arguments[name] for name in names})

    def kwargs(self) -> dict[str, Any]:
        """The fields as keyword arguments (shallow: values are not copied)."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
