"""The sparse kernels: numba (cpu) against numpy (reference) against dense formulas."""

from __future__ import annotations

import numpy as np
import pytest

from subquad.model.kernels import cpu, get_kernels, reference
from subquad.model.sparse import SparseRows

from .kernel_cases import CASES, DTYPES, IDS, close, forward_case, setup


def assert_rows_sorted(R: SparseRows) -> None:
    for i in range(R.n):
        row = R.indices[R.indptr[i]:R.indptr[i + 1]]
        assert np.all(np.diff(row) > 0), f"row {i} not strictly increasing"


def assert_same_rows(a: SparseRows, b: SparseRows) -> None:
    """Identical supports: same counts and equal index sets per row."""
    np.testing.assert_array_equal(a.indptr, b.indptr)
    for i in range(a.n):
        sa = set(a.indices[a.indptr[i]:a.indptr[i + 1]].tolist())
        sb = set(b.indices[b.indptr[i]:b.indptr[i + 1]].tolist())
        assert sa == sb, f"row {i}: supports differ"


# ---------------------------------------------------------------- forward


@pytest.mark.parametrize("with_extra", [False, True])
@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_forward(case, dtype, with_extra):
    Wt, H, g, extra, b = forward_case(case, dtype, with_extra)
    want = np.where(g > b[:, None], g - b[:, None], 0)

    ref, info = reference.forward_layer(Wt, H, b, extra)
    assert_rows_sorted(ref)
    close(ref.to_dense(), want, dtype)
    assert ref.values.dtype == dtype and ref.indices.dtype == np.int64
    assert info["union"] == np.unique(H.indices).size

    for kernel in cpu.FORWARD_KERNELS:
        out, info = cpu.forward_layer(Wt, H, b, extra, forward_kernel=kernel)
        assert out.m == Wt.shape[1] and out.values.dtype == dtype
        assert out.indptr.dtype == np.int64 and out.indices.dtype == np.int64
        assert_rows_sorted(out)
        assert_same_rows(out, ref)
        close(out.values, ref.values, dtype)
        close(out.to_dense(), want, dtype)
        union = np.unique(H.indices).size
        assert info["union"] == union
        rows_read = H.nnz if info["kernel"] == "per-example" else union
        assert info["bytes"] == rows_read * Wt.shape[1] * np.dtype(dtype).itemsize


def test_forward_rule_and_bad_kernel():
    assert cpu.choose_forward(1, 140, 4096, 4096, 4) == "per-example"
    assert cpu.choose_forward(8, 140, 4096, 4096, 4) == "per-example"
    assert cpu.choose_forward(32, 400, 16384, 16384, 4) == "per-example"
    assert cpu.choose_forward(64, 140, 4096, 4096, 4) == "input-major"
    assert cpu.choose_forward(64, 10, 256, 256, 4) == "per-example"  # W^T fits in L2
    Wt, H, _, _ = setup(CASES[0], np.float64)
    with pytest.raises(ValueError, match="forward_kernel"):
        cpu.forward_layer(Wt, H, np.zeros(H.n), forward_kernel="dense")


def test_get_kernels_cpu_is_numba_module():
    assert get_kernels("numpy") is cpu and get_kernels("reference") is reference


# ---------------------------------------------------------------- backward, Gram


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_block(case, dtype):
    Wt, H, V, _ = setup(case, dtype)
    full = V.to_dense() @ Wt.T  # u_i = W^T v_i for every input row, n x m_in
    rows = np.repeat(np.arange(H.n), H.counts())
    want = full[rows, H.indices]
    ref = reference.backward_block(Wt, H, V)
    close(ref, want, dtype)
    got = cpu.backward_block(Wt, H, V)
    assert got.dtype == dtype and got.shape == (H.nnz,)
    close(got, want, dtype)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_gram(case, dtype):
    _, H, _, _ = setup(case, dtype)
    Hd = H.to_dense()
    want = Hd @ Hd.T
    close(reference.gram(H), want, dtype)
    got = cpu.gram(H)
    assert got.dtype == dtype and got.shape == (H.n, H.n)
    np.testing.assert_array_equal(got, got.T)
    close(got, want, dtype)


# ---------------------------------------------------------------- updates


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_updates(case, dtype):
    Wt, H, V, rng = setup(case, dtype)
    coef = rng.standard_normal(H.n).astype(dtype)
    want = Wt + H.to_dense().T @ (coef[:, None] * V.to_dense())
    for mod in (reference, cpu):
        for update in (mod.update_scatter, mod.update_rowdense):
            W = Wt.copy()
            assert update(W, H, V, coef) is None
            close(W, want, dtype)


def test_updates_reject_non_contiguous():
    Wt, H, V, _ = setup(CASES[1], np.float64)
    with pytest.raises(ValueError, match="C-contiguous"):
        cpu.update_scatter(np.asfortranarray(Wt), H, V, np.ones(H.n))


def test_mismatched_shapes_raise_before_jitted_code():
    Wt, H, V, _ = setup(CASES[1], np.float64)  # Wt is 300 x 64
    with pytest.raises(ValueError, match="m_in"):
        cpu.forward_layer(Wt.T.copy(), H, np.zeros(H.n))
    with pytest.raises(ValueError, match="extra"):
        cpu.forward_layer(Wt, H, np.zeros(H.n), extra=np.zeros((H.n, 3)))
    with pytest.raises(ValueError, match="m_out"):
        cpu.backward_block(Wt, H, H)
    with pytest.raises(ValueError):
        cpu.update_rowdense(Wt, H, V, np.ones(H.n + 1))


def test_warmup_runs():
    for dtype in DTYPES:
        cpu.warmup(dtype)
