"""The numba building blocks that the CPU kernels (``cpu``) and the fused update (``fused``)
share: axpys, the column tiles, threshold-and-compact, H transposed, the in-place check (the
checks every backend shares are in ``arguments``).

Conventions as in ``cpu``: unsigned index views inside jitted code, scalars in the weights'
dtype, no fastmath.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from subquad.model.sparse import SparseRows

FORWARD_KERNELS = ("auto", "per-example", "input-major")
PER_EXAMPLE_TILE = 2048  # columns of the per-example kernel's accumulator tile
INPUT_MAJOR_TILE_BYTES = 256 * 1024  # n accumulator tiles of the input-major kernel fit in L2
INPUT_MAJOR_MIN_N = 64  # auto rule: input-major from this batch size on (see choose_forward)
INPUT_MAJOR_MIN_W_BYTES = 2 * 1024 * 1024  # ... and only when W^T does not fit in L2


@njit(cache=True)
def axpy1(g, a, w):
    """g += a w over one tile."""
    for c in range(g.size):
        g[c] += a * w[c]


@njit(cache=True)
def axpy4(g, a0, w0, a1, w1, a2, w2, a3, w3):
    """g += a0 w0 + a1 w1 + a2 w2 + a3 w3: four gathered rows of W^T fused in one pass."""
    for c in range(g.size):
        g[c] += a0 * w0[c] + a1 * w1[c] + a2 * w2[c] + a3 * w3[c]


@njit(cache=True)
def count_above(g, bi):
    """Number of entries of g above the threshold b_i."""
    cnt = 0
    for c in range(g.size):
        if g[c] > bi:
            cnt += 1
    return cnt


@njit(cache=True)
def tile_cols(j, tile, m_out):
    """Columns c0:c1 of column tile j (the last tile stops at m_out)."""
    c0 = j * tile
    return c0, min(c0 + tile, m_out)


@njit(parallel=True, cache=True)
def _compact(G, b, tile, offsets, out_idx, out_val):
    """Fused threshold-and-compact: write sorted indices c with G[i, c] > b_i and G - b_i."""
    n, ntile = offsets.shape
    for t in prange(n * ntile):
        i = t // ntile
        c0, c1 = tile_cols(t % ntile, tile, G.shape[1])
        q = offsets[i, t % ntile]
        bi = b[i]
        for c in range(c0, c1):
            x = G[i, c]
            if x > bi:
                out_idx[q] = c
                out_val[q] = x - bi
                q += 1


@njit(cache=True)
def transpose(indptr, idx, m_in):
    """H in CSC form restricted to its used rows: (cols, colptr, sample ids, permutation).

    A counting sort, O(m_in + nnz); the values of used row cols[u] are values[perm[colptr[u]:
    colptr[u+1]]], for samples in increasing order. Independent of the dtype (one compilation).
    """
    n = indptr.size - 1
    start = np.zeros(m_in + 1, np.int64)
    for p in range(idx.size):
        start[idx[p] + 1] += 1
    nu = 0
    for j in range(m_in):
        if start[j + 1] > 0:
            nu += 1
        start[j + 1] += start[j]
    pos = start[:-1].copy()
    rows = np.empty(idx.size, np.int64)
    perm = np.empty(idx.size, np.int64)
    for i in range(n):
        for p in range(indptr[i], indptr[i + 1]):
            q = pos[idx[p]]
            rows[q] = i
            perm[q] = p
            pos[idx[p]] = q + 1
    cols = np.empty(nu, np.int64)
    colptr = np.empty(nu + 1, np.int64)
    u = 0
    for j in range(m_in):
        if start[j + 1] > start[j]:
            cols[u] = j
            colptr[u] = start[j]
            u += 1
    colptr[nu] = idx.size
    return cols, colptr, rows, perm


def tile_for(kernel: str, n: int, m_out: int, itemsize: int) -> int:
    """Column tile width: ~2048 per example, 256 KiB / (itemsize n) input-major in [512, 2048].

    Shrunk (to a multiple of 64) when there would be fewer tasks than threads.
    """
    if kernel == "per-example":
        tile = PER_EXAMPLE_TILE
        tasks_per_row = -(-numba.get_num_threads() // max(n, 1))
    else:
        tile = min(2048, max(512, INPUT_MAJOR_TILE_BYTES // (itemsize * max(n, 1))))
        tasks_per_row = numba.get_num_threads()
    tile = min(tile, -(-m_out // tasks_per_row))
    return max(64, -(-tile // 64) * 64)


def threshold_compact(G: np.ndarray, b: np.ndarray, tile: int,
                       counts: np.ndarray) -> SparseRows:
    """The sparse rows {k: g_i[k] > b_i} with values g_i - b_i; tile offsets from the counts."""
    n, ntile = counts.shape
    starts = np.zeros(n * ntile + 1, np.int64)
    np.cumsum(counts.ravel(), out=starts[1:])
    out_idx = np.empty(starts[-1], np.int64)
    out_val = np.empty(starts[-1], G.dtype)
    _compact(G, b, tile, starts[:-1].reshape(n, ntile), out_idx, out_val)
    return SparseRows(starts[::ntile].copy(), out_idx, out_val, int(G.shape[1]))


def check_inplace(Wt: np.ndarray) -> None:
    """The updates write into Wt itself, so it must be a C-contiguous numpy array."""
    if not (isinstance(Wt, np.ndarray) and Wt.flags.c_contiguous and Wt.flags.writeable):
        raise ValueError("Wt must be a writeable C-contiguous numpy array (updated in place)")
