"""Lazy low-rank W = W0 + U V^T (subquad.model.lowrank) against explicit dense matrices."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from subquad.errors import ConfigError
from subquad.model.lowrank import LazyLowRank, parse_rank_max
from subquad.model.sparse import SparseRows

M_IN, M_OUT = 13, 10


def _rows(rng: np.random.Generator, n: int, m: int) -> SparseRows:
    """n random rows of width m with 0..m//2 active entries each."""
    idx = [np.sort(rng.choice(m, size=rng.integers(0, m // 2 + 1), replace=False))
           for _ in range(n)]
    indptr = np.concatenate([[0], np.cumsum([len(ix) for ix in idx])]).astype(np.int64)
    indices = np.concatenate(idx).astype(np.int64)
    return SparseRows(indptr, indices, rng.standard_normal(indices.size), m)


def _check_products(lr: LazyLowRank, Wt: np.ndarray, rng: np.random.Generator) -> None:
    """forward / backward of the structure equal those of the explicit W^T = Wt."""
    np.testing.assert_allclose(lr.dense(), Wt, atol=1e-12)
    H = _rows(rng, 4, M_IN)
    fwd = H.to_dense() @ lr.W0t  # what the sparse W0 kernel computes
    extra = lr.forward_extra(H)
    assert (extra is None) == (lr.rank == 0)
    np.testing.assert_allclose(fwd if extra is None else fwd + extra, H.to_dense() @ Wt,
                               atol=1e-12)
    H_in, V_out = _rows(rng, 4, M_IN), _rows(rng, 4, M_OUT)
    rows = np.repeat(np.arange(4), H_in.counts())
    v = V_out.to_dense().T  # columns v_i, supported on S_out
    block = (lr.W0t @ v)[H_in.indices, rows]  # W0[S_out, S_in]^T v_i, from a kernel
    full = (Wt @ v)[H_in.indices, rows]
    np.testing.assert_allclose(block + lr.backward_extra(H_in, V_out), full, atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(batches=st.lists(st.integers(1, 3), min_size=1, max_size=8),
       rank_max=st.integers(3, 6), seed=st.integers(0, 2**16))
def test_random_appends_and_folds_match_dense(batches, rank_max, seed):
    rng = np.random.default_rng(seed)
    W0t = rng.standard_normal((M_IN, M_OUT))
    lr = LazyLowRank(W0t.copy(), rank_max)
    Wt, r, folds = W0t.copy(), 0, 0
    _check_products(lr, Wt, rng)
    for nb in batches:
        H, V, coef = _rows(rng, nb, M_IN), _rows(rng, nb, M_OUT), rng.standard_normal(nb)
        if r + nb > rank_max:
            r, folds = 0, folds + 1
        lr.update(H, V, coef)
        r += nb
        Wt += H.to_dense().T @ (coef[:, None] * V.to_dense())  # W += sum_i coef_i v_i h_i^T
        assert (lr.rank, lr.folds) == (r, folds)
        _check_products(lr, Wt, rng)
    assert lr.fold() == M_IN * r * M_OUT and lr.rank == 0
    _check_products(lr, Wt, rng)


def test_explicit_protocol_and_work():
    rng = np.random.default_rng(0)
    lr = LazyLowRank(rng.standard_normal((M_IN, M_OUT)), 4)
    H, V = _rows(rng, 3, M_IN), _rows(rng, 3, M_OUT)
    assert not lr.needs_fold(3)
    lr.append(H, V, np.ones(3))
    assert lr.needs_fold(3) and lr.rank == 3 and lr.rank_max == 4
    with pytest.raises(RuntimeError, match="fold"):
        lr.append(H, V, np.ones(3))
    assert lr.fold_work() == M_IN * 3 * M_OUT
    assert lr.forward_work(10, 2) == 3 * (10 + 2 * M_OUT)
    assert lr.backward_work(5, 6) == 3 * 11
    assert lr.fold_bytes() > lr.fold_bytes(4) > 0
    assert lr.fold() == M_IN * 3 * M_OUT and lr.fold_work() == 0 and lr.fold_bytes() == 0
    with pytest.raises(ConfigError, match="rank-max"):
        lr.needs_fold(5)


def test_float32_fold_in_place():
    rng = np.random.default_rng(1)
    W0t = rng.standard_normal((M_IN, M_OUT)).astype(np.float32)
    lr = LazyLowRank(W0t, 2)
    H, V = _rows(rng, 2, M_IN), _rows(rng, 2, M_OUT)
    H, V = H.with_values(H.values.astype(np.float32)), V.with_values(V.values.astype(np.float32))
    lr.append(H, V, np.full(2, 0.5))
    expect = lr.dense()
    lr.fold()
    assert lr.W0t is W0t and W0t.dtype == np.float32
    np.testing.assert_allclose(W0t, expect, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("spec", "m", "n", "expected"), [
    (128, 1024, 8, 128), (np.int64(16), 1024, 16, 16), ("64", 1024, 8, 64),
    ("m^0.5", 1024, 8, 32), ("m^ 0.5", 1024, 8, 32), (0.5, 1024, 8, 32), ("0.5", 1024, 8, 32),
    ("m^0.3", 1024, 64, 64), (1.0, 1024, 8, 1024), ("m**0.5", 4096, 8, 64),
])
def test_parse_rank_max_accepts(spec, m, n, expected):
    assert parse_rank_max(spec, m, n) == expected


@pytest.mark.parametrize("spec", [4, "4", "m^1.5", 0.0, -0.5, 1.5, "abc", "m^x", None, True,
                                  float("nan"), "m^0"])
def test_parse_rank_max_rejects(spec):
    with pytest.raises(ConfigError, match="m\\^a") as info:
        parse_rank_max(spec, 1024, 8)
    assert info.value.param == "rank-max"
