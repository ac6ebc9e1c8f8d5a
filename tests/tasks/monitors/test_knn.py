"""Weighted kNN (hand-computed votes, clusters, chance level, tiny banks) and the linear probe."""

from __future__ import annotations

import math

import pytest
import torch

from domainfm.tasks.monitors import KNNClassifier, LinearProbe, knn_votes

# unit-norm 2-D bank: angle 0 (class 0), 90 deg (class 1), (0.6, 0.8) (class 1),
# (0.8, 0.6) (class 0), 180 deg (class 2)
BANK = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.8, 0.6], [-1.0, 0.0]])
LABELS = torch.tensor([0, 1, 1, 0, 2])
E = math.exp


def test_hand_computed_votes() -> None:
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 4.0]])  # the last is not unit-norm
    votes = knn_votes(queries, BANK, LABELS, 3, k=3, temperature=0.5)
    expected = torch.tensor(
        [
            # cos to bank = (1, 0, .6, .8, -1): top-3 = b0 (c0), b3 (c0), b2 (c1)
            [E(1.0 / 0.5) + E(0.8 / 0.5), E(0.6 / 0.5), 0.0],
            # cos = (0, 1, .8, .6, 0): top-3 = b1 (c1), b2 (c1), b3 (c0)
            [E(0.6 / 0.5), E(1.0 / 0.5) + E(0.8 / 0.5), 0.0],
            # (0.6, 0.8): cos = (.6, .8, 1, .96, -.6): top-3 = b2 (c1), b3 (c0), b1 (c1)
            [E(0.96 / 0.5), E(1.0 / 0.5) + E(0.8 / 0.5), 0.0],
        ]
    )
    torch.testing.assert_close(votes, expected, rtol=1e-5, atol=1e-6)


def test_weights_beat_majority() -> None:
    # one very similar class-0 neighbour against two barely similar class-1 neighbours
    s = math.sqrt(0.99)
    bank = torch.tensor([[1.0, 0.0, 0.0], [0.1, s, 0.0], [0.1, 0.0, s]])
    labels = torch.tensor([0, 1, 1])
    votes = knn_votes(torch.tensor([[1.0, 0.0, 0.0]]), bank, labels, 2, k=3, temperature=0.07)
    torch.testing.assert_close(
        votes, torch.tensor([[E(1 / 0.07), 2 * E(0.1 / 0.07)]]), rtol=1e-5, atol=1e-6
    )
    knn = KNNClassifier(num_classes=2, k=3)
    knn.update_bank(bank, labels)
    knn.update(torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([0]))
    assert float(knn.compute()) == 1.0


def test_k_larger_than_bank_uses_all_items() -> None:
    votes = knn_votes(torch.tensor([[1.0, 0.0]]), BANK, LABELS, 3, k=20, temperature=0.5)
    expected = torch.tensor([[E(2.0) + E(1.6), E(0.0) + E(1.2), E(-2.0)]])
    torch.testing.assert_close(votes, expected, rtol=1e-5, atol=1e-6)
    knn = KNNClassifier(num_classes=3, k=20, temperature=0.5)
    knn.update_bank(BANK, LABELS)
    knn.update(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.1]]), torch.tensor([0, 1, 0]))
    # third query is nearest to b4 (class 2, cos ~ 0.995): predicted 2, labelled 0 -> wrong
    assert float(knn.compute()) == pytest.approx(2 / 3)


def _clusters(
    n_per: int, classes: int, dim: int, noise: float, seed: int, noise_seed: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian clusters around ``classes`` centers (drawn from ``seed``)."""
    centers = torch.randn(classes, dim, generator=torch.Generator().manual_seed(seed)) * 3.0
    g = torch.Generator().manual_seed(seed if noise_seed is None else noise_seed)
    labels = torch.arange(classes).repeat_interleave(n_per)
    return centers[labels] + noise * torch.randn(len(labels), dim, generator=g), labels


def test_separable_clusters_accuracy_one_any_chunking() -> None:
    bank, bank_labels = _clusters(20, 3, 16, 0.3, seed=0)
    queries, labels = _clusters(10, 3, 16, 0.3, seed=0, noise_seed=1)  # same centers
    for chunk in (1024, 7):
        knn = KNNClassifier(num_classes=3, chunk_size=chunk)
        knn.update_bank(bank[:25], bank_labels[:25])  # bank in two updates
        knn.update_bank(bank[25:], bank_labels[25:])
        knn.update(queries, labels)
        assert float(knn.compute()) == 1.0


def test_shuffled_labels_near_chance() -> None:
    g = torch.Generator().manual_seed(0)
    bank = torch.randn(2000, 16, generator=g)
    bank_labels = torch.randint(0, 10, (2000,), generator=g)
    queries = torch.randn(2000, 16, generator=g)
    labels = torch.randint(0, 10, (2000,), generator=g)
    knn = KNNClassifier(num_classes=10)
    knn.update_bank(bank, bank_labels)
    knn.update(queries, labels)
    assert 0.06 < float(knn.compute()) < 0.15  # chance is 0.1
    # same features with clean labels of a separable problem: the metric itself is not stuck
    clean, clean_labels = _clusters(100, 10, 16, 0.3, seed=3)
    knn = KNNClassifier(num_classes=10)
    knn.update_bank(clean[::2], clean_labels[::2])
    knn.update(clean[1::2], clean_labels[1::2])
    assert float(knn.compute()) == 1.0
    shuffled = clean_labels[torch.randperm(len(clean_labels), generator=g)]
    knn = KNNClassifier(num_classes=10)
    knn.update_bank(clean[::2], shuffled[::2])
    knn.update(clean[1::2], clean_labels[1::2])
    assert float(knn.compute()) < 0.3


def test_validation_and_empty() -> None:
    knn = KNNClassifier(num_classes=3)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        knn.update_bank(BANK, torch.tensor([0, 1, 3, 0, 2]))
    with pytest.raises(ValueError, match="labels must be"):
        knn.update(BANK, LABELS[:4])
    with pytest.raises(ValueError, match="integers"):
        knn.update(BANK, LABELS.float())
    knn.update(BANK, LABELS)
    with pytest.raises(RuntimeError, match="bank items and queries"):
        knn.compute()
    with pytest.raises(ValueError, match="temperature"):
        KNNClassifier(num_classes=3, temperature=0.0)


def test_bank_update_after_compute_invalidates_cache() -> None:
    knn = KNNClassifier(num_classes=3, k=1)
    knn.update_bank(BANK[:1], LABELS[:1])  # only class 0
    knn.update(torch.tensor([[0.0, 1.0]]), torch.tensor([1]))
    assert float(knn.compute()) == 0.0
    knn.update_bank(BANK[1:2], LABELS[1:2])  # now the exact class-1 match is in the bank
    assert float(knn.compute()) == 1.0


def test_linear_probe_learns_and_does_not_backprop() -> None:
    torch.manual_seed(0)
    features, labels = _clusters(50, 4, 8, 0.5, seed=5)
    features.requires_grad_(True)
    probe = LinearProbe(dim=8, num_classes=4, lr=5e-2)
    before = float(probe.accuracy(features, labels))
    for _ in range(40):
        idx = torch.randperm(len(labels))[:32]
        loss = probe.fit_step(features[idx], labels[idx])
        assert not loss.requires_grad
    assert features.grad is None
    assert float(probe.accuracy(features, labels)) > 0.95 > before
    assert probe.training  # accuracy() restores the mode
    with pytest.raises(ValueError, match="at least 2"):
        probe.fit_step(features[:1], labels[:1])
