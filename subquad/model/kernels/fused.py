"""The fused update (CPU, numba): apply the pending rank-n update inside the next forward.

The update of iteration t, W_l^T[j, k] += coef_i h_{i,l-1}[j] v_{i,l}[k] (ALGORITHM.md section 3),
writes rows j of W_l^T in the union of the supports S_{i,l-1} at t. The forward of iteration
t + 1 streams rows j in the union of the new supports, which differ from the old ones only by
the few neurons that flipped. So the update is kept pending and applied by the forward: the
first sample that reads a row tile (one column tile per task; 4 rows at a time in the
per-example shape) applies the row's pending sparse axpys right after its read, while the tile
is in L1, and adds the change to its own accumulator (g_i += h_i[j] d); later readers read the
updated tile. Applying before the read would make each scattered write wait for its own line
from memory (measured 2-3x slower than the separate scatter). Pending rows the forward does
not read (their neuron flipped off) are applied right after it, so W_l is fully updated when
the forward returns: the backward of iteration t + 1 sees the new weights, as after a
separate scatter. Each weight receives the scatter's products (x = coef_i h_i[j],
w += x v_i[k]); the forward result differs from forward(updated W) only by rounding
(h (w + d) against h w + h d for the first reader), so the iterates match dense Gauss-Newton
to the same tolerance as the scatter mode.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from numba import njit, prange

from subquad.model.kernels.cpu import (
    FORWARD_KERNELS,
    _axpy1,
    _axpy4,
    _check_inplace,
    _check_widths,
    _count_above,
    _init_tile,
    _per_sample,
    _prepare,
    _threshold_compact,
    _tile_for,
    _transpose,
    choose_forward,
)
from subquad.model.sparse import SparseRows, row_ids

FUSED_MAX_TILE_BYTES = 64 * 1024  # per-example fused: widest row tile one task streams


@njit(cache=True)
def _apply_after_read(w, g, h, c0, a, pptr, psmp, pval, vptr, vidx, vval, t):
    """Apply pending row a to the row tile w (from column c0) that the accumulator tile g has
    just read with weight h: w += d and g += h d for each pending entry d = pval v_i[k].

    The tile is in L1 right after the read, so these scattered read-modify-writes hit cache;
    applied before the read they would each wait for their own line from memory.
    """
    for p in range(pptr[a], pptr[a + 1]):
        i = psmp[p]
        x = pval[p]
        for q in range(vptr[i, t], vptr[i, t + 1]):
            d = x * vval[q]
            c = vidx[q] - c0
            w[c] += d
            g[c] += h * d


@njit(parallel=True, cache=True)
def _forward_fused_per_example(Wt, indptr, idx, val, first, pptr, psmp, pval, vptr, vidx, vval,
                               extra, b, tile, G, counts):
    """The per-example gather-axpy (4 rows fused), one column tile per task, samples in order.

    Entry r of H (sample i, row idx[r]) with first[r] >= 0 is the row's first reader: right
    after reading the tile it applies pending row first[r] (and adds the change to g_i); later
    samples read the updated tile.
    """
    n, ntile = counts.shape
    m_out = Wt.shape[1]
    for t in prange(ntile):
        c0 = t * tile
        c1 = min(c0 + tile, m_out)
        for i in range(n):
            g = G[i, c0:c1]
            _init_tile(g, extra, i, c0, c1)
            p = indptr[i]
            e = indptr[i + 1]
            while p < e:
                k = min(4, e - p)
                if k == 4:
                    _axpy4(g, val[p], Wt[idx[p], c0:c1], val[p + 1], Wt[idx[p + 1], c0:c1],
                           val[p + 2], Wt[idx[p + 2], c0:c1], val[p + 3], Wt[idx[p + 3], c0:c1])
                else:
                    for r in range(p, e):
                        _axpy1(g, val[r], Wt[idx[r], c0:c1])
                for r in range(p, p + k):
                    if first[r] >= 0:
                        _apply_after_read(Wt[idx[r], c0:c1], g, val[r], c0, first[r], pptr, psmp,
                                          pval, vptr, vidx, vval, t)
                p += k
            counts[i, t] = _count_above(g, b[i])


@njit(parallel=True, cache=True)
def _forward_fused_input_major(Wt, cols, colptr, rows, cval, pend, pptr, psmp, pval, vptr, vidx,
                               vval, extra, b, tile, G, counts):
    """The input-major forward over the union rows ``cols``: row cols[u]'s first reader applies
    pending row pend[u] (if >= 0) right after reading it, the others read the updated tile.
    One column tile per task."""
    n, ntile = counts.shape
    m_out = Wt.shape[1]
    for t in prange(ntile):
        c0 = t * tile
        c1 = min(c0 + tile, m_out)
        for i in range(n):
            _init_tile(G[i, c0:c1], extra, i, c0, c1)
        for u in range(cols.size):
            w = Wt[cols[u], c0:c1]
            p0 = colptr[u]
            g = G[rows[p0], c0:c1]
            _axpy1(g, cval[p0], w)
            if pend[u] >= 0:
                _apply_after_read(w, g, cval[p0], c0, pend[u], pptr, psmp, pval, vptr, vidx,
                                  vval, t)
            for p in range(p0 + 1, colptr[u + 1]):
                _axpy1(G[rows[p], c0:c1], cval[p], w)
        for i in range(n):
            counts[i, t] = _count_above(G[i, c0:c1], b[i])


@njit(parallel=True, cache=True)
def _apply_rows(Wt, prow, left, pptr, psmp, pval, vptr, vidx, vval):
    """The pending update of the rows prow[a] for a in ``left`` (not streamed): one task per
    row, whole rows of V (vptr[i, 0]:vptr[i, -1])."""
    last = vptr.shape[1] - 1
    for r in prange(left.size):
        a = left[r]
        w = Wt[prow[a]]
        for p in range(pptr[a], pptr[a + 1]):
            i = psmp[p]
            x = pval[p]
            for q in range(vptr[i, 0], vptr[i, last]):
                w[vidx[q]] += x * vval[q]


def _tile_pointers(V: SparseRows, tile: int, ntile: int) -> np.ndarray:
    """vptr (n, ntile + 1): sample i's entries of V in column tile t are vptr[i, t]:vptr[i, t+1].

    V's rows are sorted, so the keys i m + k increase and one searchsorted finds every bound.
    """
    m, n = V.m, V.n
    keys = row_ids(V) * m + np.asarray(V.indices, dtype=np.int64)
    bounds = np.minimum(np.arange(ntile + 1, dtype=np.int64) * tile, m)
    return np.searchsorted(keys, np.arange(n, dtype=np.int64)[:, None] * m + bounds[None, :])


def _fused_tile(kernel: str, n: int, m_out: int, itemsize: int) -> int:
    """Column tile: input-major as ``cpu._tile_for``; per example one tile per thread, up to
    FUSED_MAX_TILE_BYTES of a row (a multiple of 64).

    Tasks are whole tiles here (samples run in order inside one), so wider tiles mean longer
    sequential streams and fewer visits of each pending row: measured at m = 16384, n = 16,
    float32, 1 thread: update + forward of one layer 19.9 ms at tile 2048, 17.0 at 4096,
    14.8 at 8192, 14.2 at 16384.
    """
    if kernel == "input-major":
        return _tile_for(kernel, n, m_out, itemsize)
    tile = min(FUSED_MAX_TILE_BYTES // itemsize, -(-m_out // numba.get_num_threads()))
    return max(64, -(-tile // 64) * 64)


def _empty_pending(n: int, m_in: int, m_out: int, dt: Any) -> tuple:
    """No pending update: (H_old, V_old, coef) with empty rows."""
    ptr = np.zeros(n + 1, np.int64)
    return (SparseRows(ptr, np.zeros(0, np.int64), np.zeros(0, dt), m_in),
            SparseRows(ptr, np.zeros(0, np.int64), np.zeros(0, dt), m_out), np.zeros(n, dt))


def _pending_map(union: np.ndarray, prow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each streamed row union[u], its pending row (-1: none); and the pending rows that
    are not streamed (applied after the forward). Both arguments are sorted and unique."""
    if prow.size == 0:
        return np.full(union.size, -1, np.int64), np.zeros(0, np.int64)
    at = np.minimum(np.searchsorted(prow, union), prow.size - 1)
    hit = prow[at] == union
    left = np.setdiff1d(np.arange(prow.size, dtype=np.int64), at[hit], assume_unique=True)
    return np.where(hit, at, -1), left


