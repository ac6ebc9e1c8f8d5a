"""Exponential-moving-average (EMA) target networks and their momentum schedule.

Used by BYOL (Grill et al. 2020, arXiv:2006.07733), MoCo (He et al. 2020, arXiv:1911.05722),
DINO and friends: a *teacher* whose weights follow the student as

    teacher <- m * teacher + (1 - m) * student,

with the momentum ``m`` raised from ``base`` to ``final`` by :func:`cosine_momentum`.

Example::

    student = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 16))
    teacher = EMATeacher(student)
    for step in range(total_steps):
        loss = objective(student(x1), teacher(x2)).loss   # teacher output needs no grad
        loss.backward(); opt.step(); opt.zero_grad()
        teacher.update(student, cosine_momentum(step, total_steps))
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import Tensor, nn


def cosine_momentum(step: int, total_steps: int, base: float = 0.996, final: float = 1.0) -> float:
    """BYOL's cosine momentum schedule.

    ``tau = final - (final - base) * (cos(pi * k / K) + 1) / 2`` with ``k = clamp(step, 0, K)``;
    for ``final = 1`` this is BYOL's ``1 - (1 - base) * (cos(pi * k / K) + 1) / 2``. It equals
    ``base`` at step 0, ``(base + final) / 2`` half way, and ``final`` from step ``K`` on.

    Args:
        step: current optimizer step (clamped to ``[0, total_steps]``).
        total_steps: ``K``, number of steps of the schedule; must be >= 1.
        base: momentum at step 0, in ``[0, 1]``.
        final: momentum at step ``K``, in ``[0, 1]``.

    Example::

        cosine_momentum(0, 100)    # 0.996
        cosine_momentum(100, 100)  # 1.0
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    for name, value in (("base", base), ("final", final)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    k = min(max(step, 0), total_steps)
    return final - (final - base) * (math.cos(math.pi * k / total_steps) + 1.0) / 2.0


class EMATeacher(nn.Module):
    """A frozen deep copy of a student module, updated as an EMA of the student's weights.

    The copy is held as ``self.teacher``; all its parameters have ``requires_grad=False``
    (filter on ``requires_grad`` when building the optimizer, since they still appear in
    ``parameters()``). :meth:`forward` delegates to the copy in whatever train/eval mode this
    module is in (``EMATeacher.train()`` / ``.eval()`` propagate as usual). Parameters and
    buffers land in ``state_dict`` under ``teacher.``.

    Args:
        student: the module to copy. Pass the bare module, not a DDP wrapper.

    Example::

        teacher = EMATeacher(student)
        teacher.update(student, momentum=0.996)
        with torch.no_grad():
            target = teacher(x)
    """

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.teacher = copy.deepcopy(student)
        self.teacher.requires_grad_(False)

    @torch.no_grad()
    def update(self, student: nn.Module, momentum: float) -> None:
        """Set ``teacher = momentum * teacher + (1 - momentum) * student``; copy buffers.

        Args:
            student: module with the same parameter and buffer layout as the teacher.
            momentum: ``m`` in ``[0, 1]``; 1 keeps the teacher, 0 copies the student.
        """
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        t_params: list[Tensor] = list(self.teacher.parameters())
        s_params: list[Tensor] = [p.detach() for p in student.parameters()]
        t_buffers = list(self.teacher.buffers())
        s_buffers = list(student.buffers())
        if len(t_params) != len(s_params) or len(t_buffers) != len(s_buffers):
            raise ValueError(
                "student does not match the teacher: "
                f"{len(s_params)} parameters / {len(s_buffers)} buffers vs "
                f"{len(t_params)} / {len(t_buffers)}"
            )
        for t, s in zip(t_params, s_params, strict=True):
            if t.shape != s.shape:
                raise ValueError(f"parameter shape mismatch: teacher {t.shape}, student {s.shape}")
        if t_params:
            # lerp: t + w * (s - t) with w = 1 - m  ==  m * t + (1 - m) * s
            torch._foreach_lerp_(t_params, s_params, 1.0 - momentum)
        for tb, sb in zip(t_buffers, s_buffers, strict=True):
            tb.copy_(sb)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Call the teacher copy with the given arguments."""
        return self.teacher(*args, **kwargs)
