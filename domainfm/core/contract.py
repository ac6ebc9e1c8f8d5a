"""Typed input contracts: what a model expects of its input, recorded with its weights.

A contract travels with a model from training to every later use: training data modules build
one, checkpoints (``.ckpt``) and exports (``config.json``) store it as JSON under ``"input"``,
and tiled/sliding inference, probes and released checkpoints read it back to prepare inputs
exactly as in training. Each domain defines one subclass (volumes, rasters, audio, …) and
registers it with :data:`CONTRACTS` under its ``kind``; :func:`contract_from_dict` rebuilds the
right class from JSON, including contracts written before the ``kind`` key existed (each class
recognizes its own legacy keys with :meth:`InputContract.matches`).

Every contract has one :meth:`~InputContract.normalize`: the intensity mapping from the units
the contract names (HU, reflectance DN, log-mel …) to what the model saw in training.

Example::

    >>> @CONTRACTS.register("toy")
    ... @dataclass(frozen=True, kw_only=True)
    ... class ToyContract(InputContract):
    ...     kind: ClassVar[str] = "toy"
    ...     scale: float = 1.0
    ...     def normalize(self, x: Tensor) -> Tensor:
    ...         return x / self.scale
    >>> c = contract_from_dict({"kind": "toy", "scale": 2.0, "note": "kept"})
    >>> c.normalize(torch.ones(2)), c.to_dict()["note"]
    (tensor([0.5000, 0.5000]), 'kept')
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from torch import Tensor

from domainfm.core.plugins import discover_plugins
from domainfm.core.registry import Registry

C = TypeVar("C", bound="InputContract")


@dataclass(frozen=True, kw_only=True)
class InputContract:
    """Base class of the domain contracts (frozen, keyword-only dataclasses).

    Attributes:
        class_names: names of the output classes of a fine-tuned model (``None``: unnamed).
        extra: recorded keys the class does not model (kept verbatim, so nothing is lost
            when a contract is read and written again).
    """

    kind: ClassVar[str] = ""
    """The registry name written as ``"kind"`` in JSON."""
    legacy_keys: ClassVar[tuple[str, ...]] = ()
    """Keys that identify a contract of this class written before ``"kind"`` was recorded."""

    class_names: list[str] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def normalize(self, x: Tensor) -> Tensor:
        """Map raw input in the contract's units to what the model was trained on."""
        raise NotImplementedError(f"{type(self).__name__} defines no normalization")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: ``{"kind": ..., <fields>..., <extra>...}``."""
        out: dict[str, Any] = {"kind": self.kind}
        for f in dataclasses.fields(self):
            if f.name != "extra":
                out[f.name] = getattr(self, f.name)
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        """Rebuild from :meth:`to_dict` output (unknown keys go to ``extra``).

        Raises:
            ValueError: when a field without a default is missing.
        """
        fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "extra"}
        missing = [
            name
            for name, f in fields.items()
            if name not in data
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise ValueError(f"a {cls.kind} input contract needs {', '.join(missing)}")
        known = {k: v for k, v in data.items() if k in fields}
        extra = {k: v for k, v in data.items() if k not in fields and k != "kind"}
        return cls(**known, extra={**dict(data.get("extra") or {}), **extra})

    @classmethod
    def matches(cls, data: Mapping[str, Any]) -> bool:
        """Whether a contract dict without ``"kind"`` was written for this class."""
        return bool(cls.legacy_keys) and all(data.get(k) is not None for k in cls.legacy_keys)


CONTRACTS: Registry[type[InputContract]] = Registry("input contract")


def contract_from_dict(data: Mapping[str, Any] | None, *, source: str = "") -> InputContract:
    """The typed contract recorded in ``data`` (a checkpoint's or export's ``"input"``).

    Raises:
        ValueError: naming ``source`` when no registered contract matches.
    """
    if not data:
        raise ValueError(f"{source or 'the model'} records no input contract")
    if not isinstance(data, Mapping):
        raise ValueError(f"{source or 'the model'} records an input contract that is not a mapping")
    discover_plugins()  # once per process: every installed domain's contract is registered
    kind = data.get("kind")
    if kind is not None:
        if not isinstance(kind, str) or kind not in CONTRACTS:
            known = ", ".join(CONTRACTS) or "none"
            raise ValueError(
                f"{source or 'the model'} records an input contract of kind {kind!r}, which no "
                f"installed domain provides (known: {known})"
            )
        return _read(CONTRACTS.get(kind), data, source)
    found = [CONTRACTS.get(name) for name in CONTRACTS if CONTRACTS.get(name).matches(data)]
    if len(found) != 1:
        raise ValueError(
            f"{source or 'the model'} records an input contract with keys {sorted(data)} that "
            f"{'no' if not found else 'more than one'} installed domain recognizes"
        )
    return _read(found[0], data, source)


def _read(cls: type[InputContract], data: Mapping[str, Any], source: str) -> InputContract:
    try:
        return cls.from_dict(data)
    except (TypeError, ValueError) as err:  # a field of the wrong type or value
        raise ValueError(f"{source or 'the model'}: {err}") from err


def recorded_contract(datamodule: object | None) -> dict[str, Any]:
    """The JSON form of ``datamodule.input_contract()`` (a typed contract, or a plain dict from
    a data module written before contracts were typed); ``{}`` when it has none."""
    describe = getattr(datamodule, "input_contract", None)
    contract = describe() if callable(describe) else {}
    if isinstance(contract, InputContract):
        return contract.to_dict()
    return dict(contract or {})
