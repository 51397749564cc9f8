"""The paper's lazy route counted under a theoretical cost model (never a time).

subquad's lazy structure W = W0 + U V^T folds U V^T into W0 with a BLAS GEMM, 2 m^2 r flops
per fold, so it never beats the scatter update. The paper instead folds with fast rectangular
multiplication: an m x r x m product with r = m^a costs m^omega(1,a,1), which is m^(2+o(1))
for a <= alpha (the dual exponent of matrix multiplication). No practical algorithm attains
that, but the cost can be counted. This module counts one lazy iteration's work under that
model, from the activation sets a real run measured:

- base phases (sparse forward, backward, Gram, solve) as the measured scatter route counted
  them: the lazy route visits the same active sets;
- forward extra, per layer l = 1..L: r (nnz_{l-1} + n m) (``LazyLowRank.forward_work``),
  backward extra, per layer l = 1..L-1: r (nnz_l + nnz_{l+1}), append: nnz_{l-1} + nnz_l,
  with r its mean over a fold period, n (P + 1) / 2, P = floor(r_max / n) updates per fold;
- fold, per layer: m^omega(1, a_eff, 1) with r_fold = P n = m^a_eff, amortised over the P
  iterations between folds (counted as m^omega exactly: the o(1) and the constant are 0).

Bounds used (docs/LAZY_ROUTE.md cites them): alpha >= ALPHA and omega <= OMEGA from
Vassilevska Williams, Xu, Xu and Zhou, "New Bounds for Matrix Multiplication: from Alpha to
Omega", SODA 2024 (arXiv 2307.07970); above alpha, omega(1,a,1) is bounded by the linear
interpolation between (alpha, 2) and (1, omega), which holds because omega(1,k,1) is convex
in k.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from subquad.errors import ConfigError

#: dual exponent of matrix multiplication, lower bound (Vassilevska Williams et al. 2024)
ALPHA = 0.321334
#: square matrix multiplication exponent, upper bound (same paper)
OMEGA = 2.371552
#: phases the lazy route shares with the scatter route (counted from the measured run)
BASE_PHASES = ("forward", "backward", "gram", "solve")


def omega_rect(a: float, alpha: float = ALPHA, omega: float = OMEGA) -> float:
    """Bound on omega(1, a, 1), the exponent of an m x m^a times m^a x m product, a in [0, 1]:
    2 up to alpha, then linear to omega at a = 1."""
    if not (0.0 <= a <= 1.0 and math.isfinite(a)):
        raise ConfigError("a", f"the rank exponent must lie in [0, 1], got {a!r}")
    if a <= alpha:
        return 2.0
    return 2.0 + (omega - 2.0) * (a - alpha) / (1.0 - alpha)


@dataclass(frozen=True)
class LazyWork:
    """Counted multiply-adds of one amortised lazy iteration at one width, per phase."""

    m: int
    a: float
    rank_max: int
    fold_period: int
    base: float
    forward_extra: float
    backward_extra: float
    append: float
    fold: float

    @property
    def total(self) -> float:
        return self.base + self.forward_extra + self.backward_extra + self.append + self.fold


def lazy_iteration_work(m: int, n: int, nnz: Sequence[float], base: float, a: float,
                        alpha: float = ALPHA, omega: float = OMEGA) -> LazyWork:
    """One lazy iteration's counted work under the fast-rectangular model.

    ``nnz`` holds the measured nnz of h_0 .. h_L (L + 1 values, summed over the n samples);
    ``base`` the measured work of the phases in BASE_PHASES; r_max = max(n, round(m^a)).
    """
    L = len(nnz) - 1
    if L < 1 or m < 2 or n < 1:
        raise ConfigError("nnz", f"need m >= 2, n >= 1 and L + 1 >= 2 layer sizes (m={m}, "
                          f"n={n}, {len(nnz)} layers)")
    r_max = max(n, int(round(m ** a)))
    period = r_max // n
    r_mean = n * (period + 1) / 2.0
    r_fold = period * n
    a_fold = min(1.0, math.log(r_fold) / math.log(m))
    fwd = sum(r_mean * (nnz[l - 1] + n * m) for l in range(1, L + 1))
    bwd = sum(r_mean * (nnz[l] + nnz[l + 1]) for l in range(1, L))
    app = sum(nnz[l - 1] + nnz[l] for l in range(1, L + 1))
    fold = L * float(m) ** omega_rect(a_fold, alpha, omega) / period
    return LazyWork(m, a, r_max, period, base, fwd, bwd, app, fold)
