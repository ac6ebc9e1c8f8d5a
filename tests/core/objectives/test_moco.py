"""MoCo's queue InfoNCE against a loop-by-loop transcription of He et al. 2020, eq. (1)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor

from domainfm.core.objectives.base import ParallelMode
from domainfm.core.objectives.hard_negative_mixing import HardNegativeMixingArgs
from domainfm.core.objectives.moco import MoCo
from domainfm.core.objectives.registry import OBJECTIVES
from domainfm.core.registry import init_config


def _unit(v: Tensor) -> Tensor:
    return v / torch.sqrt((v * v).sum())


def reference_moco(q: Tensor, k: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """mean_b -log(exp(q.k+ / t) / (exp(q.k+ / t) + sum_j exp(q.k_j / t)))."""
    terms = []
    for b in range(q.shape[0]):
        qb, kb = _unit(q[b]), _unit(k[b].detach())
        positive = torch.exp((qb * kb).sum() / temperature)
        negatives = sum(torch.exp((qb * queue[j]).sum() / temperature) for j in range(len(queue)))
        terms.append(-torch.log(positive / (positive + negatives)))
    return torch.stack(terms).mean()


def reference_fifo(queue: Tensor, ptr: int, keys: Tensor) -> tuple[Tensor, int]:
    """Write the keys one at a time at the pointer, wrapping around."""
    queue = queue.clone()
    for key in keys:
        queue[ptr] = _unit(key)
        ptr = (ptr + 1) % len(queue)
    return queue, ptr


def _qk(n: int = 6, d: int = 16, seed: int = 0) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(n, d, generator=gen, dtype=torch.float64)
    return (
        base + 0.5 * torch.randn(n, d, generator=gen, dtype=torch.float64),
        2.0 * base + 0.5 * torch.randn(n, d, generator=gen, dtype=torch.float64),
    )


@pytest.mark.parametrize("temperature", [0.07, 0.2, 1.0])
def test_matches_paper_formula_loss_and_grads(temperature: float) -> None:
    moco = MoCo(dim=16, queue_size=10, temperature=temperature).double()
    queue_before = moco.queue.clone()
    q, k = _qk()
    qa, ka = q.clone().requires_grad_(), k.clone().requires_grad_()
    qr = q.clone().requires_grad_()

    out = moco(qa, ka)
    expected = reference_moco(qr, k, queue_before, temperature)
    torch.testing.assert_close(out.loss, expected)

    out.loss.backward()  # after the in-place enqueue: the loss must not depend on the buffer
    expected.backward()
    assert qa.grad is not None
    torch.testing.assert_close(qa.grad, qr.grad)
    assert ka.grad is None  # keys are constants


def test_queue_initialized_to_unit_vectors_and_in_state_dict() -> None:
    moco = MoCo(dim=16, queue_size=32)
    assert moco.queue.shape == (32, 16)
    torch.testing.assert_close(moco.queue.norm(dim=1), torch.ones(32))
    state = moco.state_dict()
    assert set(state) == {"queue", "queue_ptr"}
    assert int(state["queue_ptr"]) == 0


def test_enqueue_wraps_around_when_queue_size_is_not_a_multiple_of_batch() -> None:
    moco = MoCo(dim=16, queue_size=10).double()
    expected_queue, expected_ptr = moco.queue.clone(), 0
    for step in range(4):  # 4 batches of 4 keys: pointer 0 -> 4 -> 8 -> 2 (wrapped) -> 6
        q, k = _qk(n=4, seed=step)
        moco(q, k)
        expected_queue, expected_ptr = reference_fifo(expected_queue, expected_ptr, k)
        torch.testing.assert_close(moco.queue, expected_queue)
        assert int(moco.queue_ptr) == expected_ptr
    assert expected_ptr == 6


def test_batch_larger_than_queue_keeps_the_last_keys() -> None:
    moco = MoCo(dim=16, queue_size=3).double()
    moco.enqueue(torch.zeros(1, 16, dtype=torch.float64))  # pointer at 1
    q, k = _qk(n=5)
    moco(q, k)
    expected_queue, expected_ptr = reference_fifo(moco.queue.new_zeros(3, 16), 1, k)
    torch.testing.assert_close(moco.queue, expected_queue)
    assert int(moco.queue_ptr) == expected_ptr == 0


def test_eval_mode_leaves_queue_untouched() -> None:
    moco = MoCo(dim=16, queue_size=8).eval()
    before = moco.queue.clone()
    moco(*(t.float() for t in _qk()))
    torch.testing.assert_close(moco.queue, before)
    assert int(moco.queue_ptr) == 0


def test_temperature_001_is_stable_for_near_duplicate_large_embeddings() -> None:
    gen = torch.Generator().manual_seed(1)
    base = 1e4 * torch.randn(1, 32, generator=gen)
    moco = MoCo(dim=32, queue_size=16, temperature=0.01)
    moco.enqueue(base.expand(16, 32) / base.norm())  # negatives identical to the positive
    q = (base + 1e-3 * torch.randn(8, 32, generator=gen)).requires_grad_()
    k = base + 1e-3 * torch.randn(8, 32, generator=gen)
    loss = moco(q, k).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert q.grad is not None and torch.isfinite(q.grad).all()
    torch.testing.assert_close(loss.detach(), torch.tensor(math.log(17.0)), atol=1e-2, rtol=0)


def test_float32_under_bf16_autocast() -> None:
    q, k = (t.bfloat16() for t in _qk())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = MoCo(dim=16, queue_size=8)(q, k).loss
    assert loss.dtype == torch.float32


def test_metadata() -> None:
    assert MoCo.parallel_mode is ParallelMode.LOCAL
    assert OBJECTIVES.get("moco") is MoCo
    with pytest.raises(ValueError, match=r"\(B, 16\)"):
        MoCo(dim=16, queue_size=4)(torch.randn(4, 8), torch.randn(4, 8))


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"dim": 16, "queue_size": 0}, r"queue_size.*0"),
        ({"dim": 16, "queue_size": -3}, r"queue_size.*-3"),
        ({"dim": 16, "temperature": 0.0}, r"temperature.*0\.0"),
        ({"dim": 16, "temperature": -0.5}, r"temperature.*-0\.5"),
        ({"dim": 0}, r"dim.*0"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        MoCo(**kwargs)


MOCHI: HardNegativeMixingArgs = {"mixing_hard": 4, "mixing_pairs": 3, "mixing_query": 2}


def test_mixing_keeps_the_state_and_enqueues_only_real_keys() -> None:
    """MoCHi adds no buffer (checkpoint keys unchanged) and never enqueues synthetic keys."""
    moco = MoCo(dim=16, queue_size=10, **MOCHI).double()
    assert set(moco.state_dict()) == {"queue", "queue_ptr"}
    expected_queue, expected_ptr = reference_fifo(moco.queue.clone(), 0, _qk()[1])
    moco(*_qk())
    torch.testing.assert_close(moco.queue, expected_queue)
    assert int(moco.queue_ptr) == expected_ptr


def test_mixing_off_in_eval_mode_and_by_default() -> None:
    q, k = _qk()
    torch.manual_seed(0)
    plain = MoCo(dim=16, queue_size=10).double()
    torch.manual_seed(0)
    mochi = MoCo(dim=16, queue_size=10, **MOCHI).double()
    assert plain.mixing is None and mochi.mixing is not None
    expected = plain.eval()(q, k).loss
    torch.testing.assert_close(mochi.eval()(q, k).loss, expected)
    assert mochi.train()(q, k).loss > expected  # extra negatives raise the loss


def test_mixing_options_recorded_and_checked() -> None:
    assert init_config(MoCo(dim=16, queue_size=8))["kwargs"] == {
        "dim": 16,
        "queue_size": 8,
        "temperature": 0.2,
    }
    kwargs = init_config(MoCo(dim=16, queue_size=8, mixing_hard=4, mixing_pairs=2))["kwargs"]
    assert kwargs["mixing_hard"] == 4 and kwargs["mixing_pairs"] == 2
    assert "mixing_query" not in kwargs  # recorded as given
    with pytest.raises(ValueError, match=r"mixing_hard=9 exceeds queue_size=8"):
        MoCo(dim=16, queue_size=8, mixing_hard=9, mixing_pairs=2)
