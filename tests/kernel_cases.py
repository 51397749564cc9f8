"""Shared cases and helpers of the kernel tests (CPU and GPU kernels against the reference)."""

from __future__ import annotations

import numpy as np

from subquad.model.sparse import SparseRows

DTYPES = [np.float64, np.float32]
RTOL = {np.float64: 1e-12, np.float32: 1e-4}

# (m_in, m_out, n, density of the inputs, density of the gradients); density 0 = all empty
CASES = [
    (64, 64, 1, 0.3, 0.2),
    (300, 64, 3, 0.1, 0.3),
    (64, 300, 8, 0.25, 0.05),
    (300, 1024, 8, 0.02, 0.1),
    (1024, 300, 70, 0.05, 0.1),
    (1024, 1024, 70, 0.01, 0.03),
    (300, 300, 8, 0.0, 0.0),
]
IDS = [f"{a}x{b}-n{n}-d{d}" for a, b, n, d, _ in CASES]


def random_rows(rng, n, m, density, dtype) -> SparseRows:
    """Random sparse rows at random positions; sample 0 is empty whenever n > 1."""
    dense = (rng.random((n, m)) < density) * rng.standard_normal((n, m))
    if n > 1:
        dense[0] = 0
    return SparseRows.from_dense(dense.astype(dtype))


def setup(case, dtype, seed=0):
    """Weights W^T (m_in x m_out), inputs H (width m_in) and gradients V (width m_out)."""
    m_in, m_out, n, dh, dv = case
    rng = np.random.default_rng(seed)
    Wt = rng.standard_normal((m_in, m_out)).astype(dtype)
    return Wt, random_rows(rng, n, m_in, dh, dtype), random_rows(rng, n, m_out, dv, dtype), rng


def close(actual, desired, dtype):
    """Entrywise closeness with an absolute floor at rtol times the result's scale."""
    rtol = RTOL[dtype]
    scale = max(float(np.abs(desired).max(initial=0.0)), 1.0)
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=rtol * scale)


def gapped_thresholds(g: np.ndarray) -> np.ndarray:
    """b_i in the widest gap between sorted g_i values near the 80th percentile (no near-ties)."""
    b = np.empty(g.shape[0])
    for i, row in enumerate(g):
        srt = np.sort(row)
        k = int(0.8 * srt.size)
        lo, hi = max(k - 10, 0), min(k + 10, srt.size - 1)
        gaps = np.diff(srt[lo:hi + 1])
        a = lo + int(np.argmax(gaps))
        b[i] = 0.5 * (srt[a] + srt[a + 1])
    return b


def forward_case(case, dtype, with_extra):
    """Inputs of a forward test: W^T, H, the dense g (+ extra), extra or None, gapped b."""
    Wt, H, _, rng = setup(case, dtype)
    g = H.to_dense() @ Wt
    extra = None
    if with_extra:
        extra = (0.3 * rng.standard_normal(g.shape)).astype(dtype)
        g = g + extra
    return Wt, H, g, extra, gapped_thresholds(g).astype(dtype)
