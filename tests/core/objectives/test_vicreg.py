"""VICReg against a loop-by-loop transcription of Bardes et al. 2022, eq. (1)-(6)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from domainfm.core.objectives.base import ParallelMode
from domainfm.core.objectives.registry import OBJECTIVES
from domainfm.core.objectives.vicreg import VICReg


def reference_vicreg(z1: Tensor, z2: Tensor, eps: float) -> dict[str, Tensor]:
    """s = mean squared distance; v = mean_d max(0, 1 - sqrt(Var(z_d) + eps)) (unbiased),
    averaged over the views; c = sum_{i != j} C(Z)_ij^2 / d summed over the views."""
    n, d = z1.shape

    def v_and_c(z: Tensor) -> tuple[Tensor, Tensor]:
        means = [torch.stack([z[b, i] for b in range(n)]).sum() / n for i in range(d)]
        v = torch.zeros((), dtype=z.dtype)
        for i in range(d):
            var = torch.stack([(z[b, i] - means[i]) ** 2 for b in range(n)]).sum() / (n - 1)
            v = v + torch.clamp(1 - torch.sqrt(var + eps), min=0)
        c = torch.zeros((), dtype=z.dtype)
        for i in range(d):
            for j in range(d):
                if i != j:
                    cov = torch.stack(
                        [(z[b, i] - means[i]) * (z[b, j] - means[j]) for b in range(n)]
                    ).sum()
                    c = c + (cov / (n - 1)) ** 2
        return v / d, c / d

    sq = [(z1[b, i] - z2[b, i]) ** 2 for b in range(n) for i in range(d)]
    s = torch.stack(sq).sum() / (n * d)
    v1, c1 = v_and_c(z1)
    v2, c2 = v_and_c(z2)
    return {"invariance": s, "variance": (v1 + v2) / 2, "covariance": c1 + c2}


def _views(n: int = 6, d: int = 8) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(0)
    # half of the dims have std < 1 (variance hinge active), half > 1 (inactive)
    scale = torch.tensor([0.2, 0.5, 0.8, 0.3, 2.0, 3.0, 1.5, 4.0], dtype=torch.float64)[:d]
    base = torch.randn(n, d, generator=gen, dtype=torch.float64) * scale
    return (
        base + 0.2 * torch.randn(n, d, generator=gen, dtype=torch.float64),
        base + 0.2 * torch.randn(n, d, generator=gen, dtype=torch.float64),
    )


@pytest.mark.parametrize(
    "weights", [(25.0, 25.0, 1.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)]
)
def test_matches_paper_formula_loss_and_grads(weights: tuple[float, float, float]) -> None:
    sim, var, cov = weights
    z1, z2 = _views()
    a1, a2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    r1, r2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()

    out = VICReg(sim_weight=sim, var_weight=var, cov_weight=cov, eps=1e-4)(a1, a2)
    ref = reference_vicreg(r1, r2, eps=1e-4)
    assert set(out.terms) == {"invariance", "variance", "covariance"}
    for name, value in ref.items():
        torch.testing.assert_close(out.terms[name], value)
    expected = sim * ref["invariance"] + var * ref["variance"] + cov * ref["covariance"]
    torch.testing.assert_close(out.loss, expected)
    assert float(ref["variance"].detach()) > 0  # the hinge is exercised

    out.loss.backward()
    expected.backward()
    assert a1.grad is not None and a2.grad is not None
    torch.testing.assert_close(a1.grad, r1.grad)
    torch.testing.assert_close(a2.grad, r2.grad)


def test_collapsed_embeddings_are_finite() -> None:
    z = torch.ones(4, 8, requires_grad=True)
    out = VICReg()(z, z)
    out.loss.backward()
    torch.testing.assert_close(out.terms["variance"], torch.tensor(1.0 - 1e-2))
    assert z.grad is not None and torch.isfinite(z.grad).all()


def test_float32_under_bf16_autocast() -> None:
    z1, z2 = (t.bfloat16() for t in _views())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = VICReg()(z1, z2).loss
    assert loss.dtype == torch.float32


def test_metadata_and_shapes() -> None:
    assert VICReg.parallel_mode is ParallelMode.GLOBAL_STATS
    assert OBJECTIVES.get("vicreg") is VICReg
    with pytest.raises(ValueError, match="z1 and z2"):
        VICReg()(torch.randn(4, 8), torch.randn(3, 8))
    with pytest.raises(ValueError, match=">= 2 samples, got 1"):
        VICReg()(torch.randn(1, 8), torch.randn(1, 8))


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"sim_weight": -1.0}, r"sim_weight.*-1\.0"),
        ({"var_weight": -2.0}, r"var_weight.*-2\.0"),
        ({"cov_weight": -3.0}, r"cov_weight.*-3\.0"),
        ({"eps": 0.0}, r"eps.*0\.0"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        VICReg(**kwargs)
