"""RankMe against a direct float64 SVD and entropy written out here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from domainfm.tasks.monitors import RankMe, rankme


def _reference(z: np.ndarray, eps: float = 1e-7) -> float:
    sigma = np.linalg.svd(z.astype(np.float64), compute_uv=False)
    p = sigma / np.abs(sigma).sum() + eps
    return float(math.exp(-sum(pk * math.log(pk) for pk in p)))


def _orthogonal(n: int, d: int, r: int, seed: int = 0) -> torch.Tensor:
    """An (n, d) matrix with exactly r equal nonzero singular values."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(n, r, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(d, r, generator=g, dtype=torch.float64))
    return 3.0 * u @ v.T


def test_matches_direct_svd_entropy() -> None:
    g = torch.Generator().manual_seed(1)
    z = torch.randn(50, 12, generator=g) * torch.linspace(0.1, 2.0, 12)  # anisotropic
    got = rankme(z)
    assert got.dtype == torch.float64
    assert float(got) == pytest.approx(_reference(z.numpy()), rel=1e-9)
    assert 1.0 < float(got) < 12.0


@pytest.mark.parametrize("r", [1, 3, 7])
def test_equal_singular_values_give_rank(r: int) -> None:
    z = _orthogonal(40, 16, r)
    # p_k = 1/r + eps for k <= r and eps for the 16 - r zero singular values
    assert float(rankme(z)) == pytest.approx(r, rel=1e-4)
    assert float(rankme(z)) == pytest.approx(_reference(z.numpy()), rel=1e-9)


def test_rank_one_matrix_is_about_one() -> None:
    z = torch.outer(torch.randn(100), torch.randn(32))
    assert float(rankme(z)) == pytest.approx(1.0, abs=1e-4)


def test_zero_matrix_is_about_one_not_nan() -> None:
    value = float(rankme(torch.zeros(10, 4)))
    assert math.isfinite(value) and value == pytest.approx(1.0, abs=1e-4)


def test_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        rankme(torch.randn(3, 4, 5))
    with pytest.raises(ValueError, match="at least one"):
        rankme(torch.randn(0, 4))


@pytest.mark.filterwarnings("ignore:The ``compute`` method:UserWarning")
def test_metric_accumulates_like_concatenation() -> None:
    g = torch.Generator().manual_seed(2)
    chunks = [torch.randn(n, 8, generator=g) for n in (5, 11, 3, 20)]
    metric = RankMe()
    for chunk in chunks:
        metric.update(chunk)
    assert metric.num_samples == 39
    expected = _reference(torch.cat(chunks).numpy())
    assert float(metric.compute()) == pytest.approx(expected, rel=1e-9)
    metric.reset()
    assert metric.num_samples == 0
    with pytest.raises(RuntimeError, match="at least one update"):
        metric.compute()


def test_max_samples_keeps_first_rows() -> None:
    g = torch.Generator().manual_seed(3)
    first = torch.randn(6, 8, generator=g)
    # a rank-1 tail: would pull RankMe down if it were (wrongly) kept
    tail = torch.outer(torch.randn(30, generator=g), torch.randn(8, generator=g))
    metric = RankMe(max_samples=10)
    metric.update(first)
    metric.update(tail[:10])
    assert metric.is_full and metric.num_samples == 10
    metric.update(tail[10:])  # ignored
    assert metric.num_samples == 10
    expected = _reference(torch.cat([first, tail[:4]]).numpy())
    assert float(metric.compute()) == pytest.approx(expected, rel=1e-9)


def test_metric_rejects_width_change() -> None:
    metric = RankMe()
    metric.update(torch.randn(4, 8))
    with pytest.raises(ValueError, match="width"):
        metric.update(torch.randn(4, 9))
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        metric.update(torch.randn(8))
