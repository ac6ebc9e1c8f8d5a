"""Linear warmup followed by cosine decay, as a ``LambdaLR`` multiplier, and the AdamW +
warmup-cosine optimizer configuration every domainfm Lightning module returns."""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch


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


def adamw_warmup_cosine(
    groups: list[dict[str, Any]],
    *,
    lr: float,
    warmup_steps: int,
    total_steps: int,
    betas: tuple[float, float] = (0.9, 0.999),
) -> dict[str, Any]:
    """Lightning's ``configure_optimizers`` result: AdamW over ``groups`` (each group's
    ``lr_scale`` from :func:`~domainfm.tasks.param_groups.param_groups` becomes its ``lr``)
    with a per-step :func:`warmup_cosine` schedule over ``total_steps``."""
    for group in groups:
        group["lr"] = lr * group.pop("lr_scale")
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=betas)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, partial(warmup_cosine, warmup_steps=warmup_steps, total_steps=total_steps)
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
