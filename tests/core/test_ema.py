"""EMA teacher and BYOL's cosine momentum schedule."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

from domainfm.core.ema import EMATeacher, cosine_momentum


def test_cosine_momentum_endpoints_and_midpoint() -> None:
    assert cosine_momentum(0, 100) == pytest.approx(0.996)
    assert cosine_momentum(50, 100) == pytest.approx(0.998)
    assert cosine_momentum(100, 100) == pytest.approx(1.0)
    # BYOL's formula at an arbitrary step
    expected = 1 - (1 - 0.99) * (math.cos(math.pi * 30 / 100) + 1) / 2
    assert cosine_momentum(30, 100, base=0.99) == pytest.approx(expected)
    # clamped outside [0, total]
    assert cosine_momentum(-7, 100) == pytest.approx(0.996)
    assert cosine_momentum(1000, 100) == pytest.approx(1.0)
    # a final value other than 1
    assert cosine_momentum(5, 10, base=0.9, final=0.99) == pytest.approx(0.945)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"total_steps": 0}, r"total_steps.*0"),
        ({"base": 1.5}, r"base.*1\.5"),
        ({"final": -0.1}, r"final.*-0\.1"),
    ],
)
def test_cosine_momentum_bad_arguments(kwargs: dict[str, Any], pattern: str) -> None:
    args: dict[str, Any] = {"step": 0, "total_steps": 10, **kwargs}
    with pytest.raises(ValueError, match=pattern):
        cosine_momentum(**args)


def _student() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))


def test_teacher_is_a_frozen_copy() -> None:
    student = _student()
    teacher = EMATeacher(student)
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        assert not t.requires_grad
        assert t.data_ptr() != s.data_ptr()
        torch.testing.assert_close(t, s)
    x = torch.randn(5, 8)
    y = teacher(x)
    assert not y.requires_grad
    student(x).sum().backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters())


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9, 0.996, 1.0])
def test_update_is_the_explicit_ema(momentum: float) -> None:
    student = _student()
    teacher = EMATeacher(student)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    student.train()(torch.randn(6, 8))  # moves the BatchNorm running statistics
    before = [p.clone() for p in teacher.parameters()]

    teacher.update(student, momentum)

    for old, new, s in zip(before, teacher.parameters(), student.parameters(), strict=True):
        torch.testing.assert_close(new, momentum * old + (1 - momentum) * s.detach())
        assert not new.requires_grad
    for tb, sb in zip(teacher.buffers(), student.buffers(), strict=True):
        torch.testing.assert_close(tb, sb)


def test_forward_follows_the_mode_given() -> None:
    student = _student()
    teacher = EMATeacher(student)
    x = torch.randn(6, 8)
    teacher.eval()
    assert not teacher.teacher.training
    torch.testing.assert_close(teacher(x), student.eval()(x))
    teacher.train()
    assert teacher.teacher.training
    torch.testing.assert_close(teacher(x), student.train()(x))


@pytest.mark.parametrize("momentum", [-0.1, 1.5])
def test_bad_momentum(momentum: float) -> None:
    student = _student()
    with pytest.raises(ValueError, match=rf"momentum.*{momentum}"):
        EMATeacher(student).update(student, momentum)


def test_mismatched_student() -> None:
    teacher = EMATeacher(nn.Linear(4, 4))
    with pytest.raises(ValueError, match="shape mismatch"):
        teacher.update(nn.Linear(4, 3), 0.9)
    with pytest.raises(ValueError, match="does not match"):
        teacher.update(nn.Linear(4, 4, bias=False), 0.9)
