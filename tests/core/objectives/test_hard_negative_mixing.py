"""MoCHi (Kalantidis et al. 2020, arXiv:2010.01028, Sec. 4) against loop-by-loop
transcriptions of the paper, for MoCo's queue and InfoNCE's in-batch negatives, and its
data-parallel contract in 2 Gloo processes.

The references sort each query's negatives by ``q.n`` in plain Python, keep the ``N``
hardest, build every synthetic negative one at a time from the injected draws
(``h = normalize(a n_i + (1 - a) n_j)``, ``h' = normalize(b sg(q) + (1 - b) n_j)``, the
ingredients constants) and add ``exp(q.h / t)`` to the denominator; loss and input gradients
must match the vectorized objectives in float64.
"""

from __future__ import annotations

import math
from pathlib import Path
from runpy import run_path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from domainfm.core import distributed
from domainfm.core.objectives.hard_negative_mixing import (
    HardNegativeMixing,
    HardNegativeMixingArgs,
    MixingDraws,
)
from domainfm.core.objectives.infonce import InfoNCE
from domainfm.core.objectives.moco import MoCo


def _unit(v: Tensor) -> Tensor:
    return v / torch.sqrt((v * v).sum())


def reference_synthetic(
    q: Tensor, negatives: list[Tensor], hard: int, draws: MixingDraws, row: int
) -> list[Tensor]:
    """``q.h`` for each synthetic negative of one (unit) query ``q``, Sec. 4.1 then 4.2."""
    sims = [float((q.detach() * n).sum()) for n in negatives]
    order = sorted(range(len(negatives)), key=lambda j: -sims[j])[:hard]
    hardest = [negatives[j].detach() for j in order]  # Q~^N, hardest first; constants
    out = []
    for m in range(draws.first.shape[1]):
        a = draws.alpha[row, m]
        n_i, n_j = hardest[int(draws.first[row, m])], hardest[int(draws.second[row, m])]
        out.append((q * _unit(a * n_i + (1 - a) * n_j)).sum())
    for m in range(draws.partner.shape[1]):
        b = draws.beta[row, m]
        n_j = hardest[int(draws.partner[row, m])]
        out.append((q * _unit(b * q.detach() + (1 - b) * n_j)).sum())
    return out


def reference_mochi_moco(
    q: Tensor, k: Tensor, queue: Tensor, t: float, hard: int, draws: MixingDraws
) -> Tensor:
    """mean_b -log(e^{q.k+/t} / (e^{q.k+/t} + sum_j e^{q.k_j/t} + sum_m e^{q.h_m/t}))."""
    terms = []
    for b in range(q.shape[0]):
        qb, kb = _unit(q[b]), _unit(k[b].detach())
        negatives = [queue[j] for j in range(len(queue))]
        positive = torch.exp((qb * kb).sum() / t)
        denominator = positive + sum(torch.exp((qb * n).sum() / t) for n in negatives)
        for logit in reference_synthetic(qb, negatives, hard, draws, b):
            denominator = denominator + torch.exp(logit / t)
        terms.append(-torch.log(positive / denominator))
    return torch.stack(terms).mean()


def reference_mochi_nt_xent(
    z1: Tensor, z2: Tensor, t: float, hard: int, draws: MixingDraws
) -> Tensor:
    """SimCLR eq. (1) with each anchor's synthetic negatives from its 2N - 2 negatives."""
    n = z1.shape[0]
    unit = [_unit(v) for v in [*z1, *z2]]
    terms = []
    for i in range(2 * n):
        partner = (i + n) % (2 * n)
        negatives = [unit[k] for k in range(2 * n) if k not in (i, partner)]
        numerator = torch.exp((unit[i] * unit[partner]).sum() / t)
        denominator = sum(torch.exp((unit[i] * unit[k]).sum() / t) for k in range(2 * n) if k != i)
        for logit in reference_synthetic(unit[i], negatives, min(hard, 2 * n - 2), draws, i):
            denominator = denominator + torch.exp(logit / t)
        terms.append(-torch.log(numerator / denominator))
    return torch.stack(terms).mean()


def make_draws(rows: int, hard: int, pairs: int, query: int, seed: int = 0) -> MixingDraws:
    """Fixed draws: ranks in ``[0, hard)``, ``a ~ U(0, 1)``, ``b ~ U(0, 0.5)``, float64."""
    gen = torch.Generator().manual_seed(seed)
    return MixingDraws(
        first=torch.randint(hard, (rows, pairs), generator=gen),
        second=torch.randint(hard, (rows, pairs), generator=gen),
        alpha=torch.rand(rows, pairs, generator=gen, dtype=torch.float64),
        partner=torch.randint(hard, (rows, query), generator=gen),
        beta=0.5 * torch.rand(rows, query, generator=gen, dtype=torch.float64),
    )


def _pairs(n: int = 6, d: int = 16, seed: int = 0) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(n, d, generator=gen, dtype=torch.float64)
    return (
        base + 0.7 * torch.randn(n, d, generator=gen, dtype=torch.float64),
        2.0 * base + 0.7 * torch.randn(n, d, generator=gen, dtype=torch.float64),
    )


