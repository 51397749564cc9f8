"""Sparse kernels for the CPU in numba: same signatures and results as ``reference``.

Shapes and tile sizes follow docs CPU_KERNELS.md (measured on the project's 2-core AVX-512
machine). Symbols follow ALGORITHM.md: sample i has the sorted active set S_i of its input h_i
(s entries on average); ``Wt`` = W^T is m_in x m_out, so the forward streams rows of ``Wt``.
The forward has two shapes, per-example gather-axpy and input-major over H transposed;
:func:`choose_forward` picks one (input-major only for n >= 64 with W^T out of L2).

Conventions inside the jitted code: index arrays that select rows or gather elements are
``uint64`` views (numba vectorises gathers only for unsigned indices), and every scalar is kept
in the weights' dtype (a float64 literal would silently promote a float32 loop). No fastmath:
float64 results must match the dense GEMM to ~1e-8, so sums are only reordered by hand.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from numba import njit, prange

from subquad.model.kernels import fused
from subquad.model.kernels import numba_common as nc
from subquad.model.kernels.arguments import check_widths, per_sample, prepare, tiny_case
from subquad.model.kernels.numba_common import FORWARD_KERNELS
from subquad.model.sparse import SparseRows

# ---------------------------------------------------------------- forward


@njit(cache=True)
def _init_tile(g, extra, i, c0, c1):
    """Start an accumulator tile at extra_i (the low-rank correction) or at zero."""
    if extra.shape[0] > 0:
        g[:] = extra[i, c0:c1]
    else:
        g[:] = 0


@njit(parallel=True, cache=True)
def _forward_per_example(Wt, indptr, idx, val, extra, b, tile, G, counts):
    """G[i] = sum_{j in S_i} h_i[j] Wt[j] (+ extra_i), one (sample, column tile) per task.

    Also counts the entries above b_i per tile while the tile is hot (for the compaction).
    """
    n, ntile = counts.shape
    for t in prange(n * ntile):
        i = t // ntile
        c0, c1 = nc.tile_cols(t % ntile, tile, Wt.shape[1])
        g = G[i, c0:c1]
        _init_tile(g, extra, i, c0, c1)
        p = indptr[i]
        e = indptr[i + 1]
        while p + 4 <= e:
            nc.axpy4(g, val[p], Wt[idx[p], c0:c1], val[p + 1], Wt[idx[p + 1], c0:c1],
                      val[p + 2], Wt[idx[p + 2], c0:c1], val[p + 3], Wt[idx[p + 3], c0:c1])
            p += 4
        while p < e:
            nc.axpy1(g, val[p], Wt[idx[p], c0:c1])
            p += 1
        counts[i, t % ntile] = nc.count_above(g, b[i])


@njit(parallel=True, cache=True)
def _forward_input_major(Wt, cols, colptr, rows, cval, extra, b, tile, G, counts):
    """Same G as the per-example kernel, but each used row of Wt is streamed once per tile.

    (cols, colptr, rows, cval) is H transposed: input row cols[u] is used by the samples
    rows[colptr[u]:colptr[u+1]] with values cval[...]. One column tile per task; the n
    accumulator tiles stay in L2 while the union of rows streams past.
    """
    n, ntile = counts.shape
    for t in prange(ntile):
        c0, c1 = nc.tile_cols(t, tile, Wt.shape[1])
        for i in range(n):
            _init_tile(G[i, c0:c1], extra, i, c0, c1)
        for u in range(cols.size):
            w = Wt[cols[u], c0:c1]
            for p in range(colptr[u], colptr[u + 1]):
                nc.axpy1(G[rows[p], c0:c1], cval[p], w)
        for i in range(n):
            counts[i, t] = nc.count_above(G[i, c0:c1], b[i])


def choose_forward(n: int, s: float, m_in: int, m_out: int, itemsize: int) -> str:
    """The auto rule: 'input-major' iff n >= 64 and W^T (m_in x m_out) is larger than L2.

    Per example reads n s rows of W^T, input-major only the union ~ m_in (1 - (1 - s/m_in)^n),
    but streams one row at a time (less memory-level parallelism than 4 fused rows) and
    parallelises over column tiles only. Measured at m = 4096 / 16384, c = 0.2 (s = 140 / 400):
    per-example is faster or tied for n <= 32 (by 10-35% at m = 16384, n = 8-32), the two tie
    at n = 64-128 where the union saves 30-50% of the bytes; CPU_KERNELS.md found input-major
    best from n = 64 with W out of cache. When W^T sits in L2, re-reads are free: per-example.
    """
    del s  # at the paper's sparsity the crossover shows in n and in where W lives
    if n >= nc.INPUT_MAJOR_MIN_N and m_in * m_out * itemsize > nc.INPUT_MAJOR_MIN_W_BYTES:
        return "input-major"
    return "per-example"


def _preactivations(kernel: str, Wt: np.ndarray, H: SparseRows, b: np.ndarray,
                    ex: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int, int]:
    """Dense g (n x m_out), per-tile counts above b, tile width, union and rows of Wt read."""
    dt = Wt.dtype
    m_in, m_out = Wt.shape
    n = H.n
    indptr, idx, val = prepare(H, dt)
    tile = nc.tile_for(kernel, n, m_out, dt.itemsize)
    G = np.empty((n, m_out), dt)
    counts = np.empty((n, max(1, -(-m_out // tile))), np.int64)
    if kernel == "per-example":
        _forward_per_example(Wt, indptr, idx.view(np.uint64), val, ex, b, tile, G, counts)
        union = int(np.count_nonzero(np.bincount(idx, minlength=m_in)))
        return G, counts, tile, union, idx.size
    cols, colptr, rows, perm = nc.transpose(indptr, idx, m_in)
    _forward_input_major(Wt, cols.view(np.uint64), colptr, rows, val[perm], ex, b, tile, G,
                         counts)
    return G, counts, tile, cols.size, cols.size


def forward_layer(
    Wt: np.ndarray,
    H: SparseRows,
    b: np.ndarray,
    extra: np.ndarray | None = None,
    forward_kernel: str = "auto",
) -> tuple[SparseRows, dict]:
    """g_i = sum_{j in S_i} h_i[j] Wt[j] (+ extra_i); emit sorted {k: g_i[k] > b_i}, g_i - b_i.

    ``forward_kernel`` forces 'per-example' or 'input-major'; 'auto' applies
    :func:`choose_forward`. ``info["bytes"]`` counts the rows of Wt the kernel reads.
    """
    if forward_kernel not in FORWARD_KERNELS:
        raise ValueError(f"forward_kernel must be one of {FORWARD_KERNELS}, got {forward_kernel!r}")
    Wt = np.ascontiguousarray(Wt)
    dt = Wt.dtype
    check_widths(Wt, H)
    n, m_out = H.n, Wt.shape[1]
    ex = np.zeros((0, 0), dt)
    if extra is not None:
        ex = np.ascontiguousarray(extra, dtype=dt)
        if ex.shape != (n, m_out):
            raise ValueError(f"extra must have shape {(n, m_out)}, got {ex.shape}")
    kernel = forward_kernel
    if kernel == "auto":
        kernel = choose_forward(n, H.nnz / max(n, 1), Wt.shape[0], m_out, dt.itemsize)
    bb = per_sample(b, n, dt)
    G, counts, tile, union, rows_read = _preactivations(kernel, Wt, H, bb, ex)
    out = nc.threshold_compact(G, bb, tile, counts)
    info = {"kernel": kernel, "bytes": float(rows_read * m_out * dt.itemsize), "union": union}
    return out, info


# ---------------------------------------------------------------- backward block


@njit(parallel=True, cache=True)
def _backward_block(Wt, ptr_in, idx_in, ptr_out, idx_out, v, u):
    """u[p] = sum_{k in S_out,i} Wt[j, k] v_i[k] for p -> j in S_in,i; 4 rows of Wt at a time."""
    zero = Wt.dtype.type(0)
    for i in prange(ptr_in.size - 1):
        ko = idx_out[ptr_out[i]:ptr_out[i + 1]]
        vo = v[ptr_out[i]:ptr_out[i + 1]]
        p = ptr_in[i]
        e = ptr_in[i + 1]
        while p + 4 <= e:
            r0, r1, r2, r3 = Wt[idx_in[p]], Wt[idx_in[p + 1]], Wt[idx_in[p + 2]], Wt[idx_in[p + 3]]
            s0 = s1 = s2 = s3 = zero
            for q in range(ko.size):
                k = ko[q]
                x = vo[q]
                s0 += r0[k] * x
                s1 += r1[k] * x
                s2 += r2[k] * x
                s3 += r3[k] * x
            u[p], u[p + 1], u[p + 2], u[p + 3] = s0, s1, s2, s3
            p += 4
        while p < e:
            r0 = Wt[idx_in[p]]
            s0 = zero
            for q in range(ko.size):
                s0 += r0[ko[q]] * vo[q]
            u[p] = s0
            p += 1


def backward_block(Wt: np.ndarray, H_in: SparseRows, V_out: SparseRows) -> np.ndarray:
    """u_i[j] = sum_{k in S_out,i} Wt[j, k] v_i[k] for j in S_in,i, aligned with H_in.indices."""
    Wt = np.ascontiguousarray(Wt)
    check_widths(Wt, H_in, V_out)
    ptr_in, idx_in, _ = prepare(H_in, Wt.dtype)
    ptr_out, idx_out, v = prepare(V_out, Wt.dtype)
    u = np.empty(idx_in.size, Wt.dtype)
    _backward_block(Wt, ptr_in, idx_in.view(np.uint64), ptr_out, idx_out.view(np.uint64), v, u)
    return u


# ---------------------------------------------------------------- Gram matrix


@njit(parallel=True, cache=True)
def _gram(indptr, idx, val, m, nchunks, K):
    """K = R R^T, O(n^2 s): row i scattered into a dense buffer, dotted with rows j >= i.

    Rows are dealt cyclically to ``nchunks`` tasks (the triangle is uneven); each task owns
    one zeroed buffer of length m and clears only the entries it set.
    """
    n = indptr.size - 1
    zero = val.dtype.type(0)
    for c in prange(nchunks):
        buf = np.zeros(m, val.dtype)
        for i in range(c, n, nchunks):
            for p in range(indptr[i], indptr[i + 1]):
                buf[idx[p]] = val[p]
            for j in range(i, n):
                acc = zero
                for q in range(indptr[j], indptr[j + 1]):
                    acc += buf[idx[q]] * val[q]
                K[i, j] = acc
                K[j, i] = acc
            for p in range(indptr[i], indptr[i + 1]):
                buf[idx[p]] = zero


def gram(R: SparseRows) -> np.ndarray:
    """K = R R^T (n x n) of sparse rows in O(n^2 s), in the dtype of R's values."""
    dt = np.asarray(R.values).dtype
    indptr, idx, val = prepare(R, dt)
    n = R.n
    K = np.zeros((n, n), dt)
    nchunks = max(1, min(n, 4 * numba.get_num_threads()))
    _gram(indptr, idx.view(np.uint64), val, int(R.m), nchunks, K)
    return K


