"""Reference sparse kernels in plain numpy: loops over samples, written to be obviously right.

They define the results the fast backends (``cpu``, ``gpu``) must reproduce; they are far too
slow for timing. Symbols follow ALGORITHM.md: sample i has the active set S_i of its input
h_i (s entries on average) and the layer is m_in x m_out; ``Wt`` is W^T (m_in x m_out).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from subquad.model.sparse import SparseRows


def _row(R: SparseRows, i: int, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """The sorted active set S_i and its values (in ``dtype``) of row i."""
    a, e = int(R.indptr[i]), int(R.indptr[i + 1])
    return np.asarray(R.indices[a:e], dtype=np.int64), np.asarray(R.values[a:e], dtype=dtype)


def union_size(H: SparseRows) -> int:
    """Number of distinct input rows touched by the batch: |union_i S_i|."""
    return int(np.unique(np.asarray(H.indices)).size)


def forward_layer(
    Wt: np.ndarray, H: SparseRows, b: np.ndarray, extra: np.ndarray | None = None
) -> tuple[SparseRows, dict]:
    """g_i = sum_{j in S_i} h_i[j] Wt[j, :] (+ extra_i); keep g_i > b_i with values g_i - b_i."""
    dt = Wt.dtype
    b = np.asarray(b, dtype=dt)
    counts, idx_parts, val_parts = [], [], []
    for i in range(H.n):
        idx, val = _row(H, i, dt)
        g = val @ Wt[idx] if idx.size else np.zeros(Wt.shape[1], dtype=dt)
        if extra is not None:
            g = g + np.asarray(extra[i], dtype=dt)
        act = np.flatnonzero(g > b[i])
        counts.append(act.size)
        idx_parts.append(act.astype(np.int64))
        val_parts.append((g[act] - b[i]).astype(dt))
    indptr = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64)
    out = SparseRows(indptr, np.concatenate(idx_parts + [np.zeros(0, np.int64)]),
                     np.concatenate(val_parts + [np.zeros(0, dt)]), int(Wt.shape[1]))
    info = {"kernel": "reference", "bytes": float(H.nnz * Wt.shape[1] * dt.itemsize),
            "union": union_size(H)}
    return out, info


def backward_block(Wt: np.ndarray, H_in: SparseRows, V_out: SparseRows) -> np.ndarray:
    """u_i[j] = sum_{k in S_out,i} Wt[j, k] v_i[k] for j in S_in,i, aligned with H_in.indices."""
    dt = Wt.dtype
    u = np.zeros(H_in.nnz, dtype=dt)
    for i in range(H_in.n):
        si, _ = _row(H_in, i, dt)
        so, v = _row(V_out, i, dt)
        u[int(H_in.indptr[i]):int(H_in.indptr[i + 1])] = Wt[np.ix_(si, so)] @ v
    return u


def gram(R: SparseRows) -> np.ndarray:
    """K = R R^T (n x n): each row scattered into a dense buffer, dotted with every row."""
    dt = np.asarray(R.values).dtype
    K = np.zeros((R.n, R.n), dtype=dt)
    buf = np.zeros(R.m, dtype=dt)
    for i in range(R.n):
        idx_i, val_i = _row(R, i, dt)
        buf[idx_i] = val_i
        for j in range(R.n):
            idx_j, val_j = _row(R, j, dt)
            K[i, j] = buf[idx_j] @ val_j
        buf[idx_i] = 0
    return K


def update_scatter(
    Wt: np.ndarray, H_in: SparseRows, V_out: SparseRows, coef: np.ndarray
) -> None:
    """In place: Wt[S_in,i, S_out,i] += coef_i h_i v_i^T, one sample's s x s block at a time."""
    dt = Wt.dtype
    for i in range(H_in.n):
        si, h = _row(H_in, i, dt)
        so, v = _row(V_out, i, dt)
        Wt[np.ix_(si, so)] += dt.type(coef[i]) * np.outer(h, v)


def update_rowdense(
    Wt: np.ndarray, H_in: SparseRows, V_out: SparseRows, coef: np.ndarray
) -> None:
    """In place: whole rows j of the input union get Wt[j, :] += sum_i coef_i h_i[j] v_i."""
    dt = Wt.dtype
    rows = np.unique(np.asarray(H_in.indices))
    Hd = np.asarray(H_in.to_dense(), dtype=dt)[:, rows]
    Vd = np.asarray(V_out.to_dense(), dtype=dt) * np.asarray(coef, dtype=dt)[:, None]
    Wt[rows] += Hd.T @ Vd
