"""InfoNCE / NT-Xent against a loop-by-loop transcription of SimCLR's eq. (1)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from domainfm.core.objectives.base import ObjectiveOutput, ParallelMode
from domainfm.core.objectives.infonce import InfoNCE
from domainfm.core.objectives.registry import OBJECTIVES
from domainfm.core.registry import init_config


def reference_nt_xent(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """Chen et al. 2020, eq. (1): mean over all 2N anchors of
    -log(exp(sim(i, j(i)) / t) / sum_{k != i} exp(sim(i, k) / t))."""
    n = z1.shape[0]
    z = [z1[b] for b in range(n)] + [z2[b] for b in range(n)]
    unit = [v / torch.sqrt((v * v).sum()) for v in z]
    terms = []
    for i in range(2 * n):
        partner = (i + n) % (2 * n)
        numerator = torch.exp((unit[i] * unit[partner]).sum() / temperature)
        denominator = sum(
            torch.exp((unit[i] * unit[k]).sum() / temperature) for k in range(2 * n) if k != i
        )
        terms.append(-torch.log(numerator / denominator))
    return torch.stack(terms).mean()


def _pairs(n: int = 6, d: int = 16, seed: int = 0) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(n, d, generator=gen, dtype=torch.float64)
    z1 = base + 0.7 * torch.randn(n, d, generator=gen, dtype=torch.float64)
    z2 = 3.0 * base + 0.7 * torch.randn(n, d, generator=gen, dtype=torch.float64)
    return z1, z2


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_matches_paper_formula_loss_and_grads(temperature: float) -> None:
    z1, z2 = _pairs()
    a1, a2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    r1, r2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()

    out = InfoNCE(temperature=temperature)(a1, a2)
    expected = reference_nt_xent(r1, r2, temperature)

    assert isinstance(out, ObjectiveOutput)
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    expected.backward()
    assert a1.grad is not None and a2.grad is not None
    torch.testing.assert_close(a1.grad, r1.grad)
    torch.testing.assert_close(a2.grad, r2.grad)


def test_aligned_orthogonal_pairs_give_near_zero_loss() -> None:
    z = torch.eye(4, dtype=torch.float64)
    loss = InfoNCE(temperature=0.01)(z, 5.0 * z).loss
    # positives have similarity 1, all 2N - 2 negatives similarity 0
    torch.testing.assert_close(
        loss, torch.tensor(math.log1p(6 * math.exp(-100.0)), dtype=loss.dtype)
    )


def test_temperature_001_is_stable_for_near_duplicate_large_embeddings() -> None:
    gen = torch.Generator().manual_seed(1)
    base = 1e4 * torch.randn(1, 32, generator=gen)
    z1 = (base + 1e-3 * torch.randn(8, 32, generator=gen)).requires_grad_()
    z2 = (base + 1e-3 * torch.randn(8, 32, generator=gen)).requires_grad_()
    loss = InfoNCE(temperature=0.01)(z1, z2).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert z1.grad is not None and z2.grad is not None
    assert torch.isfinite(z1.grad).all() and torch.isfinite(z2.grad).all()
    # all 16 embeddings are (numerically) the same direction: loss ~ log(2N - 1)
    torch.testing.assert_close(loss.detach(), torch.tensor(math.log(15.0)), atol=1e-2, rtol=0)


def test_logits_are_float32_under_bf16_autocast() -> None:
    z1, z2 = (t.float() for t in _pairs())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = InfoNCE(temperature=0.1)(z1.bfloat16(), z2.bfloat16()).loss
    assert loss.dtype == torch.float32
    expected = reference_nt_xent(z1.bfloat16().double(), z2.bfloat16().double(), 0.1)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-5)


def test_terms_and_metadata() -> None:
    out = InfoNCE()(*_pairs())
    assert set(out.terms) == {"infonce", "top1_acc"}
    assert 0.0 <= float(out.terms["top1_acc"]) <= 1.0
    assert InfoNCE.parallel_mode is ParallelMode.GATHER
    assert OBJECTIVES.get("infonce") is InfoNCE


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_bad_temperature(temperature: float) -> None:
    with pytest.raises(ValueError, match=rf"temperature.*{temperature}"):
        InfoNCE(temperature=temperature)


def test_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="z1 and z2"):
        InfoNCE()(torch.randn(4, 8), torch.randn(5, 8))


def test_mixing_off_in_eval_mode_and_recorded_as_given() -> None:
    z1, z2 = _pairs()
    mochi = InfoNCE(temperature=0.2, mixing_hard=4, mixing_pairs=3, mixing_query=2)
    expected = InfoNCE(temperature=0.2)(z1, z2).loss
    torch.testing.assert_close(mochi.eval()(z1, z2).loss, expected)
    assert mochi.train()(z1, z2).loss > expected  # extra negatives raise the loss
    assert InfoNCE().mixing is None
    assert init_config(mochi)["kwargs"] == {
        "temperature": 0.2,
        "gather_distributed": True,
        "mixing_hard": 4,
        "mixing_pairs": 3,
        "mixing_query": 2,
    }
