"""The fused update: forward_fused(W, H_new, b, pending) == forward(W + pending update, H_new)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from subquad.cli import main
from subquad.errors import ConfigError
from subquad.model.kernels import cpu, fused, reference
from subquad.model.subquadratic import AUTO_FUSED_MIN_W_BYTES, choose_update
from subquad.model.train import TrainConfig

from .kernel_cases import CASES, DTYPES, IDS, close, gapped_thresholds, random_rows, setup

KERNELS = ("per-example", "input-major")


def flipped(rng, H, density, dtype):
    """New inputs: H with about a tenth of its entries off and new ones on (neurons flip)."""
    dense = H.to_dense()
    dense = dense * (rng.random(dense.shape) > 0.1)
    on = (rng.random(dense.shape) < density / 10) * rng.standard_normal(dense.shape)
    return type(H).from_dense(np.where(dense != 0, dense, on).astype(dtype))


def check_fused(Wt, H_old, V, coef, H_new, dtype, kernel, tile=None):
    want_W = Wt + H_old.to_dense().T @ (coef[:, None] * V.to_dense())
    g = H_new.to_dense() @ want_W
    b = gapped_thresholds(g).astype(dtype)
    ref_W = Wt.copy()
    reference.update_scatter(ref_W, H_old, V, coef)
    ref, _ = reference.forward_layer(ref_W, H_new, b)
    W = Wt.copy()
    out, info = fused.forward_fused(W, H_new, b, (H_old, V, coef), kernel, tile=tile)
    close(W, want_W, dtype)
    np.testing.assert_array_equal(out.indptr, ref.indptr)
    np.testing.assert_array_equal(out.indices, ref.indices)
    close(out.values, ref.values, dtype)
    assert out.values.dtype == dtype
    union = np.unique(H_new.indices)
    assert info["union"] == union.size
    assert info["update_madds"] == float((H_old.counts() * V.counts()).sum())
    assert info["rows_after"] == np.setdiff1d(np.unique(H_old.indices), union).size
    return info


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_equals_update_then_forward(case, dtype, kernel):
    Wt, H_old, V, rng = setup(case, dtype)
    coef = rng.standard_normal(H_old.n).astype(dtype)
    H_new = flipped(rng, H_old, case[3], dtype)
    info = check_fused(Wt, H_old, V, coef, H_new, dtype, kernel)
    rows_read = H_new.nnz if kernel == "per-example" else info["union"]
    assert info["bytes"] >= rows_read * Wt.shape[1] * np.dtype(dtype).itemsize


@settings(max_examples=40, deadline=None)
@given(m_in=st.integers(1, 200), m_out=st.integers(2, 400), n=st.integers(1, 9),
       dh=st.floats(0.0, 0.4), dv=st.floats(0.0, 0.4), tile=st.sampled_from([64, 128, 2048]),
       kernel=st.sampled_from(KERNELS), seed=st.integers(0, 2**16))
def test_fused_any_shape_and_tile(m_in, m_out, n, dh, dv, tile, kernel, seed):
    rng = np.random.default_rng(seed)
    dt = np.float64
    Wt = rng.standard_normal((m_in, m_out))
    H_old = random_rows(rng, n, m_in, dh, dt)
    V = random_rows(rng, n, m_out, dv, dt)
    H_new = flipped(rng, H_old, dh, dt)
    check_fused(Wt, H_old, V, rng.standard_normal(n), H_new, dt, kernel, tile)


def test_fused_without_pending_is_the_forward():
    Wt, H, _, _ = setup(CASES[3], np.float64)
    g = H.to_dense() @ Wt
    b = gapped_thresholds(g)
    want, _ = cpu.forward_layer(Wt, H, b)
    W = Wt.copy()
    for kernel in KERNELS:
        out, info = fused.forward_fused(W, H, b, None, kernel)
        np.testing.assert_array_equal(out.indices, want.indices)
        close(out.values, want.values, np.float64)
        assert info["update_madds"] == 0 and info["rows_after"] == 0
    np.testing.assert_array_equal(W, Wt)


def test_fused_rejects_bad_kernel_and_non_contiguous():
    Wt, H, V, _ = setup(CASES[1], np.float64)
    with pytest.raises(ValueError, match="forward_kernel"):
        fused.forward_fused(Wt, H, np.zeros(H.n), None, "dense")
    with pytest.raises(ValueError, match="C-contiguous"):
        fused.forward_fused(np.asfortranarray(Wt), H, np.zeros(H.n), None)


def test_fused_is_cpu_only_and_auto_picks_it_for_large_weights():
    assert choose_update("fused", 0.02, "numpy") == "fused"
    big = float(AUTO_FUSED_MIN_W_BYTES)
    assert choose_update("auto", 0.02, "numpy", big) == "fused"
    assert choose_update("auto", 0.02, "numpy", big / 2) == "scatter"
    assert choose_update("auto", 0.02, "cupy", big) == "scatter"
    assert choose_update("auto", 0.08, "numpy", big) == "rowdense"
    with pytest.raises(ConfigError, match="CPU-only"):
        choose_update("fused", 0.02, "cupy")
    with pytest.raises(ConfigError, match="update"):
        TrainConfig(method="subquad", backend="cupy", update="fused").validate()
    assert main(["train", "--backend", "cupy", "--update", "fused", "--m", "64"]) == 2


def guessed(rng, H_out, m_out, dtype):
    """A guess of the output supports: most of the real ones, some dropped, some extra."""
    dense = (H_out.to_dense() != 0) & (rng.random((H_out.n, m_out)) > 0.2)
    dense |= rng.random((H_out.n, m_out)) < 0.05
    return type(H_out).from_dense(dense.astype(dtype))


@settings(max_examples=40, deadline=None)
@given(m_in=st.integers(1, 120), m_out=st.integers(2, 300), n=st.integers(1, 7),
       dh=st.floats(0.05, 0.4), tile=st.sampled_from([64, 128, None]),
       kernel=st.sampled_from(KERNELS), guess=st.sampled_from(["none", "exact", "noisy"]),
       seed=st.integers(0, 2**16))
def test_top_backward_from_forward_dots_equals_the_block(m_in, m_out, n, dh, tile, kernel, guess,
                                                         seed):
    """forward_fused's dots with any guess P, corrected by top_backward, equal the backward
    block W[S_out, S_in]^T a[S_out] of the updated W (flips = |P xor S_out|)."""
    rng = np.random.default_rng(seed)
    dt = np.float64
    Wt = rng.standard_normal((m_in, m_out))
    H_old = random_rows(rng, n, m_in, dh, dt)
    V = random_rows(rng, n, m_out, 0.3, dt)
    H_new = flipped(rng, H_old, dh, dt)
    a = rng.standard_normal(m_out)
    b = gapped_thresholds(H_new.to_dense() @ Wt)
    W = Wt.copy()
    plain, _ = fused.forward_fused(W.copy(), H_new, b, (H_old, V, np.ones(n)), kernel, tile)
    if guess == "exact":
        P = plain
    elif guess == "noisy":
        P = guessed(rng, plain, m_out, dt)
    else:
        P = type(plain).from_dense(np.zeros((n, m_out)))
    out, info = fused.forward_fused(W, H_new, b, (H_old, V, np.ones(n)), kernel, tile,
                                    predict=(P, a))
    np.testing.assert_array_equal(out.indices, plain.indices)
    assert info["dot_madds"] == float((H_new.counts() * P.counts()).sum())
    u, flips = fused.top_backward(W, H_new, info["dots"], P, out, a)
    want = reference.backward_block(W, H_new, out.with_values(a[out.indices]))
    close(u, want, dt)
    sym = [np.setxor1d(P.indices[P.indptr[i]:P.indptr[i + 1]],
                       out.indices[out.indptr[i]:out.indptr[i + 1]]).size for i in range(n)]
    np.testing.assert_array_equal(flips, sym)
