"""Linear warmup followed by cosine decay, as a ``LambdaLR`` multiplier."""

from __future__ import annotations

import math


def warmup_cosine(
    step: int, *, warmup_steps: int, total_steps: int, min_factor: float = 0.0
) -> float:
    """LR multiplier at ``step``: linear 0→1 over ``warmup_steps``, then cosine to ``min_factor``.

    Example::

        >>> warmup_cosine(0, warmup_steps=10, total_steps=100)
        0.1
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))
