"""SparseRows: the active sets S_{i,l} and values of n samples in one layer, in CSR form."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class SparseRows:
    """n sparse rows of width m: row i holds the sorted active set S_i and its values.

    ``indptr`` (n + 1, int64), ``indices`` (nnz, int64, sorted within each row) and ``values``
    (nnz, the network's dtype) are arrays of one backend (numpy or cupy). For a layer's
    gradient vectors v_{i,l} the support equals that of h_{i,l}, so V rows share ``indptr`` and
    ``indices`` with H and differ only in ``values``.
    """

    indptr: Any
    indices: Any
    values: Any
    m: int
    _counts: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def n(self) -> int:
        return int(self.indptr.shape[0]) - 1

    @property
    def nnz(self) -> int:
        return int(self.indices.shape[0])

    def counts(self) -> np.ndarray:
        """Active neurons per sample (host array, cached: on a GPU the first call syncs)."""
        if self._counts is None:
            ip = self.indptr
            d = ip[1:] - ip[:-1]
            self._counts = d.get() if hasattr(d, "get") else np.asarray(d)
        return self._counts

    def with_values(self, values: Any) -> SparseRows:
        """Same support, other values (e.g. v_{i,l} on the support of h_{i,l})."""
        return SparseRows(self.indptr, self.indices, values, self.m, self._counts)

    def to_dense(self, xp: Any = np) -> Any:
        """An n x m dense copy (for tests and small oracles only)."""
        out = xp.zeros((self.n, self.m), dtype=self.values.dtype)
        out[row_ids(self, xp), self.indices] = self.values
        return out

    def row_norms(self, xp: Any = np) -> Any:
        """||h_i|| for each row."""
        sq = self.values * self.values
        cs = xp.concatenate([xp.zeros(1, dtype=sq.dtype), xp.cumsum(sq)])
        return xp.sqrt(xp.maximum(cs[self.indptr[1:]] - cs[self.indptr[:-1]], 0))

    def row_sums(self, xp: Any = np) -> Any:
        """1 . v_i for each row (the adaptive threshold's rank-one backward term needs it)."""
        cs = xp.concatenate([xp.zeros(1, dtype=self.values.dtype), xp.cumsum(self.values)])
        return cs[self.indptr[1:]] - cs[self.indptr[:-1]]

    @classmethod
    def from_dense(cls, a: Any, xp: Any = np) -> SparseRows:
        """The nonzeros of a dense n x m array (for tests and the input layer)."""
        rows, cols = xp.nonzero(a)
        n, m = a.shape
        counts = xp.bincount(rows, minlength=n)
        indptr = xp.concatenate([xp.zeros(1, dtype=xp.int64), xp.cumsum(counts)]).astype(xp.int64)
        return cls(indptr, cols.astype(xp.int64), a[rows, cols], int(m))


def _sparse_module(xp: Any) -> Any:
    """scipy.sparse for numpy, cupyx.scipy.sparse for cupy."""
    if xp.__name__ == "cupy":
        import cupyx.scipy.sparse as sps  # noqa: PLC0415
    else:
        import scipy.sparse as sps  # noqa: PLC0415
    return sps


def weighted_row_sums(indptr: Any, weights: Any, Y: Any, xp: Any = np) -> Any:
    """Rows sum_{e in row i} weights_e Y_e (n x c) for Y (nnz x c) aligned with a CSR's entries.

    One sparse-times-dense product with the n x nnz matrix that holds ``weights`` on each
    row's own entry range: O(nnz c), exact accumulation, no Python loop.
    """
    n, nnz = int(indptr.shape[0]) - 1, int(Y.shape[0])
    sps = _sparse_module(xp)
    E = sps.csr_matrix((weights, xp.arange(nnz), indptr), shape=(n, nnz))
    return xp.asarray(E @ Y)


def row_ids(X: SparseRows, xp: Any = np) -> Any:
    """The sample index i of every stored entry of X (nnz,), without a host round trip."""
    return xp.searchsorted(X.indptr, xp.arange(X.nnz), side="right") - 1
