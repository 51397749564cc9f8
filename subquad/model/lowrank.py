"""Lazy low-rank maintenance of one layer's weights, W = W0 + U V^T (ALGORITHM.md 4).

Transposed layout as everywhere in subquad: ``W0t`` = W0^T (m_in x m_out), U (m_out x r),
V (m_in x r), so W^T = W0t + V U^T. An update W += sum_i coef_i v_i h_i^T appends n columns
(U gets coef_i v_i, V gets h_i); when r would pass r_max the correction is folded into W0t
(one m_in x r x m_out GEMM) and r resets to 0.

Protocol of one update (``update`` does all three steps):

    if lr.needs_fold(n):   # r + n > r_max
        lr.fold()          # W0t += V U^T, r = 0; returns its multiply-adds
    lr.append(H_in, V_out, coef)

``append`` raises if the columns do not fit, so a fold is never skipped silently.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from subquad.errors import ConfigError
from subquad.model.backend import gemm_accumulate
from subquad.model.sparse import SparseRows, row_ids, weighted_row_sums


class LazyLowRank:
    """W^T = W0t + V[:, :r] U[:, :r]^T for one layer, with U, V preallocated to r_max columns."""

    def __init__(self, W0t: Any, rank_max: int, xp: Any = np):
        if int(rank_max) < 1:
            raise ConfigError("rank-max", f"must be >= 1, got {rank_max}")
        self.xp = xp
        self.W0t = W0t
        self.m_in, self.m_out = (int(d) for d in W0t.shape)
        self.rank_max = int(rank_max)
        self.U = xp.zeros((self.m_out, self.rank_max), dtype=W0t.dtype)
        self.V = xp.zeros((self.m_in, self.rank_max), dtype=W0t.dtype)
        self.r = 0
        self.folds = 0

    @property
    def rank(self) -> int:
        """Current number of appended columns r."""
        return self.r

    @property
    def itemsize(self) -> int:
        return int(np.dtype(self.W0t.dtype).itemsize)

    # ---- products with the correction U V^T ------------------------------------------

    def forward_extra(self, H: SparseRows) -> Any:
        """Rows U (V^T h_i) (n x m_out), the correction to W0 h_i; None while r = 0.

        P = sum_{j in S_i} h_ij V[j, :r] (O(s r) per sample), then P U^T (BLAS).
        """
        if self.r == 0:
            return None
        r = self.r
        P = weighted_row_sums(H.indptr, H.values, self.V[H.indices, :r], self.xp)
        return P @ self.U[:, :r].T

    def backward_extra(self, H_in: SparseRows, V_out: SparseRows) -> Any:
        """V[S_in, :] (U[S_out, :]^T v_i), aligned with H_in.indices (zeros while r = 0).

        The correction to the block term W0[S_out, S_in]^T v_i, O(s r) per sample.
        """
        r, xp = self.r, self.xp
        if r == 0:
            return xp.zeros(H_in.nnz, dtype=self.V.dtype)
        Q = weighted_row_sums(V_out.indptr, V_out.values, self.U[V_out.indices, :r], xp)
        return xp.sum(self.V[H_in.indices, :r] * Q[row_ids(H_in, xp)], axis=1)

    # ---- updates ------------------------------------------------------------------------

    def needs_fold(self, n_new: int) -> bool:
        """True when appending n_new columns would pass r_max, so ``fold()`` must come first."""
        if n_new > self.rank_max:
            raise ConfigError("rank-max", f"r_max = {self.rank_max} is below the {n_new} columns "
                              "of one update; choose r_max >= n")
        return self.r + n_new > self.rank_max

    def append(self, H_in: SparseRows, V_out: SparseRows, coef: Any) -> None:
        """W += sum_i coef_i v_i h_i^T: columns r..r+n-1 of U get coef_i v_i, of V get h_i."""
        n, xp = H_in.n, self.xp
        if self.needs_fold(n):
            raise RuntimeError(f"LazyLowRank.append: rank {self.r} + {n} passes r_max = "
                               f"{self.rank_max}; call fold() first (see needs_fold)")
        cols = slice(self.r, self.r + n)
        self.U[:, cols] = 0
        self.V[:, cols] = 0
        coef = xp.asarray(coef, dtype=self.U.dtype)
        rows_out = row_ids(V_out, xp)
        self.U[V_out.indices, self.r + rows_out] = coef[rows_out] * V_out.values
        self.V[H_in.indices, self.r + row_ids(H_in, xp)] = H_in.values
        self.r += n

    def fold(self) -> float:
        """W0t += V[:, :r] U[:, :r]^T in place (one GEMM), r = 0; returns its multiply-adds."""
        madds = self.fold_work()
        if self.r:
            gemm_accumulate(self.W0t, self.V[:, :self.r], self.U[:, :self.r], self.xp)
            self.folds += 1
        self.r = 0
        return madds

    def update(self, H_in: SparseRows, V_out: SparseRows, coef: Any) -> float:
        """Fold if needed, then append; returns the fold's multiply-adds (0 without a fold)."""
        madds = self.fold() if self.needs_fold(H_in.n) else 0.0
        self.append(H_in, V_out, coef)
        return madds

    def dense(self) -> Any:
        """W^T = W0t + V U^T as a new dense m_in x m_out array (tests and oracles only)."""
        r = self.r
        return self.W0t + self.V[:, :r] @ self.U[:, :r].T

    # ---- counted work (at the current rank r) -------------------------------------------

    def forward_work(self, nnz: int, n: int) -> float:
        """Multiply-adds of ``forward_extra``: nnz r (gather) + n r m_out (P U^T)."""
        return float(self.r) * (nnz + float(n) * self.m_out)

    def backward_work(self, nnz_in: int, nnz_out: int) -> float:
        """Multiply-adds of ``backward_extra``: (nnz_out + nnz_in) r."""
        return float(self.r) * (nnz_in + nnz_out)

    def fold_work(self) -> float:
        """Multiply-adds of ``fold``: m_in r m_out."""
        return float(self.m_in) * self.r * self.m_out

    def fold_bytes(self, itemsize: float | None = None) -> float:
        """Bytes read by ``fold``: W0t once plus the r columns of U and V (writes excluded)."""
        if self.r == 0:
            return 0.0
        isz = self.itemsize if itemsize is None else float(itemsize)
        return (float(self.m_in) * self.m_out + self.r * (self.m_in + self.m_out)) * isz


