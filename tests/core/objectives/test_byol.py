"""BYOL's symmetric loss against a loop-by-loop transcription of Grill et al. 2020, eq. (2)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from domainfm.core.objectives.base import ParallelMode
from domainfm.core.objectives.byol import BYOL
from domainfm.core.objectives.registry import OBJECTIVES


def reference_byol(p1: Tensor, p2: Tensor, z1t: Tensor, z2t: Tensor) -> Tensor:
    """mean_b [ ||p1_b/|p1_b| - z2_b/|z2_b| ||^2 + ||p2_b/|p2_b| - z1_b/|z1_b| ||^2 ]."""
    total = torch.zeros((), dtype=p1.dtype)
    for b in range(p1.shape[0]):
        for p, z in ((p1[b], z2t[b].detach()), (p2[b], z1t[b].detach())):
            diff = p / torch.sqrt((p * p).sum()) - z / torch.sqrt((z * z).sum())
            total = total + (diff * diff).sum()
    return total / p1.shape[0]


def _inputs(n: int = 6, d: int = 16) -> list[Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(n, d, generator=gen, dtype=torch.float64) for _ in range(4)]


def test_matches_paper_formula_loss_and_grads() -> None:
    xs = _inputs()
    ours = [x.clone().requires_grad_() for x in xs]
    refs = [x.clone().requires_grad_() for x in xs]

    out = BYOL()(*ours)
    expected = reference_byol(*refs)
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(out.terms["loss_12"] + out.terms["loss_21"], out.loss)

    out.loss.backward()
    expected.backward()
    for a, r in zip(ours[:2], refs[:2], strict=True):
        assert a.grad is not None
        torch.testing.assert_close(a.grad, r.grad)
    # stop-gradient on the targets
    assert ours[2].grad is None and ours[3].grad is None


def test_loss_is_two_minus_two_cosine() -> None:
    p1 = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    z2t = torch.tensor([[math.cos(1.0), math.sin(1.0)]], dtype=torch.float64)
    loss_12 = BYOL()(p1, p1, p1, z2t).terms["loss_12"]
    torch.testing.assert_close(
        loss_12, torch.tensor(2.0 - 2.0 * math.cos(1.0), dtype=torch.float64)
    )


def test_zero_when_predictions_are_scaled_targets() -> None:
    _, _, z1t, z2t = _inputs()
    loss = BYOL()(3.0 * z2t, 0.5 * z1t, z1t, z2t).loss
    torch.testing.assert_close(loss, torch.zeros((), dtype=torch.float64))


def test_float32_under_bf16_autocast() -> None:
    xs = [x.bfloat16() for x in _inputs()]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = BYOL()(*xs).loss
    assert loss.dtype == torch.float32


def test_metadata_and_shapes() -> None:
    assert BYOL.parallel_mode is ParallelMode.LOCAL
    assert OBJECTIVES.get("byol") is BYOL
    with pytest.raises(ValueError, match="same shape"):
        BYOL()(torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 7))