# ---------------------------------------------------------------- updates


@njit(parallel=True, cache=True)
def _update_scatter(Wt, ptr_in, idx_in, h, ptr_out, idx_out, v, coef, nblocks):
    """Wt[S_in,i, S_out,i] += coef_i h_i v_i^T with row ownership: task t owns a block of rows.

    Each task finds its rows in every S_in,i by binary search (the sets are sorted), so no two
    tasks write the same row and there are no races.
    """
    m_in = Wt.shape[0]
    n = ptr_in.size - 1
    for blk in prange(nblocks):
        r0 = blk * m_in // nblocks
        r1 = (blk + 1) * m_in // nblocks
        for i in range(n):
            a = ptr_in[i]
            si = idx_in[a:ptr_in[i + 1]]
            lo = a + np.searchsorted(si, r0)
            hi = a + np.searchsorted(si, r1)
            ko = idx_out[ptr_out[i]:ptr_out[i + 1]]
            vo = v[ptr_out[i]:ptr_out[i + 1]]
            for p in range(lo, hi):
                row = Wt[np.uint64(idx_in[p])]
                x = coef[i] * h[p]
                for q in range(ko.size):
                    row[ko[q]] += x * vo[q]


def _update_inputs(Wt: np.ndarray, H_in: SparseRows, V_out: SparseRows, coef: Any) -> tuple:
    """Both updates' checks and host arrays: (indptr, indices, values) of H_in, then of V_out,
    in Wt's dtype, then coef per sample."""
    nc.check_inplace(Wt)
    check_widths(Wt, H_in, V_out)
    dt = Wt.dtype
    return (*prepare(H_in, dt), *prepare(V_out, dt), per_sample(coef, H_in.n, dt))


