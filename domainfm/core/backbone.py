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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn

from domainfm.core.grid import TokenGrid
from domainfm.core.plugins import discover_plugins
from domainfm.core.registry import Registry

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


def build_backbone(
    architecture: str, kwargs: Mapping[str, Any], *, source: str = "the config"
) -> nn.Module:
    """Instantiate the registered backbone ``architecture`` (installed domain plugins are
    discovered when the name is not registered yet, e.g. ``"swin_vit_3d"``).

    Raises:
        ValueError: naming ``source`` for an unknown architecture or arguments its
            constructor does not take (a recorded config from another version, or edited).
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
    try:
        model: nn.Module = BACKBONES.get(architecture)(**kwargs)
    except TypeError as err:
        raise ValueError(
            f"{source}: {architecture} cannot be built from {dict(kwargs)}: {err}"
        ) from err
    return model
