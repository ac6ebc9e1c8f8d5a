"""Barlow Twins against a loop-by-loop transcription of Zbontar et al. 2021, eq. (1)-(2)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from domainfm.core.objectives.barlow_twins import BarlowTwins
from domainfm.core.objectives.base import ParallelMode
from domainfm.core.objectives.registry import OBJECTIVES


def reference_barlow(z1: Tensor, z2: Tensor, lambda_offdiag: float, eps: float) -> Tensor:
    """Per-dimension batch standardization (biased variance + eps, like BatchNorm1d), then
    C_ij = sum_b z1n_bi z2n_bj / N and sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2."""
    n, d = z1.shape

    def standardize(z: Tensor) -> list[list[Tensor]]:
        columns = []
        for i in range(d):
            mean = torch.stack([z[b, i] for b in range(n)]).sum() / n
            var = torch.stack([(z[b, i] - mean) ** 2 for b in range(n)]).sum() / n
            columns.append([(z[b, i] - mean) / torch.sqrt(var + eps) for b in range(n)])
        return columns

    a, b_ = standardize(z1), standardize(z2)
    loss = torch.zeros((), dtype=z1.dtype)
    for i in range(d):
        for j in range(d):
            c_ij = torch.stack([a[i][b] * b_[j][b] for b in range(n)]).sum() / n
            loss = loss + ((1 - c_ij) ** 2 if i == j else lambda_offdiag * c_ij**2)
    return loss


def _views(n: int = 6, d: int = 8) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(n, d, generator=gen, dtype=torch.float64)
    return (
        base + 0.5 * torch.randn(n, d, generator=gen, dtype=torch.float64),
        base + 0.5 * torch.randn(n, d, generator=gen, dtype=torch.float64) + 3.0,
    )


@pytest.mark.parametrize("lambda_offdiag", [0.0, 5e-3, 0.5])
def test_matches_paper_formula_loss_and_grads(lambda_offdiag: float) -> None:
    z1, z2 = _views()
    a1, a2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    r1, r2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()

    out = BarlowTwins(lambda_offdiag=lambda_offdiag)(a1, a2)
    expected = reference_barlow(r1, r2, lambda_offdiag, eps=1e-5)
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(
        out.terms["on_diag"] + lambda_offdiag * out.terms["off_diag"], out.loss
    )

    out.loss.backward()
    expected.backward()
    assert a1.grad is not None and a2.grad is not None
    torch.testing.assert_close(a1.grad, r1.grad)
    torch.testing.assert_close(a2.grad, r2.grad)


def test_identical_views_have_unit_diagonal() -> None:
    z1, _ = _views()
    out = BarlowTwins(eps=0.0)(z1, 2.0 * z1 + 1.0)  # standardization removes scale and shift
    torch.testing.assert_close(out.terms["on_diag"], torch.zeros((), dtype=torch.float64))


def test_float32_under_bf16_autocast() -> None:
    z1, z2 = (t.bfloat16() for t in _views())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = BarlowTwins()(z1, z2).loss
    assert loss.dtype == torch.float32


def test_metadata_and_shapes() -> None:
    assert BarlowTwins.parallel_mode is ParallelMode.GLOBAL_STATS
    assert OBJECTIVES.get("barlow_twins") is BarlowTwins
    with pytest.raises(ValueError, match="z1 and z2"):
        BarlowTwins()(torch.randn(4, 8), torch.randn(4, 9))
    with pytest.raises(ValueError, match=">= 2 samples, got 1"):
        BarlowTwins()(torch.randn(1, 8), torch.randn(1, 8))


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [({"lambda_offdiag": -0.1}, r"lambda_offdiag.*-0\.1"), ({"eps": -1.0}, r"eps.*-1\.0")],
)
def test_bad_arguments(kwargs: dict[str, Any], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        BarlowTwins(**kwargs)