def update_scatter(
    Wt: np.ndarray, H_in: SparseRows, V_out: SparseRows, coef: np.ndarray
) -> None:
    """In place: Wt[j, k] += sum_i coef_i h_i[j] v_i[k] over each sample's s x s block."""
    ptr_in, idx_in, h, ptr_out, idx_out, v, c = _update_inputs(Wt, H_in, V_out, coef)
    nblocks = max(1, min(Wt.shape[0], 8 * numba.get_num_threads()))
    _update_scatter(Wt, ptr_in, idx_in, h, ptr_out, idx_out.view(np.uint64), v, c, nblocks)


@njit(parallel=True, cache=True)
def _scaled_dense(ptr_out, idx_out, v, coef, Vd):
    """Vd[i] = coef_i v_i as dense rows of length m_out."""
    for i in prange(Vd.shape[0]):
        Vd[i, :] = 0
        for q in range(ptr_out[i], ptr_out[i + 1]):
            Vd[i, idx_out[q]] = coef[i] * v[q]


@njit(parallel=True, cache=True)
def _update_rowdense(Wt, cols, colptr, rows, cval, Vd):
    """Wt[j] += sum_i h_i[j] Vd[i] for each used row j (one task per row: no races)."""
    for u in prange(cols.size):
        row = Wt[cols[u]]
        p = colptr[u]
        e = colptr[u + 1]
        while p + 4 <= e:
            nc.axpy4(row, cval[p], Vd[rows[p]], cval[p + 1], Vd[rows[p + 1]],
                      cval[p + 2], Vd[rows[p + 2]], cval[p + 3], Vd[rows[p + 3]])
            p += 4
        while p < e:
            nc.axpy1(row, cval[p], Vd[rows[p]])
            p += 1


