from __future__ import annotations

import math

import pytest

from domainfm.tasks.benchmark.stats import paired_comparison, summarize, t_quantile_975


def test_paired_t_interval_matches_the_hand_computation():
    cand, ref = [0.71, 0.74, 0.70, 0.75], [0.65, 0.69, 0.66, 0.72]
    diffs = [0.06, 0.05, 0.04, 0.03]
    mean = sum(diffs) / 4
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 3)
    half = 3.182 * sd / 2  # t_{0.975, 3} * sd / sqrt(4)
    c = paired_comparison(cand, ref)
    assert c.mean == pytest.approx(mean)
    assert (c.low, c.high) == (pytest.approx(mean - half), pytest.approx(mean + half))
    assert c.wins == 4 and c.n == 4 and c.separated


def test_noise_and_a_single_seed_are_not_separated():
    noisy = paired_comparison([0.70, 0.60, 0.72], [0.65, 0.66, 0.70])
    assert noisy.low < 0 < noisy.high and not noisy.separated
    assert "not separated from noise" in noisy.text()
    one = paired_comparison([0.9], [0.1])
    assert not one.separated and math.isnan(one.low)


def test_summaries_and_quantiles():
    s = summarize([1.0, 2.0, 3.0, float("nan")])
    assert (s.mean, s.std, s.n) == (2.0, 1.0, 3)
    assert t_quantile_975(1) == 12.706 and t_quantile_975(100) == 1.96
    with pytest.raises(ValueError):
        paired_comparison([1.0], [1.0, 2.0])


def test_the_same_difference_on_every_seed_has_no_noise_estimate_and_is_not_a_win():
    c = paired_comparison([0.80, 0.80, 0.80], [0.70, 0.70, 0.70])
    assert c.mean == pytest.approx(0.1) and c.wins == 3
    assert not c.separated
    assert "no spread to test" in c.text()
