"""The backbone contract every domain model implements, and the backbone registry.

A backbone takes ``(B, C, *spatial)`` with 1–3 grid axes (an image time series or a
spectrogram carries time as one of them, named ``"t"``), cuts it into a
:class:`~domainfm.core.grid.TokenGrid` and returns tokens. Masked objectives pass
``keep_idx`` so that only visible tokens enter the encoder (MAE-style dropping); dense heads
read ``forward_intermediates``; pooled heads use ``forward``.

Shapes::

    x                              (B, C, *spatial)
    token_grid(x.shape[2:])        TokenGrid with N = prod(grid.shape) tokens
    forward_tokens(x, keep_idx)    tokens (B, P + K, D), grid   # P = num_prefix_tokens,
                                                                # K = keep_idx.shape[1] or N
    forward_intermediates(x, ...)  list of (B, D, *grid.shape)
    forward(x)                     (B, D) pooled embedding
    pool_tokens(tokens)            (B, D) optional: the pooling of ``forward`` applied to
                                   ``forward_tokens`` output (saves a pass when both are used)

:func:`build_backbone` builds from recorded kwargs (an export's ``config.json``, a
checkpoint's metadata, a release): it estimates the model's bytes first
(:func:`estimate_module_bytes`, nothing allocated) and refuses an absurd size through the
size guard (:mod:`domainfm.core.size_guard`) naming the file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn
from torch.nn.modules.module import (
    register_module_buffer_registration_hook,
    register_module_module_registration_hook,
    register_module_parameter_registration_hook,
)
from torch.overrides import TorchFunctionMode

from domainfm.core.grid import TokenGrid
from domainfm.core.plugins import discover_plugins
from domainfm.core.registry import Registry
from domainfm.core.size_guard import AllocationTooLarge, allocation_limit, check_allocation

BACKBONES: Registry[type] = Registry("backbone", record_init=True)


@runtime_checkable
class Backbone(Protocol):
    """Structural type of a domainfm backbone (see the module docstring for shapes)."""

    embed_dim: int
    """Channel width ``D`` of the tokens."""
    patch_size: tuple[int, ...]
    """Input elements per token along each grid axis."""
    num_prefix_tokens: int
    """Class/register tokens placed before the patch tokens in ``forward_tokens``."""

    def token_grid(self, input_shape: Sequence[int]) -> TokenGrid:
        """The token grid of an input with this spatial shape (no batch/channel dims)."""
        ...

    def forward_tokens(self, x: Tensor, keep_idx: Tensor | None = None) -> tuple[Tensor, TokenGrid]:
        """Encode ``x``; with ``keep_idx`` ``(B, K)`` only those grid tokens are encoded."""
        ...

    def forward_intermediates(
        self, x: Tensor, indices: int | Sequence[int] = 1, norm: bool = False
    ) -> list[Tensor]:
        """Feature maps ``(B, D, *grid)`` after the selected blocks (last ``n`` if int)."""
        ...

    def __call__(self, x: Tensor) -> Tensor:
        """Pooled embedding ``(B, D)``."""
        ...


def backbone_grid(backbone: nn.Module, input_shape: Sequence[int]) -> TokenGrid:
    """The token grid of a ``(*spatial)`` input for a backbone declaring ``spatial_dims``,
    ``patch_size`` and optionally ``axes`` (default names otherwise): its ``token_grid``.

    Raises:
        ValueError: naming the backbone, when the input has another number of spatial dims or
            a patch size does not divide its side.
    """
    shape = tuple(input_shape)
    dims = int(getattr(backbone, "spatial_dims"))  # noqa: B009 - part of the contract
    if len(shape) != dims:
        raise ValueError(
            f"{type(backbone).__name__} takes {dims} spatial dims (input (B, C, *spatial)), "
            f"got input shape {shape}"
        )
    patch_size = getattr(backbone, "patch_size")  # noqa: B009 - part of the contract
    return TokenGrid.from_input(shape, patch_size, getattr(backbone, "axes", None))


MODULE_OVERHEAD_BYTES = 2048
"""Python-side memory of one ``nn.Module`` with its parameters' wrappers (about 2.2 kB per
module measured on a deep, narrow ViT), counted so that an absurd depth is refused even when
its tensors are tiny."""

_SIZED_FACTORIES = frozenset(
    {
        torch.empty,
        torch.empty_strided,
        torch.empty_permuted,
        torch.zeros,
        torch.ones,
        torch.full,
        torch.rand,
        torch.randn,
        torch.randint,
        torch.randperm,
        torch.arange,
        torch.range,
        torch.eye,
        Tensor.new_empty,
        Tensor.new_zeros,
        Tensor.new_ones,
        Tensor.new_full,
    }
)
"""Factories that make tensors on the meta device (no memory) during an estimate (an
``arange`` too: index tables such as Swin's relative positions are computed on shapes only)."""

_VALUE_FACTORIES = frozenset({torch.linspace, torch.logspace})
"""Factories whose values constructors read (``torch.linspace(0, rate, depth).tolist()``):
real during an estimate, their size checked on the meta device first, with
:data:`PYTHON_NUMBER_BYTES` per element for the list they are often turned into."""

PYTHON_NUMBER_BYTES = 32
"""A Python float in a list: the object (24 bytes) and the list's pointer to it (8)."""


class _EstimateMode(TorchFunctionMode):
    """Shape-only factories on the meta device; value factories checked before they run."""

    def __init__(self, what: str, source: str | Path | None) -> None:
        super().__init__()
        self.what, self.source = what, source

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        kwargs = dict(kwargs or {})
        if func in _SIZED_FACTORIES:
            kwargs["device"] = torch.device("meta")
        elif func in _VALUE_FACTORIES:
            shadow = func(*args, **{**kwargs, "device": torch.device("meta")})
            nbytes = float(shadow.numel()) * (shadow.element_size() + PYTHON_NUMBER_BYTES)
            check_allocation(nbytes, what=f"a table of {self.what}", source=self.source)
        return func(*args, **kwargs)


class _Tally:
    """Running bytes of the parameters, buffers and modules registered during an estimate,
    refused as soon as they pass the limit (an absurd depth stops early)."""

    def __init__(self, what: str, source: str | Path | None) -> None:
        self.what, self.source = what, source
        self.limit = allocation_limit()
        self.total = 0.0

    def add(self, nbytes: float) -> None:
        self.total += nbytes
        if self.total > self.limit:
            check_allocation(self.total, what=f"{self.what} (counted so far)", source=self.source)

    def tensor(self, module: nn.Module, name: str, value: Tensor | None) -> None:
        if value is not None:
            self.add(float(value.numel()) * value.element_size())

    def module(self, parent: nn.Module, name: str, child: nn.Module | None) -> None:
        if child is not None:
            self.add(MODULE_OVERHEAD_BYTES)


def module_bytes(module: nn.Module) -> float:
    """Bytes of ``module``'s parameters and buffers (shared tensors once) plus
    :data:`MODULE_OVERHEAD_BYTES` per submodule."""
    seen: set[int] = set()
    total = 0.0
    for tensor in [*module.parameters(), *module.buffers()]:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += float(tensor.numel()) * tensor.element_size()
    return total + MODULE_OVERHEAD_BYTES * sum(1 for _ in module.modules())


def estimate_module_bytes(
    build: Callable[[], nn.Module], *, what: str, source: str | Path | None = None
) -> float | None:
    """The bytes ``build()`` would allocate, found by running it without allocating: tensors
    whose shape alone is given are made on the meta device, and the global random state is
    restored afterwards, so the real build that follows is unchanged.

    Returns:
        The estimate (:func:`module_bytes` of the meta-built module), or ``None`` when the
        constructor cannot run on the meta device (the real build then reports its errors).

    Raises:
        AllocationTooLarge: naming ``source``, as soon as the parameters, buffers and modules
            registered so far, or one table of values (a ``linspace``), pass the limit of
            :func:`~domainfm.core.size_guard.check_allocation`.
    """
    tally = _Tally(what, source)
    hooks = [
        register_module_parameter_registration_hook(tally.tensor),
        register_module_buffer_registration_hook(tally.tensor),
        register_module_module_registration_hook(tally.module),
    ]
    try:
        with torch.random.fork_rng(devices=[]), _EstimateMode(what, source):
            model = build()
    except (AllocationTooLarge, MemoryError):
        raise
    except Exception:  # an op without a meta kernel, or bad kwargs: the real build reports them
        return None
    finally:
        for hook in hooks:
            hook.remove()
    return module_bytes(model)


def backbone_name(cls: object) -> str | None:
    """The registry name of ``cls`` when it is a registered backbone class, else ``None``."""
    for name in BACKBONES:
        if BACKBONES.get(name) is cls:
            return name
    return None


def check_module_size(
    build: Callable[[], nn.Module], *, what: str, source: str | Path | None = None
) -> None:
    """Refuse, naming ``source``, a module whose estimated bytes (:func:`estimate_module_bytes`,
    nothing allocated) pass the size guard's limit; a constructor that cannot run on the meta
    device is not estimated (its real build reports its own errors).

    Raises:
        AllocationTooLarge: with the estimate, ``what`` and ``source``.
    """
    estimate = estimate_module_bytes(build, what=what, source=source)
    if estimate is not None:
        check_allocation(estimate, what=what, source=source)


def build_backbone(
    architecture: str, kwargs: Mapping[str, Any], *, source: str = "the config"
) -> nn.Module:
    """Instantiate the registered backbone ``architecture`` (installed domain plugins are
    discovered when the name is not registered yet, e.g. ``"swin_vit_3d"``), after estimating
    its size without allocating (:func:`estimate_module_bytes`).

    Raises:
        AllocationTooLarge: naming ``source``, when the estimate passes the size guard's limit.
        ValueError: naming ``source`` for an unknown architecture, arguments its constructor
            does not take (a recorded config from another version, or edited) or values it
            refuses.
    """
    if not isinstance(architecture, str) or not isinstance(kwargs, Mapping):
        raise ValueError(f"{source}: the backbone needs an architecture name and a kwargs mapping")
    if architecture not in BACKBONES:
        discover_plugins()
    if architecture not in BACKBONES:
        known = ", ".join(BACKBONES)
        raise ValueError(
            f"{source}: unknown backbone architecture {architecture!r}; known: {known}"
        )
    cls = BACKBONES.get(architecture)
    check_module_size(
        lambda: cls(**kwargs), what=f"the {architecture} backbone it describes", source=source
    )
    try:
        model: nn.Module = cls(**kwargs)
    except MemoryError:
        raise
    except Exception as err:
        cause = (str(err).strip().splitlines() or [type(err).__name__])[0]  # torch adds C++ lines
        raise ValueError(
            f"{source}: {architecture} cannot be built from {dict(kwargs)}: {cause}"
        ) from err
    return model
