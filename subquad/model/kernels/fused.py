"""The fused update (CPU, numba): apply the pending rank-n update inside the next forward.

The update of iteration t, W_l^T[j, k] += coef_i h_{i,l-1}[j] v_{i,l}[k] (ALGORITHM.md section 3),
writes rows j of W_l^T in the union of the supports S_{i,l-1} at t. The forward of iteration
t + 1 streams rows j in the union of the new supports, which differ from the old ones only by
the few neurons that flipped. So the update is kept pending and applied by the forward: the
first sample that reads a row tile (one column tile per task; 4 rows at a time in the
per-example shape) applies the row's pending sparse axpys to W right after its read, while the
tile is in cache; later readers read the updated tile. What the first reader's accumulator
missed, sum_j h_i[j] d_j = sum_i' M[i, i'] v_i' with M[i, i'] = sum_j h_i[j] coef_i' h_i'[j]
over its first reads, is added from the n x n matrix M at the end of its tile (n s scattered
adds instead of one per pending entry; measured 1.4 ms of 5.7 at m = 16384, n = 16). Applying
before the read would make each scattered write wait for its own line from memory (measured
2-3x slower than the separate scatter). Pending rows the forward does not read (their neuron
flipped off) are applied right after it, so W_l is fully updated when the forward returns.

The top layer's backward, u_{L-1,i}[j] = sum_{k in S_{L,i}} W_L^T[j, k] a[k] (v_L = D_L a),
needs the rows j in S_{L-1,i} that this forward streams, but S_{L,i} is known only after it.
The forward therefore dots each row, while in cache, with a[P_i] for a guess P_i of S_{L,i}
(the last forward's; in the over-parametrised regime almost no neuron flips per step), and
:func:`top_backward` adds the columns that switched on and subtracts those that switched off:
only the flipped columns are read from memory (s reads each). Iterates match dense
Gauss-Newton to the same tolerance as the scatter mode (sums are only reordered).
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from numba import njit, prange

from subquad.model.kernels import numba_common as nc
from subquad.model.kernels.arguments import check_widths, per_sample, prepare, tiny_case
from subquad.model.kernels.numba_common import FORWARD_KERNELS
from subquad.model.sparse import SparseRows, row_ids

FUSED_MAX_TILE_BYTES = 64 * 1024  # per-example fused: widest row tile one task streams
#: ``auto`` for the fused forward: per-example at every n. Its whole-row tiles stream at 35-39
#: GB/s where the input-major shape's short row segments and n accumulator tiles do not
#: (results/fused-kernels, AMD EPYC VM, float32, per iteration per-example / input-major:
#: 0.44-0.72 at one thread, 0.60-0.84 at two, n = 16-128, m = 4096-16384)
FUSED_AUTO_KERNEL = "per-example"


@njit(cache=True)
def _apply_pending(w, a, pptr, psmp, pval, vptr, vrel, vval, t):
    """w += d for each entry d = pval v_i[k] of pending row a in this column tile: the tile was
    just read, so these scattered read-modify-writes hit cache (applied before the read each
    would wait for its own line from memory, measured 2-3x slower than the separate scatter)."""
    for p in range(pptr[a], pptr[a + 1]):
        i = psmp[p]
        x = pval[p]
        for q in range(vptr[i, t], vptr[i, t + 1]):
            w[vrel[q]] += x * vval[q]


@njit(cache=True)
def _add_first_reads(g, i, M, vptr, vrel, vval, t):
    """g_i += sum_i' M[i, i'] v_i' over this tile: what sample i's first reads of pending rows
    missed (they read W before its update; M[i, i'] = sum_j h_i[j] coef_i' h_i'[j])."""
    for i2 in range(M.shape[1]):
        x = M[i, i2]
        if x != 0:
            for q in range(vptr[i2, t], vptr[i2, t + 1]):
                g[vrel[q]] += x * vval[q]


@njit(cache=True)
def _dot4(w0, w1, w2, w3, orel, oval, q0, q1, D, t, r):
    """D[t, r..r+3] = the four rows' dots with the predicted v_L over its entries q0:q1 (a
    gather from rows still in cache; orel are positions inside the tile)."""
    zero = oval.dtype.type(0)
    s0 = s1 = s2 = s3 = zero
    for q in range(q0, q1):
        k = orel[q]
        x = oval[q]
        s0 += w0[k] * x
        s1 += w1[k] * x
        s2 += w2[k] * x
        s3 += w3[k] * x
    D[t, r] = s0
    D[t, r + 1] = s1
    D[t, r + 2] = s2
    D[t, r + 3] = s3


@njit(cache=True)
def _dot1(w, orel, oval, q0, q1):
    """One row's dot with the predicted v_L over its entries q0:q1 in this tile."""
    s = oval.dtype.type(0)
    for q in range(q0, q1):
        s += w[orel[q]] * oval[q]
    return s


@njit(parallel=True, cache=True)
def _forward_fused_per_example(Wt, indptr, idx, val, first, pptr, psmp, pval, vptr, vrel, vval,
                               M, b, tile, G, counts, optr, orel, oval, D):
    """The per-example gather-axpy (4 rows fused), one column tile per task, samples in order.

    Entry r of H (sample i, row idx[r]) with first[r] >= 0 is the row's first reader: right
    after reading the tile it applies pending row first[r] to W; later samples read the updated
    tile, and g_i gets what its first reads missed from M at the end. With ``optr`` (top
    layer), each row read also gives the backward's dot with the predicted v_L into D.
    """
    n, ntile = counts.shape
    dots = optr.shape[0] > 0
    for t in prange(ntile):
        c0, c1 = nc.tile_cols(t, tile, Wt.shape[1])
        for i in range(n):
            g = G[i, c0:c1]
            g[:] = 0
            p = indptr[i]
            e = indptr[i + 1]
            while p < e:
                k = min(4, e - p)
                if k == 4:
                    w0, w1 = Wt[idx[p], c0:c1], Wt[idx[p + 1], c0:c1]
                    w2, w3 = Wt[idx[p + 2], c0:c1], Wt[idx[p + 3], c0:c1]
                    nc.axpy4(g, val[p], w0, val[p + 1], w1, val[p + 2], w2, val[p + 3], w3)
                else:
                    for r in range(p, e):
                        nc.axpy1(g, val[r], Wt[idx[r], c0:c1])
                for r in range(p, p + k):
                    if first[r] >= 0:
                        _apply_pending(Wt[idx[r], c0:c1], first[r], pptr, psmp, pval, vptr,
                                       vrel, vval, t)
                if dots and k == 4:
                    _dot4(Wt[idx[p], c0:c1], Wt[idx[p + 1], c0:c1], Wt[idx[p + 2], c0:c1],
                          Wt[idx[p + 3], c0:c1], orel, oval, optr[i, t], optr[i, t + 1], D, t, p)
                elif dots:
                    for r in range(p, e):
                        D[t, r] = _dot1(Wt[idx[r], c0:c1], orel, oval, optr[i, t],
                                        optr[i, t + 1])
                p += k
            _add_first_reads(g, i, M, vptr, vrel, vval, t)
            counts[i, t] = nc.count_above(g, b[i])


@njit(parallel=True, cache=True)
def _forward_fused_input_major(Wt, cols, colptr, rows, cval, perm, pend, pptr, psmp, pval, vptr,
                               vrel, vval, M, b, tile, G, counts, optr, orel, oval, D):
    """The input-major forward over the union rows ``cols``: row cols[u]'s first reader reads
    it, then applies pending row pend[u] (if >= 0) to W; the others read the updated tile.
    One column tile per task; M and D as in the per-example kernel."""
    n, ntile = counts.shape
    dots = optr.shape[0] > 0
    for t in prange(ntile):
        c0, c1 = nc.tile_cols(t, tile, Wt.shape[1])
        for i in range(n):
            G[i, c0:c1] = 0
        for u in range(cols.size):
            w = Wt[cols[u], c0:c1]
            p0 = colptr[u]
            nc.axpy1(G[rows[p0], c0:c1], cval[p0], w)
            if pend[u] >= 0:
                _apply_pending(w, pend[u], pptr, psmp, pval, vptr, vrel, vval, t)
            for p in range(p0 + 1, colptr[u + 1]):
                nc.axpy1(G[rows[p], c0:c1], cval[p], w)
            if dots:
                for p in range(p0, colptr[u + 1]):
                    i = rows[p]
                    D[t, perm[p]] = _dot1(w, orel, oval, optr[i, t], optr[i, t + 1])
        for i in range(n):
            g = G[i, c0:c1]
            _add_first_reads(g, i, M, vptr, vrel, vval, t)
            counts[i, t] = nc.count_above(g, b[i])


@njit(cache=True)
def _first_reads(indptr, idx, val, m_in, prow, pptr, psmp, pval, M):
    """Per-example order: entry r (sample i) is row idx[r]'s first reader when no earlier
    sample reads that row; at_first[r] is then its pending row (-1: none) and M[i] gets the
    row's first-read coefficients (as ``_first_read_coefs``). Also returns the pending rows no
    sample reads (applied after the forward) and the number of distinct rows read."""
    pend_of = np.full(m_in, -1, np.int64)
    for a in range(prow.size):
        pend_of[prow[a]] = a
    seen = np.zeros(m_in, np.bool_)
    at_first = np.full(idx.size, -1, np.int64)
    nunion = 0
    for i in range(indptr.size - 1):
        for r in range(indptr[i], indptr[i + 1]):
            j = idx[r]
            if not seen[j]:
                seen[j] = True
                nunion += 1
                a = pend_of[j]
                at_first[r] = a
                if a >= 0:
                    for p in range(pptr[a], pptr[a + 1]):
                        M[i, psmp[p]] += val[r] * pval[p]
    return at_first, np.flatnonzero(~seen[prow]), nunion


@njit(cache=True)
def _first_read_coefs(smp, x, rowp, pptr, psmp, pval, M):
    """M[i, i'] += x_r pval_p for each first read r (sample smp[r], value x[r] = h_i[j]) of
    pending row rowp[r] and each of that row's pending entries p (sample i' = psmp[p])."""
    for r in range(smp.size):
        a = rowp[r]
        for p in range(pptr[a], pptr[a + 1]):
            M[smp[r], psmp[p]] += x[r] * pval[p]


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


def _tile_pointers(V: SparseRows, tile: int, ntile: int) -> tuple[np.ndarray, np.ndarray]:
    """vptr (n, ntile + 1): sample i's entries of V in column tile t are vptr[i, t]:vptr[i, t+1];
    and each entry's position inside its column tile (uint64).

    V's rows are sorted, so the keys i m + k increase and one searchsorted finds every bound.
    """
    m, n = V.m, V.n
    idx = np.asarray(V.indices, dtype=np.int64)
    bounds = np.minimum(np.arange(ntile + 1, dtype=np.int64) * tile, m)
    vptr = np.searchsorted(row_ids(V) * m + idx,
                           np.arange(n, dtype=np.int64)[:, None] * m + bounds[None, :])
    return vptr, (idx % tile).astype(np.uint64)


def _fused_tile(kernel: str, n: int, m_out: int, itemsize: int) -> int:
    """Column tile: input-major as ``numba_common.tile_for``; per example one tile per thread,
    up to FUSED_MAX_TILE_BYTES of a row (a multiple of 64).

    Tasks are whole tiles here (samples run in order inside one), so wider tiles mean longer
    sequential streams and fewer visits of each pending row: measured at m = 16384, n = 16,
    float32, 1 thread: update + forward of one layer 19.9 ms at tile 2048, 17.0 at 4096,
    14.8 at 8192, 14.2 at 16384.
    """
    if kernel == "input-major":
        return nc.tile_for(kernel, n, m_out, itemsize)
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


_G_CACHE: dict = {}


def _accumulators(n: int, m_out: int, dt: Any) -> np.ndarray:
    """The n x m_out pre-activation scratch, reused across calls of the same shape: a fresh
    one costs its page faults inside the timed forward. The kernels overwrite it entirely
    and the output is compacted out of it, so reuse is safe while calls do not overlap (the
    suite never runs two forwards at once in one process)."""
    key = (n, m_out, np.dtype(dt).str)
    G = _G_CACHE.get(key)
    if G is None:
        _G_CACHE.clear()  # keep one buffer: a sweep's cells change the shape
        G = _G_CACHE[key] = np.empty((n, m_out), dt)
    return G


def forward_fused(
    Wt: np.ndarray,
    H: SparseRows,
    b: np.ndarray,
    pending: tuple[SparseRows, SparseRows, np.ndarray] | None,
    forward_kernel: str = "auto",
    tile: int | None = None,
    predict: tuple[SparseRows, np.ndarray] | None = None,
) -> tuple[SparseRows, dict]:
    """Apply ``pending`` = (H_old, V_old, coef) to Wt in place, fused with the forward of H.

    Returns the same rows and values as ``cpu.forward_layer`` on the updated Wt, and ``info``
    with ``kernel``, ``bytes`` (rows of Wt the forward reads, plus one element per pending
    entry in a row it does not read), ``union``, ``update_madds`` (the pending block,
    sum_i |S_in,i| |S_out,i|) and ``rows_after`` (pending rows applied after the forward).
    ``predict`` = (P, a) on the top layer: P's rows are a guess of this forward's output
    supports (the last forward's); while each row j of H_i is in cache the kernel also computes
    ``info["dots"]`` (aligned with H's entries) = sum_{k in P_i} Wt[j, k] a[k], the backward's
    u_{L-1} if the guess holds (:func:`top_backward` corrects it), and ``info["dot_madds"]``.
    ``tile`` overrides the column tile width (tests use it to cross tile boundaries).
    """
    if forward_kernel not in FORWARD_KERNELS:
        raise ValueError(f"forward_kernel must be one of {FORWARD_KERNELS}, got {forward_kernel!r}")
    nc.check_inplace(Wt)
    check_widths(Wt, H)
    dt = Wt.dtype
    m_in, m_out = Wt.shape
    n = H.n
    Hp, Vp, coef = pending if pending is not None else _empty_pending(n, m_in, m_out, dt)
    check_widths(Wt, Hp, Vp)
    kernel = FUSED_AUTO_KERNEL if forward_kernel == "auto" else forward_kernel
    indptr, idx, val = prepare(H, dt)
    if tile is None:
        tile = _fused_tile(kernel, n, m_out, dt.itemsize)
    ntile = max(1, -(-m_out // tile))
    bb = per_sample(b, n, dt)
    pin, pidx, ph = prepare(Hp, dt)
    _, vidx, vval = prepare(Vp, dt)
    prow, pptr, psmp, pperm = nc.transpose(pin, pidx, m_in)
    pval = per_sample(coef, Hp.n, dt)[psmp] * ph[pperm]
    vptr, vrel = _tile_pointers(Vp, tile, ntile)
    G = _accumulators(n, m_out, dt)
    counts = np.empty((n, ntile), np.int64)
    M = np.zeros((n, Hp.n), dt)
    # empty (optr, orel, oval, D) make the kernels skip the backward dots
    optr, orel, oval, D = (np.zeros((0, 0), np.int64), np.zeros(0, np.uint64), np.zeros(0, dt),
                           np.zeros((0, 0), dt))
    if predict is not None:
        P, a = predict
        if P.n != n or P.m != m_out:
            raise ValueError(f"predict has {P.n} rows of width {P.m}; expected {n} of {m_out}")
        optr, orel = _tile_pointers(P, tile, ntile)
        oval = np.ascontiguousarray(np.asarray(a)[np.asarray(P.indices)], dtype=dt)
        D = np.zeros((ntile, idx.size), dt)
    if kernel == "per-example":
        at_first, left, nunion = _first_reads(indptr, idx, val, m_in, prow, pptr, psmp, pval, M)
        _forward_fused_per_example(Wt, indptr, idx.view(np.uint64), val, at_first, pptr, psmp,
                                   pval, vptr, vrel, vval, M, bb, tile, G, counts, optr, orel,
                                   oval, D)
        rows_read = idx.size
    else:
        union, colptr, rows, perm = nc.transpose(indptr, idx, m_in)
        pend, left = _pending_map(union, prow)
        cval = val[perm]
        hit = np.flatnonzero(pend >= 0)
        _first_read_coefs(rows[colptr[hit]], cval[colptr[hit]], pend[hit], pptr, psmp, pval, M)
        _forward_fused_input_major(Wt, union.view(np.uint64), colptr, rows, cval, perm, pend,
                                   pptr, psmp, pval, vptr, vrel, vval, M, bb, tile, G, counts,
                                   optr, orel, oval, D)
        rows_read = nunion = union.size
    _apply_rows(Wt, prow.view(np.uint64), left, pptr, psmp, pval, vptr, vidx.view(np.uint64),
                vval)
    out = nc.threshold_compact(G, bb, tile, counts)
    vcount = Vp.counts().astype(np.int64)
    per_row = np.add.reduceat(vcount[psmp], pptr[:-1]) if psmp.size else np.zeros(0, np.int64)
    info = {"kernel": kernel,
            "bytes": float((rows_read * m_out + per_row[left].sum()) * dt.itemsize),
            "union": int(nunion),
            "update_madds": float((Hp.counts() * vcount).sum()),
            "rows_after": int(left.size)}
    if predict is not None:
        info["dots"] = D.sum(axis=0) if ntile > 1 else D[0]
        info["dot_madds"] = float((H.counts() * predict[0].counts()).sum())
    return out, info


@njit(parallel=True, cache=True)
def _top_correct(Wt, ptr_in, idx_in, u, pptr, pidx, nptr, nidx, a, flips):
    """u_i += sum_{k in S_i, not P_i} Wt[j, k] a_k - sum_{k in P_i, not S_i} Wt[j, k] a_k for every
    j in S_in,i: the dots of the guessed support P_i corrected to the real one S_i (a merge of
    the two sorted sets); flips[i] = |P_i xor S_i|."""
    n = ptr_in.size - 1
    for i in prange(n):
        qa, ea = pptr[i], pptr[i + 1]
        qb, eb = nptr[i], nptr[i + 1]
        f = 0
        while qa < ea or qb < eb:
            if qb >= eb or (qa < ea and pidx[qa] < nidx[qb]):
                k = pidx[qa]
                x = -a[k]
                qa += 1
            elif qa >= ea or nidx[qb] < pidx[qa]:
                k = nidx[qb]
                x = a[k]
                qb += 1
            else:
                qa += 1
                qb += 1
                continue
            f += 1
            for p in range(ptr_in[i], ptr_in[i + 1]):
                u[p] += Wt[idx_in[p], k] * x
        flips[i] = f


def top_backward(Wt: np.ndarray, H_in: SparseRows, dots: np.ndarray, P: SparseRows,
                 H_out: SparseRows, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """u_{L-1} = W_L[S_L, S_{L-1}]^T a[S_L] from the forward's ``dots`` over the guessed
    supports P: add the columns that switched on, subtract those that switched off.

    Returns u (aligned with H_in's entries) and the per-sample flip counts |P_i xor S_i|, whose
    |S_{L-1,i}| reads each are the only scattered reads left of the top layer's backward.
    """
    check_widths(Wt, H_in, H_out)
    dt = Wt.dtype
    ptr_in, idx_in, _ = prepare(H_in, dt)
    pptr, pidx, _ = prepare(P, dt)
    nptr, nidx, _ = prepare(H_out, dt)
    u = np.array(dots, dtype=dt, copy=True)
    flips = np.zeros(H_in.n, np.int64)
    _top_correct(Wt, ptr_in, idx_in.view(np.uint64), u, pptr, pidx, nptr, nidx,
                 np.ascontiguousarray(a, dtype=dt), flips)
    return u, flips


def warmup(dtype: Any = np.float32) -> None:
    """Compile the fused kernels for ``dtype`` on a tiny case (with and without a pending
    update, and with a row that flips off)."""
    H, Wt, b = tiny_case(dtype)
    dt, m = Wt.dtype, Wt.shape[1]
    pending = (SparseRows.from_dense(np.eye(5, m, dtype=dt)), H, np.ones(5, dt))
    a = np.linspace(-1.0, 1.0, m).astype(dt)
    for kernel in FORWARD_KERNELS[1:]:
        forward_fused(Wt, H, b, None, kernel)
        out, info = forward_fused(Wt, H, b, pending, kernel, predict=(H, a))
    top_backward(Wt, H, info["dots"], H, out, a)