def forward_fused(
    Wt: np.ndarray,
    H: SparseRows,
    b: np.ndarray,
    pending: tuple[SparseRows, SparseRows, np.ndarray] | None,
    forward_kernel: str = "auto",
    tile: int | None = None,
) -> tuple[SparseRows, dict]:
    """Apply ``pending`` = (H_old, V_old, coef) to Wt in place, fused with the forward of H.

    Returns the same rows and values as ``cpu.forward_layer`` on the updated Wt, and ``info``
    with ``kernel``, ``bytes`` (rows of Wt the forward reads, plus one element per pending
    entry in a row it does not read), ``union``, ``update_madds`` (the pending block,
    sum_i |S_in,i| |S_out,i|) and ``rows_after`` (pending rows applied after the forward).
    ``tile`` overrides the column tile width (tests use it to cross tile boundaries).
    """
    if forward_kernel not in FORWARD_KERNELS:
        raise ValueError(f"forward_kernel must be one of {FORWARD_KERNELS}, got {forward_kernel!r}")
    _check_inplace(Wt)
    _check_widths(Wt, H)
    dt = Wt.dtype
    m_in, m_out = Wt.shape
    n = H.n
    Hp, Vp, coef = pending if pending is not None else _empty_pending(n, m_in, m_out, dt)
    _check_widths(Wt, Hp, Vp)
    kernel = forward_kernel
    if kernel == "auto":
        kernel = choose_forward(n, H.nnz / max(n, 1), m_in, m_out, dt.itemsize)
    indptr, idx, val = _prepare(H, dt)
    if tile is None:
        tile = _fused_tile(kernel, n, m_out, dt.itemsize)
    ntile = max(1, -(-m_out // tile))
    bb = _per_sample(b, n, dt)
    pin, pidx, ph = _prepare(Hp, dt)
    _, vidx, vval = _prepare(Vp, dt)
    prow, pptr, psmp, pperm = _transpose(pin, pidx, m_in)
    pval = _per_sample(coef, Hp.n, dt)[psmp] * ph[pperm]
    vptr = _tile_pointers(Vp, tile, ntile)
    G = np.empty((n, m_out), dt)
    counts = np.empty((n, ntile), np.int64)
    ex = np.zeros((0, 0), dt)
    args = (pptr, psmp, pval, vptr, vidx, vval, ex, bb, tile, G, counts)
    if kernel == "per-example":
        union, first = np.unique(idx, return_index=True)
        pend, left = _pending_map(union, prow)
        at_first = np.full(idx.size, -1, np.int64)
        at_first[first] = pend
        _forward_fused_per_example(Wt, indptr, idx.view(np.uint64), val, at_first, *args)
        rows_read = idx.size
    else:
        union, colptr, rows, perm = _transpose(indptr, idx, m_in)
        pend, left = _pending_map(union, prow)
        _forward_fused_input_major(Wt, union.view(np.uint64), colptr, rows, val[perm], pend,
                                   *args)
        rows_read = union.size
    _apply_rows(Wt, prow.view(np.uint64), left, pptr, psmp, pval, vptr, vidx, vval)
    out = _threshold_compact(G, bb, tile, counts)
    vcount = Vp.counts().astype(np.int64)
    per_row = np.add.reduceat(vcount[psmp], pptr[:-1]) if psmp.size else np.zeros(0, np.int64)
    info = {"kernel": kernel,
            "bytes": float((rows_read * m_out + per_row[left].sum()) * dt.itemsize),
            "union": int(union.size),
            "update_madds": float((Hp.counts() * vcount).sum()),
            "rows_after": int(left.size)}
    return out, info


def warmup(dtype: Any = np.float32) -> None:
    """Compile the fused kernels for ``dtype`` on a tiny case (with and without a pending
    update, and with a row that flips off)."""
    dt = np.dtype(dtype)
    rng = np.random.default_rng(0)
    m = 16
    dense = (rng.random((5, m)) < 0.4) * rng.standard_normal((5, m))
    H = SparseRows.from_dense(dense.astype(dt))
    Wt = rng.standard_normal((m, m)).astype(dt)
    b = np.zeros(H.n, dt)
    pending = (SparseRows.from_dense(np.eye(5, m, dtype=dt)), H, np.ones(5, dt))
    for kernel in FORWARD_KERNELS[1:]:
        forward_fused(Wt, H, b, None, kernel)
        forward_fused(Wt, H, b, pending, kernel)
