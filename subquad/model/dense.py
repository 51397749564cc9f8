"""Dense kernels: the naive O(m^2) baselines ``dense-gd`` and ``dense-gn`` (BLAS through xp)."""

from __future__ import annotations

from typing import Any

import numpy as np

from subquad.model.backend import gemm_accumulate
from subquad.model.network import DenseState, Network
from subquad.model.trainer import Work


def _shape(a: float, b: float, c: float) -> str:
    """A GEMM's shape "a x b x c" (a x b times b x c), the key of its calibrated rate."""
    return f"{int(a)}x{int(b)}x{int(c)}"


class DenseKernels:
    """Every phase on dense n x m activations; the update is a dense rank-n GEMM."""

    name = "dense"

    def setup(self, net: Network, H0: Any) -> None:
        self.net, self.H0 = net, H0

    def _mm(self) -> tuple[float, float, float, float]:
        sp = self.net.spec
        return float(sp.L), float(sp.n), float(sp.m), float(sp.itemsize)

    def forward(self) -> tuple[DenseState, Work]:
        """G = H_{l-1} W_l^T for every layer: L n m^2 multiply-adds, every weight read once."""
        L, n, m, b = self._mm()
        # working set S = the L weight matrices; a GEMM's rate includes its memory traffic
        return self.net.forward_dense(self.H0), Work(
            L * n * m * m, L * m * m * b, L * m * m * b, L * m * m * b, "gemm",
            _shape(n, m, m), 5 * L + 1)

    def outputs(self, st: DenseState) -> Any:
        return st.f

    def backward(self, st: DenseState) -> tuple[list, Work]:
        """u_l = W_{l+1}^T v_{l+1} for l = L-1..1: (L-1) n m^2 (+ n m for the adaptive term)."""
        L, n, m, b = self._mm()
        extra = (L - 1) * n * m if self.net.spec.threshold == "adaptive" else 0.0
        mat = (L - 1) * m * m * b
        return self.net.backward_dense(st), Work((L - 1) * n * m * m + extra, mat, mat, mat,
                                                 "gemm", _shape(n, m, m), 8 * (L - 1) + 2)

    def gram(self, st: DenseState, V: list) -> tuple[Any, Work]:
        """K from dense H and V: 2 L n^2 m multiply-adds."""
        L, n, m, b = self._mm()
        return self.net.gram_dense(st, V), Work(2.0 * L * n * n * m, 0.0, 0.0,
                                                2.0 * L * n * m * b, "gemm", _shape(n, m, n),
                                                4 * L)

    def sketch_inputs(self, st: DenseState, V: list) -> tuple[list, list]:
        from subquad.model.sparse import SparseRows  # noqa: PLC0415

        xp = self.net.xp
        return ([SparseRows.from_dense(H, xp) for H in st.H[:-1]],  # h_{l-1}, v_l for l = 1..L
                [SparseRows.from_dense(v, xp) for v in V[1:]])

    def fold(self, n_new: int) -> Work:
        return Work()

    def update(self, st: DenseState, V: list, coef: Any) -> Work:
        """W_l^T += H_{l-1}^T diag(coef) V_l: a dense rank-n update, L n m^2 multiply-adds."""
        L, n, m, b = self._mm()
        xp = self.net.xp
        for l, Wt in enumerate(self.net.Wt, start=1):  # in place, no m x m temporary
            gemm_accumulate(Wt, st.H[l - 1].T, (coef[:, None] * V[l]).T, xp)
        # reads and writes every weight: 2 L m^2 bytes through a m x n x m GEMM
        return Work(L * n * m * m, L * m * m * b, 2 * L * m * m * b, L * m * m * b, "gemm",
                    _shape(m, n, m), 3 * L)

    def active_counts(self, st: DenseState) -> list[np.ndarray]:
        be = self.net.be
        return [be.to_host((H > 0).sum(axis=1)) for H in st.H]

    def flips(self, old: DenseState, new: DenseState) -> list[int]:
        be = self.net.be
        return [int(be.to_host(((a > 0) != (b > 0)).sum())) for a, b in zip(old.H, new.H)]

    def describe(self) -> dict:
        return {"update": "dense"}
