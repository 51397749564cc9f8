"""``subquad calibrate``: the machine constants of the per-phase model (docs/MACHINE_MODEL.md).

About 10-60 seconds of probes, each a numba kernel or numpy call shaped like one of the trainers'
phases, so that t_p = o_p + W_p / F_p + B_p / BW(S_p) can be evaluated from counted work and
bytes alone:

- ``stream``: streaming read bandwidth over working sets from 32 KiB to >= 4x the last cache;
- ``gather``: bandwidth of whole random rows (the sparse forward's access) per row length, over
  one and two m x m matrices (the working sets on either side of a cache edge);
- ``random_uniform``: seconds per uniformly random single-element read-modify-write;
- ``random_rows``: the scatter update's and the backward's real pattern, s sorted columns in
  each of s random rows, as cache-line bandwidth (read and read-modify-write);
- ``gemm``: multiply-add rates of the dense shapes n x m x m, m x k x m (rank-k update, fold)
  and n x m x n (Gram);
- ``loop_rate`` (in-cache multiply-adds of a numba loop), ``overhead`` (numba call, numpy op).

The cupy path measures the same quantities on the GPU (HBM copy and gather bandwidth, cuBLAS,
launch overhead). The result is keyed by machine id: ``{"machines": {id: calibration}}``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import numpy as np
from numba import prange

from subquad.errors import ConfigError, check_choice
from subquad.files import atomic_write_json
from subquad.harness.environment import (
    cache_levels,
    current_environment,
    fingerprint,
    limit_threads,
)
from subquad.model.backend import gemm_accumulate, get_backend, gpu_available, recorded_backend
from subquad.model.kernels import get_kernels
from subquad.model.solve import CholeskySolver
from subquad.model.sparse import SparseRows
from subquad.model.trainer import CACHE_LINE, lines_touched
from subquad.vocabulary import BACKENDS, DTYPES

FORMAT = 1
#: smallest working set probed (inside every L1 data cache we know of)
MIN_SET = 32 << 10
#: the largest working set is at least this, and at least 4x the last cache level
MIN_TOP = 256 << 20
#: a probe is repeated until one timing lasts this long (seconds)
PROBE_SECONDS = 0.03
#: density s/m of the sorted-rows probe: Q(beta) of the default c = 0.2 at these widths
ROW_DENSITY = 0.025
#: fewest blocks of the sorted-rows probe, and samples of the gather probe (n of the sweeps)
ROW_SAMPLES = 16
#: inner dimensions of the GEMM probes (n or the lazy rank r); rates interpolate between them
GEMM_K = (16, 64)
GEMM_M = (512, 1024, 2048, 4096, 8192)

# ------------------------------------------------------------------------------- probes


@numba.njit(parallel=True, cache=True, nogil=True, fastmath=True)
def _stream_sum(a):  # pragma: no cover - compiled
    acc = 0.0
    for i in prange(a.shape[0]):
        acc += a[i]
    return acc


@numba.njit(cache=True, nogil=True)
def _uniform_rmw(a, idx):  # pragma: no cover - compiled
    for t in range(idx.shape[0]):
        a[idx[t]] += 1.0


@numba.njit(cache=True, nogil=True, fastmath=True)
def _dot_loop(x, y, reps):  # pragma: no cover - compiled
    acc = 0.0
    for _ in range(reps):
        for i in range(x.shape[0]):
            acc += x[i] * y[i]
    return acc


@numba.njit(cache=True, nogil=True)
def _noop(x):  # pragma: no cover - compiled
    return x.shape[0]


def time_call(fn: Callable[[], Any], min_seconds: float = PROBE_SECONDS, repeats: int = 3,
              sync: Callable[[], None] = lambda: None) -> float:
    """Seconds of one call of ``fn``: best of ``repeats`` timings, each of enough calls."""
    fn()
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    once = max(time.perf_counter() - t0, 1e-9)
    calls = max(1, int(math.ceil(min_seconds / once)))
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best


def size_grid(last_cache: int, top: int | None = None) -> list[int]:
    """Working sets from 32 KiB to max(4x the last cache level, 256 MiB), factor 2 apart."""
    top = top or max(4 * last_cache, MIN_TOP)
    out, s = [], MIN_SET
    while s < top:
        out.append(s)
        s *= 2
    return [*out, s]


# ------------------------------------------------------------------- the trainers' kernels


def sparse_rows(xp: Any, rng: np.random.Generator, n: int, m: int, s: int, dtype: np.dtype
                ) -> Any:
    """n rows of width m with s sorted random active indices each, positive values."""
    idx = np.concatenate([np.sort(rng.choice(m, s, replace=False)) for _ in range(n)])
    vals = rng.uniform(0.5, 1.5, idx.size).astype(dtype)
    ptr = np.arange(0, (n + 1) * s, s, dtype=np.int64)
    return SparseRows(xp.asarray(ptr), xp.asarray(idx.astype(np.int64)), xp.asarray(vals), m)


def _patterns(xp: Any, rng: np.random.Generator, m: int, s: int, dtype: np.dtype
              ) -> list[tuple[Any, Any]]:
    """(H_in, V_out) pairs of ROW_SAMPLES samples; enough pairs that their rows cover W^T about
    twice, so repeated calls range over the whole working set as the trainer's phases do."""
    count = max(1, int(math.ceil(2 * m / (ROW_SAMPLES * s))))
    return [(sparse_rows(xp, rng, ROW_SAMPLES, m, s, dtype),
             sparse_rows(xp, rng, ROW_SAMPLES, m, s, dtype)) for _ in range(count)]