SETTINGS = [(4, 5, 0), (4, 0, 5), (6, 3, 4), (1, 2, 2)]  # (N, s, s')


@pytest.mark.parametrize(("hard", "pairs", "query"), SETTINGS)
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_moco_mixing_matches_paper_loss_and_grads(
    hard: int, pairs: int, query: int, temperature: float
) -> None:
    torch.manual_seed(0)
    moco = MoCo(
        dim=16,
        queue_size=10,
        temperature=temperature,
        mixing_hard=hard,
        mixing_pairs=pairs,
        mixing_query=query,
    ).double()
    queue = moco.queue.clone()
    q, k = _pairs()
    draws = make_draws(q.shape[0], hard, pairs, query)
    qa, qr = q.clone().requires_grad_(), q.clone().requires_grad_()

    out = moco(qa, k, draws=draws)
    expected = reference_mochi_moco(qr, k, queue, temperature, hard, draws)
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    expected.backward()
    torch.testing.assert_close(qa.grad, qr.grad)


@pytest.mark.parametrize(("hard", "pairs", "query"), [*SETTINGS, (64, 3, 3)])  # 64: clamped
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_infonce_mixing_matches_paper_loss_and_grads(
    hard: int, pairs: int, query: int, temperature: float
) -> None:
    z1, z2 = _pairs()
    n = z1.shape[0]
    loss_fn = InfoNCE(
        temperature=temperature, mixing_hard=hard, mixing_pairs=pairs, mixing_query=query
    )
    draws = make_draws(2 * n, min(hard, 2 * n - 2), pairs, query)
    a1, a2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    r1, r2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()

    out = loss_fn(a1, a2, draws=draws)
    expected = reference_mochi_nt_xent(r1, r2, temperature, hard, draws)
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    expected.backward()
    torch.testing.assert_close(a1.grad, r1.grad)
    torch.testing.assert_close(a2.grad, r2.grad)


def test_synthetic_negatives_raise_the_loss_and_come_from_the_hardest() -> None:
    """Extra negatives can only raise the loss; ``b = 0`` gives back the hardest negatives."""
    z1, z2 = _pairs()
    plain = InfoNCE(temperature=0.2)(z1, z2).loss
    mixing = InfoNCE(temperature=0.2, mixing_hard=4, mixing_pairs=8, mixing_query=8)
    assert mixing(z1, z2).loss > plain

    mix = HardNegativeMixing(hard=3, query=3)
    queries = torch.nn.functional.normalize(z1, dim=1)
    negatives = torch.nn.functional.normalize(z2, dim=1)
    hardness = queries @ negatives.T
    draws = MixingDraws(
        first=torch.zeros(6, 0, dtype=torch.long),
        second=torch.zeros(6, 0, dtype=torch.long),
        alpha=torch.zeros(6, 0, dtype=torch.float64),
        partner=torch.arange(3).expand(6, 3),
        beta=torch.zeros(6, 3, dtype=torch.float64),
    )
    synthetic = mix.synthesize(queries, negatives, hardness, draws)
    expected = negatives[hardness.argsort(dim=1, descending=True)[:, :3]]
    torch.testing.assert_close(synthetic, expected)


def test_draws_follow_the_global_rng_and_their_ranges() -> None:
    mix = HardNegativeMixing(hard=5, pairs=300, query=300)
    torch.manual_seed(3)
    draws = mix.draw(7, 5, device=torch.device("cpu"), dtype=torch.float64)
    torch.manual_seed(3)
    again = mix.draw(7, 5, device=torch.device("cpu"), dtype=torch.float64)
    for got, want in zip(draws._fields(), again._fields(), strict=True):
        torch.testing.assert_close(got, want)
    assert draws.first.shape == draws.alpha.shape == (7, 300)
    assert draws.partner.shape == draws.beta.shape == (7, 300)
    for ranks in (draws.first, draws.second, draws.partner):
        assert ranks.min() == 0 and ranks.max() == 4
    assert draws.alpha.min() >= 0 and 0.9 < draws.alpha.max() < 1
    assert draws.beta.min() >= 0 and 0.45 < draws.beta.max() < 0.5

    z1, z2 = _pairs()
    loss_fn = InfoNCE(mixing_hard=4, mixing_pairs=3, mixing_query=2)
    torch.manual_seed(5)
    first = loss_fn(z1, z2).loss
    torch.manual_seed(5)
    torch.testing.assert_close(loss_fn(z1, z2).loss, first)


def test_no_negatives_nothing_to_mix() -> None:
    """A global batch of one pair has no negative: the loss is the plain one (0)."""
    z1, z2 = _pairs(n=1)
    out = InfoNCE(mixing_hard=4, mixing_pairs=2, mixing_query=2)(z1, z2)
    torch.testing.assert_close(out.loss, torch.zeros((), dtype=torch.float64))


