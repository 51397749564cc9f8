"""Time the GPU forward kernels against the dense GEMM, to settle ``gpu.choose_forward``.

Inputs mimic one layer at c = 0.2: s = m Q(beta) active neurons per sample at random positions,
weights N(0, 1/m), float32, and the adaptive threshold b_i = beta ||h_i|| / sqrt(m), so about
s outputs per sample stay active. Each kernel (threshold-and-compact included) and the dense
H @ W^T are timed with CUDA events (``Backend.timer``) after a warm-up call; the table lists
medians of REPS calls.

Usage (GPU machine, repo root): PYTHONPATH=$PWD python3 experiments/gpu/bench_forward.py [CSV]
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import numpy as np

from subquad.files import atomic_write_text
from subquad.model.backend import get_backend
from subquad.model.kernels import gpu
from subquad.model.sparse import SparseRows
from subquad.model.sparsify import beta, tail

SIZES = [(m, n) for m in (4096, 16384, 32768) for n in (16, 128)]
REPS = 7


def layer_input(cp, m: int, n: int, rng: np.random.Generator) -> SparseRows:
    """n sorted random active sets of size s = m Q(beta) with positive values, on the device."""
    s = max(1, round(m * tail(beta(m, 0.2))))
    idx = np.sort(np.argsort(rng.random((n, m)), axis=1)[:, :s], axis=1).ravel()
    val = rng.random(n * s).astype(np.float32)
    indptr = np.arange(n + 1, dtype=np.int64) * s
    return SparseRows(cp.asarray(indptr), cp.asarray(idx), cp.asarray(val), m)


def median_seconds(be, fn) -> float:
    """Median of REPS CUDA-event timings of ``fn`` after one untimed call."""
    fn()
    times = []
    for _ in range(REPS):
        with be.timer() as t:
            fn()
        times.append(t[0])
    return statistics.median(times)


def bench_size(be, m: int, n: int, rng: np.random.Generator) -> list[tuple[str, float, float]]:
    """(kernel, median seconds, weight bytes read) of the dense GEMM and each sparse kernel."""
    cp = be.xp
    Wt = cp.random.RandomState(m).standard_normal((m, m), dtype=cp.float32)
    Wt *= np.float32(1.0 / np.sqrt(m))
    H = layer_input(cp, m, n, rng)
    Hd = H.to_dense(cp)
    b = (beta(m, 0.2) / np.sqrt(m) * H.row_norms(cp)).astype(cp.float32)  # adaptive b_i
    out = [("dense-gemm", median_seconds(be, lambda: cp.maximum(Hd @ Wt - b[:, None], 0)),
            float(m) * m * 4)]
    for kernel in gpu.FORWARD_KERNELS[1:]:
        def call(k=kernel):
            return gpu.forward_layer(Wt, H, b, forward_kernel=k)

        out.append((kernel, median_seconds(be, call), call()[1]["bytes"]))
    return out


def main(out: str | None = None) -> None:
    be = get_backend("cupy")
    gpu.warmup(np.float32)
    rng = np.random.default_rng(0)
    # rewritten (atomically) after every row: a timeout keeps what ran, never half a row
    lines = ["m,n,kernel,seconds,bytes,ratio_to_dense"]
    print(f"{'m':>6} {'n':>4} {'kernel':<12} {'ms':>9} {'GB read':>8} {'/dense':>7}")
    for m, n in SIZES:
        results = bench_size(be, m, n, rng)
        dense = results[0][1]
        for kernel, sec, nbytes in results:
            if out:
                lines.append(f"{m},{n},{kernel},{sec:.6g},{nbytes:.6g},{sec / dense:.4g}")
                atomic_write_text(Path(out), "\n".join(lines) + "\n")
            print(f"{m:>6} {n:>4} {kernel:<12} {sec * 1e3:>9.3f} {nbytes / 1e9:>8.2f} "
                  f"{sec / dense:>7.3f}", flush=True)
        be.xp.get_default_memory_pool().free_all_blocks()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
