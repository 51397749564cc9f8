"""Tensor sketches of Kronecker rows and sketch-preconditioned CG (model.sketch, model.cg)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.linalg import hadamard

from subquad.errors import ConfigError, SingularGramError
from subquad.model.cg import cg_work, preconditioned_cg, sketch_preconditioner
from subquad.model.sketch import (
    SKETCHES,
    default_sketch_size,
    draw_sketch,
    hadamard_coords,
    next_pow2,
    sketch,
    sketch_work,
)
from subquad.model.sparse import SparseRows


def _rows(rng: np.random.Generator, n: int, m: int, s: int, empty: tuple = ()) -> SparseRows:
    """n random rows of width m with s active entries each (rows in ``empty`` have none)."""
    idx = [np.sort(rng.choice(m, size=0 if i in empty else s, replace=False)) for i in range(n)]
    counts = np.array([len(ix) for ix in idx])
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    indices = np.concatenate(idx).astype(np.int64)
    return SparseRows(indptr, indices, rng.standard_normal(indices.size), m)


def _factors(rng, n, dims, s, empty=()):
    """H_list, V_list for layers with factor widths dims[l-1] = (m_in, m_out)."""
    H = [_rows(rng, n, a, s, empty) for a, _ in dims]
    V = [_rows(rng, n, b, s, empty) for _, b in dims]
    return H, V


def _gram(H_list, V_list):
    """K = sum_l (H_{l-1} H_{l-1}^T) o (V_l V_l^T) from dense copies."""
    K = 0.0
    for H, V in zip(H_list, V_list, strict=True):
        h, v = H.to_dense(), V.to_dense()
        K = K + (h @ h.T) * (v @ v.T)
    return K


def _dense_tensorsketch(h, v, d, k):
    """CountSketch of the explicit h (x) v with bucket hash1[a] + hash2[b] mod k, sign s1 s2."""
    x = np.kron(h, v)
    bucket = ((d.hash1[:, None] + d.hash2[None, :]) % k).ravel()
    sign = np.outer(d.sign1, d.sign2).ravel()
    return np.bincount(bucket, weights=sign * x, minlength=k)


def _dense_tensorsrht(h, v, d, k):
    """sqrt(m1' m2' / k) times coordinates (p_t, q_t) of (Ht1 D1 (x) Ht2 D2)(h (x) v), padded."""
    hp, vp = np.zeros(d.m1p), np.zeros(d.m2p)
    hp[:h.size], vp[:v.size] = d.sign1 * h, d.sign2 * v
    T = np.kron(hadamard(d.m1p), hadamard(d.m2p)) / math.sqrt(d.m1p * d.m2p)
    y = T @ np.kron(hp, vp)
    return math.sqrt(d.m1p * d.m2p / k) * y[d.p * d.m2p + d.q]


_DENSE = {"tensorsketch": _dense_tensorsketch, "tensorsrht": _dense_tensorsrht}


@pytest.mark.parametrize("kind", SKETCHES)
def test_columns_equal_sketch_of_explicit_kronecker_vector(kind):
    rng = np.random.default_rng(1)
    dims, n, k, seed = [(12, 16), (16, 9)], 5, 16, 7
    H, V = _factors(rng, n, dims, 5, empty=(2,))
    B = sketch(kind, H, V, k, seed)
    assert B.shape == (len(dims) * k, n)
    draws = draw_sketch(kind, dims, k, seed)
    for l, d in enumerate(draws):
        h, v = H[l].to_dense(), V[l].to_dense()
        for i in range(n):
            ref = _DENSE[kind](h[i], v[i], d, k)
            np.testing.assert_allclose(B[l * k:(l + 1) * k, i], ref, atol=1e-12)
    np.testing.assert_array_equal(B, sketch(kind, H, V, k, seed))  # reproducible


@pytest.mark.parametrize("kind", SKETCHES)
def test_gram_is_unbiased_and_error_shrinks_with_k(kind):
    rng = np.random.default_rng(2)
    dims, n = [(16, 16), (16, 32)], 4
    H, V = _factors(rng, n, dims, 6)
    K = _gram(H, V)

    def rel_err(G):
        return np.linalg.norm(G - K) / np.linalg.norm(K)

    mean = np.mean([(B.T @ B) for B in (sketch(kind, H, V, 8, s) for s in range(1000))], axis=0)
    assert rel_err(mean) < 0.06
    err = {k: np.mean([rel_err(B.T @ B) for B in (sketch(kind, H, V, k, s) for s in range(40))])
           for k in (8, 128)}
    assert err[128] < 0.5 * err[8]


@pytest.mark.parametrize("mu", [0.0, 0.3])
@pytest.mark.parametrize("kind", SKETCHES)
def test_pcg_matches_direct_solve(kind, mu):
    rng = np.random.default_rng(3)
    dims, n = [(64, 64), (64, 64)], 8
    H, V = _factors(rng, n, dims, 12)
    A = _gram(H, V) + mu * np.eye(n)
    r = rng.standard_normal(n)
    B = sketch(kind, H, V, default_sketch_size(n), 11)
    c, iters, ok, resid = preconditioned_cg(lambda x: A @ x, r, sketch_preconditioner(B, mu),
                                            1e-10, 100)
    assert ok and resid <= 1e-10 and 0 < iters <= 100
    assert np.linalg.norm(r - A @ c) <= 1e-10 * np.linalg.norm(r)
    ref = np.linalg.solve(A, r)
    assert np.linalg.norm(c - ref) <= 1e-8 * np.linalg.norm(ref)


@pytest.mark.parametrize("n", [8, 64])
@pytest.mark.parametrize("kind", SKETCHES)
def test_realistic_gram_converges_in_at_most_20_iterations(kind, n):
    """Acceptance: m = 1024, L = 2, ~50 active entries per row, default sketch size."""
    rng = np.random.default_rng(4)
    H, V = _factors(rng, n, [(1024, 1024)] * 2, 50)
    K = _gram(H, V)
    r = rng.standard_normal(n)
    for seed in range(3):
        B = sketch(kind, H, V, default_sketch_size(n), seed)
        P = sketch_preconditioner(B)
        c, iters, ok, _ = preconditioned_cg(lambda x: K @ x, r, P, 1e-10, 100)
        assert ok
        assert iters <= 20, f"{kind}, n = {n}, sketch seed {seed}: {iters} CG iterations"
        np.testing.assert_allclose(c, np.linalg.solve(K, r), rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("kind", SKETCHES)
def test_damped_preconditioner_is_inverse_of_stacked_gram(kind):
    rng = np.random.default_rng(5)
    n, mu = 6, 0.25
    H, V = _factors(rng, n, [(32, 32)], 8)
    B = sketch(kind, H, V, 2, 0)  # L k = 2 < n: singular without damping, fine with it
    P = sketch_preconditioner(B, mu)
    inv = np.column_stack([P(e) for e in np.eye(n)])
    np.testing.assert_allclose(inv, np.linalg.inv(B.T @ B + mu * np.eye(n)), rtol=1e-10)
    with pytest.raises(SingularGramError, match="--sketch-size"):
        sketch_preconditioner(B, 0.0)


def test_zero_column_raises_singular_gram_error():
    rng = np.random.default_rng(6)
    H, V = _factors(rng, 4, [(32, 32), (32, 32)], 6, empty=(1,))
    B = sketch("tensorsketch", H, V, 32, 0)
    assert not B[:, 1].any()
    with pytest.raises(SingularGramError, match="--sketch-size"):
        sketch_preconditioner(B, 0.0)


def test_unpreconditioned_cg_and_zero_rhs():
    rng = np.random.default_rng(7)
    A = rng.standard_normal((6, 6))
    A = A @ A.T + 6 * np.eye(6)
    r = rng.standard_normal(6)
    c, _, ok, _ = preconditioned_cg(lambda x: A @ x, r, None, 1e-12, 50)
    assert ok and np.allclose(c, np.linalg.solve(A, r))
    c0, iters, ok, resid = preconditioned_cg(lambda x: A @ x, np.zeros(6), None, 1e-10, 50)
    assert ok and iters == 0 and resid == 0.0 and not c0.any()


def test_work_models_and_validation():
    assert sketch_work("tensorsrht", 100, 100, 64, 8, 2) > sketch_work("tensorsrht", 100, 100,
                                                                         32, 8, 2)
    assert sketch_work("tensorsketch", 100, 100, 64, 8, 2) > 200
    assert cg_work(8, 0) == 0 and cg_work(8, 3) > cg_work(8, 2)
    assert all(default_sketch_size(n) >= 4 * n for n in (1, 8, 16, 64, 100))
    rng = np.random.default_rng(8)
    H, V = _factors(rng, 3, [(16, 16)], 4)
    with pytest.raises(ConfigError, match="sketch"):
        sketch("countsketch", H, V, 8, 0)
    with pytest.raises(ConfigError, match="sketch-size"):
        sketch("tensorsketch", H, V, 0, 0)


@pytest.mark.parametrize("m", [1000, 70000, 1 << 20])
def test_hadamard_coords_of_wide_rows(m):
    """(H D x)_p = sum_j (-1)^popcount(p & j) D_j x_j, also past the 2^16-entry parity table."""
    rng = np.random.default_rng(9)
    X = _rows(rng, 3, m, 7, empty=(1,))
    sign = rng.choice([-1.0, 1.0], size=m)
    p = rng.integers(0, next_pow2(m), size=5)
    out = hadamard_coords(X, sign, p)
    for i in range(3):
        lo, hi = X.indptr[i], X.indptr[i + 1]
        for t, pt in enumerate(p):
            ref = sum((-1) ** bin(int(pt) & int(j)).count("1") * sign[j] * x
                      for j, x in zip(X.indices[lo:hi], X.values[lo:hi], strict=True))
            assert out[i, t] == pytest.approx(ref, abs=1e-12)