@pytest.mark.parametrize(
    ("draws", "pattern"),
    [
        (make_draws(12, 4, 3, 2), r"draws.first must be \(12, 2\)"),
        (make_draws(12, 9, 2, 2), "must index the 4 hardest"),
    ],
)
def test_injected_draws_are_checked(draws: MixingDraws, pattern: str) -> None:
    loss_fn = InfoNCE(mixing_hard=4, mixing_pairs=2, mixing_query=2)
    with pytest.raises(ValueError, match=pattern):
        loss_fn(*_pairs(), draws=draws)


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"mixing_pairs": 4}, ValueError, "need mixing_hard"),
        ({"mixing_query": 2}, ValueError, "need mixing_hard"),
        ({"mixing_hard": 0, "mixing_pairs": 1}, ValueError, r"mixing_hard.*0"),
        ({"mixing_hard": 4, "mixing_pairs": -1}, ValueError, r"mixing_pairs.*-1"),
        ({"mixing_hard": 4}, ValueError, "synthesizes nothing"),
        ({"mixing_hard": 4, "mixing_pair": 2}, TypeError, "mixing_pair"),
    ],
)
def test_bad_options(kwargs: dict[str, Any], error: type[Exception], pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        HardNegativeMixing.from_keywords(kwargs)  # type: ignore[arg-type]
    with pytest.raises(error, match=pattern):
        InfoNCE(**kwargs)


# -- data parallelism: 2 Gloo ranks vs one process on the concatenated batch ---------------

GLOO = run_path(str(Path(__file__).parents[2] / "gloo_ranks.py"))
WORLD = 2
GLOBAL_BATCH = 8
DIM = 16
HARD, PAIRS, QUERY = 5, 4, 3
MIXING: HardNegativeMixingArgs = {"mixing_hard": HARD, "mixing_pairs": PAIRS, "mixing_query": QUERY}


def _objective(name: str) -> nn.Module:
    if name == "infonce":
        return InfoNCE(temperature=0.5, **MIXING)
    torch.manual_seed(123)  # the same initial queue everywhere
    return MoCo(dim=DIM, queue_size=12, temperature=0.2, **MIXING).double()


def _global_inputs() -> list[Tensor]:
    return list(_pairs(n=GLOBAL_BATCH, d=DIM, seed=11))


def _global_draws(name: str) -> MixingDraws:
    """Draws for every anchor of the global batch (InfoNCE: both views')."""
    rows = 2 * GLOBAL_BATCH if name == "infonce" else GLOBAL_BATCH
    return make_draws(rows, HARD, PAIRS, QUERY, seed=21)


def _run(name: str, inputs: list[Tensor], *, injected: bool) -> dict[str, Tensor]:
    leaves = [x.clone().requires_grad_(True) for x in inputs]
    objective = _objective(name)
    torch.manual_seed(7)  # the RNG state every rank shares when nothing is injected
    draws = _global_draws(name) if injected else None
    loss = objective(*leaves, draws=draws).loss
    loss.backward()
    grads = [x.grad if x.grad is not None else torch.zeros_like(x) for x in leaves]
    return {"loss": loss.detach(), "grads": torch.stack(grads)}


CASES = [(name, injected) for name in ("infonce", "moco") for injected in (True, False)]


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    with GLOO["gloo_group"](rank, init_file, world=WORLD):
        assert distributed.world_size() == WORLD
        b = GLOBAL_BATCH // WORLD
        local = [x[rank * b : (rank + 1) * b] for x in _global_inputs()]
        results = {case: _run(case[0], local, injected=case[1]) for case in CASES}
        GLOO["save_rank"](results, out_dir, rank)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[Any, dict[str, Tensor]]]:
    results: list[dict[Any, dict[str, Tensor]]] = GLOO["spawn_ranks"](
        _worker, tmp_path_factory.mktemp("mochi_dist"), world=WORLD
    )
    return results


@pytest.mark.parametrize(("name", "injected"), CASES)
def test_two_ranks_equal_one_process_on_the_global_batch(
    ranks: list[dict[Any, dict[str, Tensor]]], name: str, injected: bool
) -> None:
    """Same draws (injected, or the same RNG state on every rank): the mean rank loss is the
    single-process loss and each rank's gradient / W the single-process gradient of its
    rows; the hardest negatives of InfoNCE come from the gathered embeddings."""
    reference = _run(name, _global_inputs(), injected=injected)
    mean_loss = torch.stack([r[(name, injected)]["loss"] for r in ranks]).mean()
    torch.testing.assert_close(mean_loss, reference["loss"])
    b = GLOBAL_BATCH // WORLD
    for rank, result in enumerate(ranks):
        expected = reference["grads"][:, rank * b : (rank + 1) * b]
        torch.testing.assert_close(result[(name, injected)]["grads"] / WORLD, expected)
    plain = InfoNCE(temperature=0.5)(*_global_inputs()).loss if name == "infonce" else None
    if plain is not None:  # the mixing is on: the loss is not the plain one
        assert not math.isclose(float(plain), float(reference["loss"]), rel_tol=1e-6)
