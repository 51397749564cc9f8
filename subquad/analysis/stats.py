"""Distribution-free statistics of one cell's samples: the median and its exact interval.

The interval of the median from order statistics (docs MEASUREMENT.md): for S samples sorted
x_(1) <= ... <= x_(S), [x_(k), x_(S-k+1)] covers the true median with probability
1 - 2 P(B <= k - 1), B ~ Binomial(S, 1/2), whatever the distribution. ``median_ci`` takes the
largest k whose coverage reaches the requested level and returns that coverage exactly. With
too few samples for the level (S <= 5 for 95%) even [min, max] falls short: it is returned with
its true, lower coverage (93.75% for 5 samples, 75% for 3) and ``short`` set, never labelled
as the requested level.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy.stats import binom

LEVEL = 0.95


@dataclass(frozen=True)
class MedianCI:
    """Median, interval, the interval's exact coverage, and whether it falls short of level."""

    median: float
    lo: float
    hi: float
    coverage: float
    short: bool

    def __iter__(self):  # (median, lo, hi), as the older tuple
        return iter((self.median, self.lo, self.hi))


def order_coverage(samples: int, k: int) -> float:
    """Exact coverage of [x_(k), x_(S-k+1)] for the median of S samples."""
    if samples < 1 or not 1 <= k <= (samples + 1) // 2:
        return math.nan
    return float(1.0 - 2.0 * binom.cdf(k - 1, samples, 0.5))


def median_ci(values: Iterable[float], level: float = LEVEL) -> MedianCI:
    """Median of the finite values and its order-statistic interval (see the module doc)."""
    x = np.sort(np.asarray(list(values), dtype=float))
    x = x[np.isfinite(x)]
    s = x.size
    if s == 0:
        return MedianCI(math.nan, math.nan, math.nan, math.nan, True)
    k = 1
    while k + 1 <= (s + 1) // 2 and order_coverage(s, k + 1) >= level:
        k += 1
    cov = order_coverage(s, k)
    return MedianCI(float(np.median(x)), float(x[k - 1]), float(x[s - k]), cov,
                    cov < level - 1e-12)


def min_samples(level: float = LEVEL) -> int:
    """The fewest samples whose [min, max] reaches ``level`` (6 for 95%)."""
    s = 1
    while order_coverage(s, 1) < level:
        s += 1
    return s


def coverage_text(coverages: Iterable[float], level: float = LEVEL) -> str:
    """'95% CI', or 'order-statistic interval, coverage 75-94% (too few samples for 95%)'."""
    cov = [c for c in coverages if np.isfinite(c)]
    if not cov or min(cov) >= level - 1e-12:
        return f"{level:.0%} CI"
    lo, hi = min(cov), min(max(cov), level)
    span = f"{lo:.1%}" if math.isclose(lo, hi) else f"{lo:.1%}-{hi:.1%}"
    return f"interval of coverage {span} (too few samples for {level:.0%})"