def update_rowdense(
    Wt: np.ndarray, H_in: SparseRows, V_out: SparseRows, coef: np.ndarray
) -> None:
    """In place: Wt[j, :] += sum_i coef_i h_i[j] v_i for each j in the union of the S_in,i.

    Touches whole rows (contiguous, vectorised); needs an n x m_out scratch of coef_i v_i.
    """
    ptr_in, idx_in, h, ptr_out, idx_out, v, c = _update_inputs(Wt, H_in, V_out, coef)
    Vd = np.empty((H_in.n, Wt.shape[1]), Wt.dtype)
    _scaled_dense(ptr_out, idx_out.view(np.uint64), v, c, Vd)
    cols, colptr, rows, perm = nc.transpose(ptr_in, idx_in, Wt.shape[0])
    _update_rowdense(Wt, cols.view(np.uint64), colptr, rows.view(np.uint64), h[perm], Vd)


# ---------------------------------------------------------------- warm-up


def warmup(dtype: Any = np.float32) -> None:
    """Compile (or load from the cache) every kernel for ``dtype`` on tiny inputs.

    Call it before any timed phase so that compilation is never measured.
    """
    H, Wt, b = tiny_case(dtype)
    dt, m = Wt.dtype, Wt.shape[1]
    for kernel in FORWARD_KERNELS[1:]:
        forward_layer(Wt, H, b, forward_kernel=kernel)
        forward_layer(Wt, H, b, extra=np.ones((H.n, m), dt), forward_kernel=kernel)
    backward_block(Wt, H, H)
    gram(H)
    coef = np.ones(H.n, dt)
    update_scatter(Wt, H, H, coef)
    update_rowdense(Wt, H, H, coef)
    fused.warmup(dt)
