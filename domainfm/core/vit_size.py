"""The size of a ViT encoder as one checked, frozen object, and its keyword arguments.

Every ViT-family encoder (:class:`~domainfm.core.vit.VisionTransformerND` and its
subclasses, the timm-based ``TimmViT`` and its subclasses, CROMA's) takes the transformer's
size as the same keyword arguments: width, depth and heads (:class:`ViTDimsArgs`), MLP ratio
and stochastic depth (:class:`ViTShapeArgs`), qkv bias and LayerNorm epsilon
(:class:`ViTSizeArgs`), as far as its release lets them vary. The constructor declares them
once as ``**size_args: Unpack[ViTSizeArgs]`` (configs and exports still spell them flat:
``embed_dim: 1024``), builds one :class:`ViTSize` with :meth:`ViTSize.from_keywords` (its
own defaults, e.g. ViT-L, and the values its release fixes) and hands it on: to its base
constructor (``**size.kwargs()``), to the block stack (:func:`~domainfm.core.vit.vit_blocks`)
or to timm's ``VisionTransformer`` (``**size.timm_kwargs()``). The checks that name a bad
argument live here, once.

Example::

    >>> size = ViTSize(embed_dim=64, depth=2, num_heads=4)
    >>> size.head_dim, size.timm_kwargs()["norm_layer"].keywords
    (16, {'eps': 1e-06})
    >>> ViTSize.from_keywords({"depth": 2}, accepted=ViTShapeArgs, owner="Enc", **VIT_LARGE).depth
    2
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Self, TypedDict

from torch import nn

from domainfm.core.constructor_arguments import ConstructorConfig


def check_count(name: str, value: object) -> None:
    """Refuse anything but an integer >= 1 (not a bool), naming the argument.

    Raises:
        ValueError: ``name must be an integer >= 1, got name=value``.
    """
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {name}={value!r}")


class ViTDimsArgs(TypedDict, total=False):
    """Width, depth and heads: the size keywords of an encoder whose release fixes all else
    (``**size: Unpack[ViTDimsArgs]``); the fields of :class:`ViTSize` of those names."""

    embed_dim: int
    depth: int
    num_heads: int


class ViTShapeArgs(ViTDimsArgs, total=False):
    """The size keywords of an encoder whose release fixes its qkv bias and LayerNorm
    epsilon (``**size: Unpack[ViTShapeArgs]``)."""

    mlp_ratio: float
    drop_path_rate: float


class ViTSizeArgs(ViTShapeArgs, total=False):
    """All size keywords of a ViT encoder (``**size: Unpack[ViTSizeArgs]``)."""

    qkv_bias: bool
    norm_eps: float


VIT_LARGE: dict[str, Any] = {"embed_dim": 1024, "depth": 24, "num_heads": 16}
"""ViT-L's width, depth and heads (the other fields as ViT-B's)."""


@dataclass(frozen=True, kw_only=True)
class ViTSize(ConstructorConfig):
    """Transformer size of a ViT encoder (defaults: ViT-Base with timm's LayerNorm epsilon).

    Attributes:
        embed_dim: token width ``D``.
        depth: number of transformer blocks.
        num_heads: attention heads per block (dividing ``embed_dim``).
        mlp_ratio: hidden width of the MLP relative to ``D``.
        qkv_bias: bias on the qkv projection.
        drop_path_rate: stochastic depth of the last block (rising linearly from 0).
        norm_eps: epsilon of every LayerNorm (1e-6 as timm's and MAE's ViTs).

    Raises:
        ValueError: ``embed_dim``, ``depth`` or ``num_heads`` not an integer >= 1,
            ``embed_dim`` not divisible by ``num_heads``, ``mlp_ratio`` or ``norm_eps`` not a
            finite number > 0, ``drop_path_rate`` outside ``[0, 1)`` (a config's typo becomes
            one clear message instead of a ``ZeroDivisionError`` deep in a constructor).
    """

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_path_rate: float = 0.0
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        for name in ("embed_dim", "depth", "num_heads"):
            check_count(name, getattr(self, name))
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"embed_dim={self.embed_dim} must be divisible by num_heads={self.num_heads} "
                "(each head gets embed_dim / num_heads channels)"
            )
        for name, number in (("mlp_ratio", self.mlp_ratio), ("norm_eps", self.norm_eps)):
            if not isinstance(number, numbers.Real) or not 0 < number < math.inf:
                raise ValueError(f"{name} must be a finite number > 0, got {name}={number!r}")
        rate = self.drop_path_rate
        if not isinstance(rate, numbers.Real) or not 0 <= rate < 1:
            raise ValueError(f"drop_path_rate must be in [0, 1), got drop_path_rate={rate!r}")

    @classmethod
    def from_keywords(
        cls, keywords: Mapping[str, Any], *, accepted: type, owner: str, **defaults: Any
    ) -> Self:
        """The size an encoder's ``**size`` keywords ask for, over its ``defaults`` (the
        fields given neither way keep :class:`ViTSize`'s).

        Args:
            keywords: the constructor's ``**size``.
            accepted: the TypedDict it declared them with (:class:`ViTDimsArgs`,
                :class:`ViTShapeArgs` or :class:`ViTSizeArgs`); a key outside it is refused.
            owner: the constructor's class name, for the message.
            defaults: the encoder's own defaults and the values its release fixes.

        Raises:
            TypeError: ``owner() got unexpected keyword arguments [...]`` (a value its release
                fixes, or no size field at all).
        """
        keys: frozenset[str] = accepted.__required_keys__ | accepted.__optional_keys__  # type: ignore[attr-defined]
        unknown = sorted(set(keywords) - keys)
        if unknown:
            raise TypeError(f"{owner}() got unexpected keyword arguments {unknown}")
        return cls(**{**defaults, **keywords})

    @property
    def head_dim(self) -> int:
        """Channels per attention head."""
        return self.embed_dim // self.num_heads

    def timm_kwargs(self) -> dict[str, Any]:
        """The size as arguments of timm's ``VisionTransformer`` (``norm_eps`` becomes its
        ``norm_layer``)."""
        kwargs = self.kwargs()
        eps = kwargs.pop("norm_eps")
        return {**kwargs, "norm_layer": partial(nn.LayerNorm, eps=eps)}
