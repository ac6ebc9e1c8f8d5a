"""Summaries over seeds and paired comparisons between backbones.

Every backbone runs with the same seeds (same label subsets, same head initialization), so a
comparison is paired: the per-seed differences ``d_s = candidate_s - reference_s`` carry the
signal, and their spread the noise. The confidence interval is Student's t on the mean
difference (``mean(d) ± t_{0.975, n-1} · sd(d) / sqrt(n)``); a difference whose interval
contains 0 (or with a single seed, or the same difference for every seed, which leave no
noise estimate) is reported as *not separated from noise*, never as a win.

Example::

    >>> c = paired_comparison([0.71, 0.74, 0.70], [0.65, 0.69, 0.66])
    >>> round(c.mean, 3), c.wins, c.separated
    (0.05, 3, True)
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

# two-sided 95 % Student t quantiles t_{0.975, df} for df = 1..30 (beyond: the normal's)
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_quantile_975(df: int) -> float:
    """``t_{0.975}`` with ``df`` degrees of freedom (the normal's 1.96 above 30)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    return _T975[df - 1] if df <= len(_T975) else 1.96


@dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation over seeds (``std`` is 0 for one seed)."""

    mean: float
    std: float
    n: int

    def text(self, digits: int = 3) -> str:
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


def summarize(values: Sequence[float]) -> Summary:
    """:class:`Summary` of ``values`` (NaNs are kept out; all-NaN gives a NaN mean)."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return Summary(math.nan, math.nan, 0)
    std = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return Summary(statistics.fmean(finite), std, len(finite))


@dataclass(frozen=True)
class Comparison:
    """A paired comparison of a candidate against a reference over the same seeds.

    Attributes:
        mean: mean per-seed difference (candidate - reference).
        low, high: its 95 % t confidence interval (NaN for one seed).
        wins: seeds where the candidate is strictly better; ``n``: seeds compared.
        separated: whether the interval excludes 0 (the difference is not noise).
    """

    mean: float
    low: float
    high: float
    wins: int
    n: int
    separated: bool

    def text(self, digits: int = 3) -> str:
        if self.n == 0:
            return "n/a"
        ci = (
            f" [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"
            if not math.isnan(self.low)
            else ""
        )
        verdict = "" if self.separated else ", not separated from noise"
        if self.n > 1 and self.low == self.high:
            verdict = ", the same for every seed: no spread to test"
        return f"{self.mean:+.{digits}f}{ci} ({self.wins}/{self.n} seeds better{verdict})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_comparison(candidate: Sequence[float], reference: Sequence[float]) -> Comparison:
    """Paired comparison of per-seed values (same seed order on both sides; pairs with a NaN
    on either side are left out).

    Raises:
        ValueError: when the two sides have different lengths.
    """
    if len(candidate) != len(reference):
        raise ValueError(f"paired values differ in length: {len(candidate)} vs {len(reference)}")
    diffs = [
        c - r
        for c, r in zip(candidate, reference, strict=True)
        if not (math.isnan(c) or math.isnan(r))
    ]
    n = len(diffs)
    if n == 0:
        return Comparison(math.nan, math.nan, math.nan, 0, 0, False)
    mean = statistics.fmean(diffs)
    wins = sum(d > 0 for d in diffs)
    if n == 1:
        return Comparison(mean, math.nan, math.nan, wins, 1, False)
    spread = statistics.stdev(diffs)
    half = t_quantile_975(n - 1) * spread / math.sqrt(n)
    low, high = mean - half, mean + half
    # no spread over seeds: the seeds changed nothing (a deterministic protocol on both
    # sides), so there is no noise estimate to separate the difference from
    return Comparison(mean, low, high, wins, n, spread > 0 and (low > 0 or high < 0))
