"""The fast-rectangular cost model of the lazy route: omega(1,a,1) and the amortised count."""

import numpy as np
import pytest

from subquad.analysis.lazy_route import ALPHA, OMEGA, lazy_iteration_work, omega_rect
from subquad.errors import ConfigError
from subquad.model.lowrank import LazyLowRank
from subquad.model.sparse import SparseRows


def test_omega_rect_is_2_up_to_alpha_then_linear_to_omega():
    assert omega_rect(0.0) == omega_rect(ALPHA) == 2.0
    assert omega_rect(1.0) == pytest.approx(OMEGA)
    mid = (ALPHA + 1) / 2
    assert omega_rect(mid) == pytest.approx((2 + OMEGA) / 2)
    with pytest.raises(ConfigError, match="^a:"):
        omega_rect(1.5)


def test_fold_below_alpha_costs_m2_per_fold_amortised_over_the_period():
    m, n = 4096, 4
    w = lazy_iteration_work(m, n, [100.0, 80.0, 60.0], base=0.0, a=0.25)  # r_max = 8 = 2 n
    assert (w.rank_max, w.fold_period) == (8, 2)
    assert w.fold == pytest.approx(2 * m**2 / 2)  # L = 2 layers, one m^2 fold per 2 steps
    assert w.append == pytest.approx(100 + 80 + 80 + 60)


def _rows(m, n, nnz_each, rng):
    idx = np.concatenate([np.sort(rng.choice(m, nnz_each, replace=False)) for _ in range(n)])
    return SparseRows(np.arange(0, n * nnz_each + 1, nnz_each), idx, rng.random(n * nnz_each), m)


def test_extra_work_is_the_lowrank_count_at_the_mean_rank():
    """Averaged over one fold period, LazyLowRank's own forward/backward counts equal the
    model's r_mean terms (L = 2: forward extra on layers 1, 2; backward extra on layer 1)."""
    rng = np.random.default_rng(0)
    m, n, k = 64, 4, 5
    lrs = [LazyLowRank(np.zeros((m, m)), 16) for _ in range(2)]
    H = [_rows(m, n, k, rng) for _ in range(3)]
    fwd, bwd = [], []
    for _ in range(16 // n):
        for l, lr in enumerate(lrs):
            lr.append(H[l], H[l + 1], np.ones(n))
        fwd.append(sum(lr.forward_work(H[l].nnz, n) for l, lr in enumerate(lrs)))
        bwd.append(lrs[1].backward_work(H[1].nnz, H[2].nnz))
    w = lazy_iteration_work(m, n, [n * k] * 3, base=0.0, a=np.log(16) / np.log(m))
    assert w.fold_period == 4
    assert w.forward_extra == pytest.approx(np.mean(fwd))
    assert w.backward_extra == pytest.approx(np.mean(bwd))
