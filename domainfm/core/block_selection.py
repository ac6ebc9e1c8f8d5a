"""Which blocks a transformer's ``forward_intermediates`` returns.

:meth:`~domainfm.core.backbone.Backbone.forward_intermediates` takes ``indices``: an int
``n`` for the last ``n`` blocks, or block positions (negative ones count from the end).
:func:`select_blocks` turns that into sorted non-negative positions, or names what is out of
range; the multi-scale counterpart is :func:`~domainfm.core.multiscale.select_levels`.

Example::

    >>> select_blocks(2, depth=12)
    [10, 11]
    >>> select_blocks([-1, 3, 3], depth=12)
    [3, 11]
"""

from __future__ import annotations

from collections.abc import Sequence


def select_blocks(indices: int | Sequence[int], depth: int) -> list[int]:
    """Sorted, distinct positions in ``0..depth-1`` of the blocks ``indices`` selects.

    Raises:
        ValueError: a position outside ``-depth..depth-1``, or nothing selected.
    """
    wanted = list(range(depth - indices, depth)) if isinstance(indices, int) else list(indices)
    bad = [i for i in wanted if not -depth <= i < depth]
    if bad or not wanted:
        raise ValueError(f"indices {bad or indices} out of range for depth {depth}")
    return sorted({i % depth for i in wanted})
