"""Micro-benchmarks of every kernel over m (pytest-benchmark); run by `make bench`, not `make test`.

Each benchmark records ``extra_info`` = {kernel, m, n, d, L, c, dtype, backend, work} so that
``subquad fit results/bench/bench.json`` fits one exponent in m per kernel. Inputs are the real
active sets of a freshly drawn network (float32, c = 0.2, n = 16). Rounds are fixed (9, so two
runs can be compared by a Mann-Whitney test), each round at least ~5 ms of repeated calls.
"""

from __future__ import annotations

import math
import time
from functools import lru_cache

import numpy as np
import pytest

from subquad.model.data import load
from subquad.model.kernels import cpu
from subquad.model.lowrank import LazyLowRank
from subquad.model.network import Network, NetworkSpec
from subquad.model.solve import make_solver
from subquad.model.sparse import SparseRows

GRID = (1024, 2048, 4096, 8192)
N, D, L, C, DTYPE, BACKEND = 16, 16, 1, 0.2, "float32", "numpy"
ROUNDS = 9
MIN_ROUND_SECONDS = 0.005


class Layer:
    """One layer's real inputs: W^T, h_0 (sparse and dense), thresholds, h_1, v_1, coef, K."""

    def __init__(self, m: int):
        spec = NetworkSpec(m=m, n=N, d=D, L=L, c=C, dtype=DTYPE)
        net = Network.init(spec)
        X, _ = load("synthetic", N, D, 0, "teacher")
        self.m, self.net, self.Wt = m, net, net.Wt[0]
        self.H0 = SparseRows.from_dense(net.input_layer(X))
        self.H0_dense = np.ascontiguousarray(self.H0.to_dense(), dtype=self.Wt.dtype)
        self.b = net.threshold(self.H0.row_norms())
        self.H1, _ = cpu.forward_layer(self.Wt, self.H0, self.b)
        self.V1 = self.H1.with_values(net.a[self.H1.indices].astype(self.Wt.dtype))
        self.coef = np.full(N, 1e-3, dtype=self.Wt.dtype)
        self.K = cpu.gram(self.H0) * cpu.gram(self.V1)
        self.r = np.ones(N, dtype=self.Wt.dtype)

    def block(self) -> float:
        """sum_i |S_0,i| |S_1,i|: entries of every sample's active block of W."""
        return float((self.H0.counts() * self.H1.counts()).sum())


@lru_cache(maxsize=1)
def layer(m: int) -> Layer:
    """The inputs at width m (one width cached at a time: W at m = 8192 is 256 MiB)."""
    return Layer(m)


def _record(benchmark, kernel: str, m: int, work: float) -> None:
    benchmark.extra_info.update(kernel=kernel, m=m, n=N, d=D, L=L, c=C, dtype=DTYPE,
                                backend=BACKEND, work=float(work))


def _run(benchmark, fn, setup=None) -> None:
    """Fixed rounds; without setup, enough iterations per round to last MIN_ROUND_SECONDS."""
    if setup is not None:
        benchmark.pedantic(fn, setup=setup, rounds=ROUNDS, iterations=1, warmup_rounds=1)
        return
    fn()
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-7)
    iters = int(min(1000, max(1, math.ceil(MIN_ROUND_SECONDS / once))))
    benchmark.pedantic(fn, rounds=ROUNDS, iterations=iters, warmup_rounds=1)


ms = pytest.mark.parametrize("m", GRID, ids=[f"m{m}" for m in GRID])


@ms
@pytest.mark.parametrize("kernel", cpu.FORWARD_KERNELS[1:])
def test_forward(benchmark, m, kernel):
    x = layer(m)
    _record(benchmark, f"forward-{kernel}", m, float(m) * x.H0.nnz)
    _run(benchmark, lambda: cpu.forward_layer(x.Wt, x.H0, x.b, forward_kernel=kernel))


@ms
def test_dense_gemm(benchmark, m):
    """The naive baseline's forward: H_0 (n x m, dense) times W^T, n m^2 multiply-adds."""
    x = layer(m)
    _record(benchmark, "dense-gemm", m, float(N) * m * m)
    _run(benchmark, lambda: x.H0_dense @ x.Wt)


@ms
def test_backward(benchmark, m):
    x = layer(m)
    _record(benchmark, "backward", m, x.block())
    _run(benchmark, lambda: cpu.backward_block(x.Wt, x.H0, x.V1))


@ms
def test_gram(benchmark, m):
    x = layer(m)
    _record(benchmark, "gram", m, float(N) * (x.H0.nnz + x.V1.nnz))
    _run(benchmark, lambda: (cpu.gram(x.H0), cpu.gram(x.V1)))


@ms
@pytest.mark.parametrize("solver", ["cholesky", "pcg-tensorsketch"])
def test_solve(benchmark, m, solver):
    x = layer(m)
    s = make_solver(solver, cg_tol=1e-5, seed=0)  # float32 cannot reach the default 1e-10
    _record(benchmark, f"solve-{solver}", m, N**3 / 3.0)
    _run(benchmark, lambda: s.solve(np, x.K, x.r, ([x.H0], [x.V1])))


@ms
@pytest.mark.parametrize("mode", ["scatter", "rowdense"])
def test_update(benchmark, m, mode):
    x = layer(m)
    fn = cpu.update_scatter if mode == "scatter" else cpu.update_rowdense
    work = x.block() if mode == "scatter" else float(x.H0.nnz) * m
    _record(benchmark, f"update-{mode}", m, work)
    _run(benchmark, lambda: fn(x.Wt, x.H0, x.V1, x.coef))


@ms
def test_update_lazy_append(benchmark, m):
    x = layer(m)
    lr = LazyLowRank(x.Wt, N, xp=np)

    def reset():
        lr.r = 0

    _record(benchmark, "update-lazy-append", m, float(x.H0.nnz + x.V1.nnz))
    _run(benchmark, lambda: lr.append(x.H0, x.V1, x.coef), setup=reset)


@ms
def test_fold(benchmark, m):
    """W0 += V U^T at the default r_max = sqrt(m) (rounded down to whole batches of n)."""
    x = layer(m)
    rank = max(N, int(math.sqrt(m)) // N * N)
    lr = LazyLowRank(x.Wt, rank, xp=np)

    def fill():
        lr.r = 0
        while not lr.needs_fold(N):
            lr.append(x.H0, x.V1, x.coef)

    fill()
    _record(benchmark, "fold", m, lr.fold_work())
    _run(benchmark, lr.fold, setup=fill)
