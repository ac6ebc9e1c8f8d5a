"""The base of multi-scale backbones: stage pyramids (CNN levels, Swin stages) behind the
backbone contract.

A subclass wraps an encoder that returns one map per stage, shallow→deep, and declares
``feature_channels`` / ``feature_strides`` (per map), ``patch_size`` (the last map's stride
per axis), ``embed_dim`` and ``spatial_dims``; it implements :meth:`MultiScaleBackbone.
stage_maps`. The base gives the rest of the contract once:

Shapes (``S`` maps, map ``i`` with ``C_i`` channels and total stride ``s_i``)::

    x                          (B, in_chans, *spatial), every side divisible by s_{S-1}
    forward_intermediates(x)   the selected maps (B, C_i, *spatial / s_i), shallow→deep
    forward_tokens(x)          tokens (B, N, C_{S-1}) of the last map (C order)
    forward(x)                 (B, C_{S-1}) mean of the last map

``forward_intermediates(x, indices)`` selects with :func:`select_levels`: the last ``n``
maps for an int, those maps for a sequence (negative positions count from the deepest), all
for ``None``; anything out of range is a ``ValueError``.

A stage pyramid has no tokens to drop, so ``forward_tokens(x, keep_idx)`` refuses
``keep_idx`` (:attr:`MultiScaleBackbone.no_token_dropping` says why); a subclass that can
gather kept tokens after a full pass overrides it.

Example::

    >>> select_levels(2, 5)
    range(3, 5)
    >>> select_levels([0, -1], 5)
    [0, -1]
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from domainfm.core.backbone import backbone_grid
from domainfm.core.grid import TokenGrid


def select_levels(indices: int | Sequence[int] | None, levels: int) -> Sequence[int]:
    """Positions of the maps ``indices`` selects out of ``levels`` (see the module docstring).

    Raises:
        ValueError: an int outside ``1..levels`` or a position outside ``-levels..levels-1``.
    """
    if indices is None:
        return range(levels)
    if isinstance(indices, int):
        if not 1 <= indices <= levels:
            raise ValueError(f"indices must be in 1..{levels}, got indices={indices}")
        return range(levels - indices, levels)
    picked = [int(i) for i in indices]
    if any(not -levels <= i < levels for i in picked):
        raise ValueError(f"indices must name stages 0..{levels - 1}, got {indices}")
    return picked


class MultiScaleBackbone(nn.Module):
    """A backbone over the maps of a stage pyramid (see the module docstring).

    Attributes:
        spatial_dims: grid axes of the input.
        no_token_dropping: why ``keep_idx`` is refused (ends the error message).
        feature_channels, feature_strides: channels and total stride of each map.
        embed_dim: channels of the last map.
        patch_size: the last map's stride per axis.
    """

    spatial_dims: int
    no_token_dropping: str = "a convolution needs the full grid"
    feature_channels: tuple[int, ...]
    feature_strides: tuple[int, ...]
    embed_dim: int
    patch_size: tuple[int, ...]
    num_prefix_tokens: int = 0

    def stage_maps(self, x: Tensor, norm: bool) -> list[Tensor]:
        """Every map ``(B, C_i, *spatial / s_i)``, shallow→deep."""
        raise NotImplementedError

    def stage_modules(self) -> list[nn.Module]:
        """The submodules whose outputs are the maps of :meth:`stage_maps`, shallow→deep.

        A forward hook on one sees its map as it is computed and may replace it before the
        next stage reads it (SparK's re-masking, :func:`~domainfm.core.sparse_masking.
        remasked`). ``NotImplementedError`` for a backbone that does not name them.
        """
        raise NotImplementedError(f"{type(self).__name__} does not name its stage modules")

    def token_grid(self, input_shape: Sequence[int]) -> TokenGrid:
        """Grid of the last map; ``ValueError`` unless every side divides by its stride."""
        return backbone_grid(self, input_shape)

    def forward_intermediates(
        self, x: Tensor, indices: int | Sequence[int] | None = None, norm: bool = False
    ) -> list[Tensor]:
        """The maps ``indices`` selects (:func:`select_levels`), shallow→deep; ``norm`` is
        passed to :meth:`stage_maps`."""
        self.token_grid(x.shape[2:])
        picked = select_levels(indices, len(self.feature_channels))
        maps = self.stage_maps(x, norm)
        return [maps[i] for i in picked]

    def forward_tokens(self, x: Tensor, keep_idx: Tensor | None = None) -> tuple[Tensor, TokenGrid]:
        """Last-map tokens ``(B, N, D)`` and their grid; token dropping is not supported."""
        if keep_idx is not None:
            raise ValueError(
                f"{type(self).__name__} cannot drop tokens ({self.no_token_dropping}); "
                "use a masked-input objective instead of keep_idx"
            )
        grid = self.token_grid(x.shape[2:])
        last = self.forward_intermediates(x, indices=1)[0]  # (B, D, *grid)
        return last.flatten(2).transpose(1, 2), grid  # (B, N, D)

    def pool_tokens(self, tokens: Tensor) -> Tensor:
        """``forward_tokens`` output ``(B, N, D)`` → mean ``(B, D)``."""
        return tokens.mean(dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """Mean of the last map ``(B, D)``."""
        tokens, _ = self.forward_tokens(x)
        return self.pool_tokens(tokens)