def parse_rank_max(spec: Any, m: int, n: int) -> int:
    """r_max from an int >= n, or 'm^a' / a float exponent a in (0, 1]: max(round(m^a), n)."""
    accepted = (f"accepted: an integer >= n (= {n}), 'm^a' or a float a in (0, 1] meaning "
                f"round(m^a) (at least n), e.g. 128, 'm^0.5', 0.5")
    value = _rank_spec_value(spec)
    if value is None:
        raise ConfigError("rank-max", f"cannot read {spec!r}; {accepted}")
    if isinstance(value, int):
        if value < n:
            raise ConfigError("rank-max", f"{value} is below n = {n}, so one update cannot fit; "
                              f"{accepted}")
        return value
    if not (math.isfinite(value) and 0.0 < value <= 1.0):
        raise ConfigError("rank-max", f"exponent {value:g} is outside (0, 1]; {accepted}")
    return max(int(round(float(m) ** value)), int(n))


def _rank_spec_value(spec: Any) -> int | float | None:
    """An int (a rank), a float (an exponent of m) or None when ``spec`` is unreadable."""
    if isinstance(spec, bool):
        return None
    if isinstance(spec, (int, np.integer)):
        return int(spec)
    if isinstance(spec, (float, np.floating)):
        return float(spec)
    if not isinstance(spec, str):
        return None
    text = spec.strip().replace(" ", "")
    if text.startswith("m^") or text.startswith("m**"):
        text = text.split("^", 1)[1] if "^" in text else text[3:]
        try:
            return float(text)
        except ValueError:
            return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            continue
    return None