def _cycle(fn: Callable[[Any, Any], Any], pats: list) -> Callable[[], None]:
    """A zero-argument call running ``fn`` on the next pattern each time."""
    patterns = itertools.cycle(pats)
    return lambda: fn(*next(patterns))


def kernel_probes(backend: str, dtype: np.dtype, sizes: list[int], m_grid: list[int],
                  sync: Callable[[], None]) -> dict[str, Any]:
    """The sparse trainer's own kernels on random sorted active sets of density ROW_DENSITY.

    ``random_rows``: backward_block (read) and update_scatter (read-modify-write) over a W^T of
    each working set, as cache-line bandwidth (lines counted exactly as the trainer counts
    them); ``gather``: forward_layer's row bytes per second for rows of each width m.
    """
    xp = get_backend(backend).xp
    kern = get_kernels(backend)
    rng = np.random.default_rng(0)
    isz = dtype.itemsize
    rd, rmw, ns_rd, ns_rmw = [], [], [], []
    for size in sizes:
        m = max(64, int(math.sqrt(size / isz)))
        s = max(4, int(round(ROW_DENSITY * m)))
        Wt = xp.full((m, m), 1e-3, dtype)
        pats = _patterns(xp, rng, m, s, dtype)
        H0, V0 = pats[0]
        lines = float((np.asarray(H0.counts(), float)
                       * lines_touched(V0.counts(), m * isz)).sum()) * CACHE_LINE
        elems = float(ROW_SAMPLES * s * s)
        coef = xp.full(ROW_SAMPLES, 1e-7, dtype)
        t_rd = time_call(_cycle(lambda H, V, W=Wt: kern.backward_block(W, H, V), pats),
                         sync=sync)
        t_rmw = time_call(_cycle(lambda H, V, W=Wt, c=coef: kern.update_scatter(W, H, V, c),
                                 pats), sync=sync)
        rd.append(lines / t_rd)
        rmw.append(lines / t_rmw)
        ns_rd.append(t_rd / elems)
        ns_rmw.append(t_rmw / elems)
    out: dict[str, Any] = {"random_rows": {
        "size": sizes, "density": ROW_DENSITY, "kernels": "backward_block, update_scatter",
        "read_line_bandwidth": rd, "rmw_line_bandwidth": rmw,
        "read_seconds_per_element": ns_rd, "rmw_seconds_per_element": ns_rmw}}
    gather = []
    for m in m_grid:
        # one and two m x m matrices (an L = 2 trainer sweeps two): where the working set
        # crosses the last cache level, the scaling of one probe by the streaming curve was
        # measured 1.4x off for m x m rows at the L3 edge
        m_ins = sorted({max(64, min(k * m, sizes[-1] // (m * isz))) for k in (1, 2)})
        for m_in in m_ins:
            s = max(4, int(round(ROW_DENSITY * min(m, m_in))))  # a layer's s at width m
            Wt = xp.full((m_in, m), 1e-3, dtype)
            pats = _patterns(xp, rng, m_in, s, dtype)
            # thresholds above every pre-activation: the compaction scans G as in training
            b = xp.full(ROW_SAMPLES, 1e-3 * s * 2.0, dtype)
            info: dict = {}

            def fwd(H: Any, V: Any, W: Any = Wt, b: Any = b, info: dict = info) -> None:
                info.update(kern.forward_layer(W, H, b)[1])

            t = time_call(_cycle(fwd, pats), sync=sync)
            gather.append({"row_length": m, "working_set": m_in * m * isz,
                           "bandwidth": float(info.get("bytes", ROW_SAMPLES * s * m * isz)) / t})
            del Wt
    out["gather"] = gather
    # the Gram kernel (n x n from sparse rows, in cache) and a direct solve at n = 16
    m = m_grid[len(m_grid) // 2]
    H = sparse_rows(xp, rng, ROW_SAMPLES, m, max(4, int(round(ROW_DENSITY * m))), dtype)
    t = time_call(lambda: kern.gram(H), sync=sync)
    out["gram_rate"] = float(ROW_SAMPLES * H.nnz + ROW_SAMPLES**2) / t
    A = rng.standard_normal((ROW_SAMPLES, 4 * ROW_SAMPLES))
    K = xp.asarray((A @ A.T + np.eye(ROW_SAMPLES)).astype(dtype))
    r = xp.ones(ROW_SAMPLES, dtype)
    out["solve_seconds"] = time_call(lambda: CholeskySolver(1e-3).solve(xp, K, r), 0.01,
                                     sync=sync)
    return out


# ------------------------------------------------------------------------------- CPU


def _cpu_probes(dtype: np.dtype, sizes: list[int], m_grid: list[int], quick: bool
                ) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    isz = dtype.itemsize
    out: dict[str, Any] = {}
    big = np.ones(sizes[-1] // isz, dtype)
    stream = [s / time_call(lambda a=big[: s // isz]: _stream_sum(a)) for s in sizes]
    out["stream"] = {"size": sizes, "bandwidth": stream}
    uni = []
    for s in sizes:
        # as many accesses as the working set has lines (at least 64 Ki, at most 1 Mi)
        idx = rng.integers(0, s // isz, min(1 << 20, max(1 << 16, s // 64)))
        uni.append(time_call(lambda a=big, idx=idx: _uniform_rmw(a, idx)) / idx.size)
    out["random_uniform"] = {"size": sizes, "seconds_per_access": uni}
    big = None  # release before the next probes allocate
    out.update(kernel_probes("numpy", dtype, sizes, m_grid, lambda: None))
    out["gemm"] = _gemm_rates(np, dtype, quick, lambda: None)
    x = np.ones(1024, dtype)
    reps = 256
    out["loop_rate"] = x.size * reps / time_call(lambda: _dot_loop(x, x, reps))
    small = np.ones(16, dtype)
    out["overhead"] = {"numba_call": time_call(lambda: _noop(small), 0.01),
                       "numpy_op": time_call(lambda: np.add(small, small), 0.01)}
    return out


def _gemm_rates(xp: Any, dtype: np.dtype, quick: bool, sync: Callable[[], None]
                ) -> list[dict]:
    """Multiply-add rates of the dense shapes (n x m x m, m x k x m, n x m x n) on the grid."""
    out = []
    for m in GEMM_M[:3] if quick else GEMM_M:
        W = xp.ones((m, m), dtype) / m
        for k in GEMM_K:
            A = xp.ones((k, m), dtype)
            B = xp.ones((m, k), dtype)
            C = xp.empty((k, m), dtype)
            t = time_call(lambda A=A, C=C, W=W: xp.matmul(A, W, out=C), sync=sync)
            out.append({"shape": f"{k}x{m}x{m}", "rate": k * m * m / t})
            t = time_call(lambda A=A, B=B, W=W: gemm_accumulate(W, B, A.T, xp), sync=sync)
            out.append({"shape": f"{m}x{k}x{m}", "rate": k * m * m / t})
            t = time_call(lambda A=A, B=B: A @ B, sync=sync)
            out.append({"shape": f"{k}x{m}x{k}", "rate": k * k * m / t})
    return out


# ------------------------------------------------------------------------------- GPU


def _gpu_probes(dtype: np.dtype, sizes: list[int], m_grid: list[int], quick: bool
                ) -> dict[str, Any]:
    """HBM copy and gather bandwidth, scattered access, cuBLAS rates, launch overhead."""
    import cupy as cp  # noqa: PLC0415
    import cupyx  # noqa: PLC0415

    sync = cp.cuda.Device().synchronize
    isz = dtype.itemsize
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {}
    big = cp.ones(sizes[-1] // isz, dtype)
    dst = cp.empty_like(big)
    # a copy reads and writes: bandwidth counts both
    out["stream"] = {"size": sizes, "bandwidth": [
        2 * s / time_call(lambda a=big[: s // isz], b=dst[: s // isz]: b.__setitem__(
            Ellipsis, a), sync=sync) for s in sizes]}
    uni = []
    for s in sizes:
        idx = cp.asarray(rng.integers(0, s // isz, 1 << 20))
        one = cp.ones(idx.size, dtype)
        uni.append(time_call(lambda a=big, idx=idx, one=one: cupyx.scatter_add(a, idx, one),
                             sync=sync) / idx.size)
    out["random_uniform"] = {"size": sizes, "seconds_per_access": uni}
    big = dst = None
    out.update(kernel_probes("cupy", dtype, sizes, m_grid, sync))
    out["gemm"] = _gemm_rates(cp, dtype, quick, sync)
    x = cp.ones(1 << 20, dtype)
    out["loop_rate"] = x.size / time_call(lambda: cp.dot(x, x), sync=sync)
    small = cp.ones(16, dtype)
    launch = time_call(lambda: cp.add(small, small), 0.01, sync=sync)
    out["overhead"] = {"numba_call": launch, "numpy_op": launch}
    return out


def gpu_caches() -> list[dict]:
    """The GPU's L2 as the one cache level (HBM beyond it)."""
    import cupy as cp  # noqa: PLC0415

    size = int(cp.cuda.Device().attributes.get("L2CacheSize", 0))
    return [{"level": 2, "type": "Unified", "size": size, "shared_cpus": "gpu"}] if size else []


# ------------------------------------------------------------------------------- command


def calibrate(backend: str = "numpy", dtype: str = "float32", threads: int | None = None,
              m_grid: list[int] | None = None, quick: bool = False) -> dict[str, Any]:
    """Run every probe once; returns one machine's calibration (``machine`` names it)."""
    check_choice("backend", backend, BACKENDS)
    check_choice("dtype", dtype, DTYPES)
    if threads is not None and not (isinstance(threads, int) and threads >= 1):
        raise ConfigError("threads", f"must be an integer >= 1, got {threads!r}")
    bad = [m for m in (m_grid or []) if not (isinstance(m, int) and 64 <= m <= 1 << 17)]
    if bad:
        raise ConfigError("m", f"probe widths must be integers in [64, 131072], got {bad}")
    if backend == "cupy":
        ok, why = gpu_available()
        if not ok:
            raise ConfigError("backend", f"cupy needs a usable GPU: {why}")
    limit_threads(threads, "threads")
    env = current_environment()
    dt = np.dtype(dtype)
    caches = gpu_caches() if backend == "cupy" else cache_levels()
    last = max((c["size"] for c in caches), default=32 << 20)
    sizes = size_grid(last, 64 << 20 if quick else None)
    grid = sorted(m_grid or [1024, 2048, 4096, 8192, 16384])
    t0 = time.perf_counter()
    probes = (_gpu_probes if backend == "cupy" else _cpu_probes)(dt, sizes, grid, quick)
    return {"format": FORMAT, "machine": env["machine"], "backend": recorded_backend(backend),
            "dtype": dtype, "threads": threads, "caches": caches, "line_bytes": 64,
            "environment": {k: env.get(k) for k in ("cpu_model", "usable_cores", "blas",
                                                    "numba", "gpu", "date_utc", "git",
                                                    "load_average", "cpu_governor")},
            "seconds": time.perf_counter() - t0, **probes}


def write_calibration(cal: dict[str, Any], path: Path) -> Path:
    """Add (or replace) this machine's entry in ``path`` (``{"machines": {id: cal}}``); one of
    its fingerprint under an old id is replaced too, other fingerprints' entries are kept."""
    path = Path(path)
    data: dict[str, Any] = {"format": FORMAT, "machines": {}}
    mine = fingerprint(cal) if "environment" in cal else None
    if path.is_file():
        with contextlib.suppress(OSError, ValueError, AttributeError):
            old = json.loads(path.read_text())
            if isinstance(old.get("machines"), dict):
                data["machines"].update({k: v for k, v in old["machines"].items()
                                         if fingerprint(v) != mine})
    data["machines"][cal["machine"]] = cal
    atomic_write_json(path, data)
    return path


def run_calibrate(out_dir: str | Path, backend: str = "numpy", dtype: str = "float32",
                  threads: int | None = None, quick: bool = False,
                  m_grid: list[int] | None = None) -> tuple[Path, dict[str, Any]]:
    """Probes -> ``DIR/calibration.json`` (the command adds the bandwidth figure)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cal = calibrate(backend, dtype, threads, m_grid=m_grid, quick=quick)
    return write_calibration(cal, out / "calibration.json"), cal
