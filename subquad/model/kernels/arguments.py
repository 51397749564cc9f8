"""Argument checks, array preparation and the warm-up case that every kernel backend (``cpu``,
``fused``, ``gpu``) shares; free of numba and cupy, so each backend loads it without the other's
dependencies."""

from __future__ import annotations

from typing import Any

import numpy as np

from subquad.model.sparse import SparseRows


def check_widths(Wt: Any, H_in: SparseRows, V_out: SparseRows | None = None) -> None:
    """Reject mismatched widths before a kernel runs: neither the jitted code nor a RawKernel
    bound-checks."""
    if H_in.m != Wt.shape[0]:
        raise ValueError(f"input rows have width {H_in.m}, Wt has {Wt.shape[0]} rows (m_in)")
    if V_out is not None and (V_out.m != Wt.shape[1] or V_out.n != H_in.n):
        raise ValueError(f"V_out is {V_out.n} rows of width {V_out.m}; expected {H_in.n} "
                         f"rows of width m_out = {Wt.shape[1]}")


def prepare(R: SparseRows, dt: Any, xp: Any = np) -> tuple[Any, Any, Any]:
    """indptr (int64), indices (int64) and values (in dt) as contiguous arrays of ``xp``
    (numpy for the CPU kernels, cupy for the GPU ones: host inputs are copied over)."""
    return (xp.ascontiguousarray(xp.asarray(R.indptr), dtype=xp.int64),
            xp.ascontiguousarray(xp.asarray(R.indices), dtype=xp.int64),
            xp.ascontiguousarray(xp.asarray(R.values), dtype=dt))


def per_sample(x: Any, n: int, dt: Any, xp: Any = np) -> Any:
    """A per-sample scalar (b_i, coef_i) as a contiguous (n,) array of ``xp`` in the weights'
    dtype.

    A scalar is broadcast; any other shape than (n,) raises ValueError.
    """
    return xp.ascontiguousarray(xp.broadcast_to(xp.asarray(x, dtype=dt), (n,)))


def tiny_case(dtype: Any, m: int = 16, xp: Any = np) -> tuple[SparseRows, Any, Any]:
    """(H, Wt, b): 5 sparse rows of width m, an m x m W^T and zero thresholds in ``dtype`` as
    ``xp`` arrays, the inputs the warm-ups compile the kernels on."""
    dt = np.dtype(dtype)
    rng = np.random.default_rng(0)
    dense = (rng.random((5, m)) < 0.4) * rng.standard_normal((5, m))
    return (SparseRows.from_dense(xp.asarray(dense.astype(dt)), xp),
            xp.asarray(rng.standard_normal((m, m)).astype(dt)), xp.zeros(5, dtype=dt))
