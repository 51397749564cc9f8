"""Sparse kernels for the GPU in cupy: same signatures and results as ``reference``.

Symbols follow ALGORITHM.md: sample i has the sorted active set S_i of its input h_i (s entries
on average); ``Wt`` = W^T is m_in x m_out (C-contiguous), so the forward streams rows of ``Wt``.
Arrays are cupy arrays; host (numpy) inputs are copied to the device, which only tests do.

Three forward kernels (``forward_kernel``):

- ``per-example``: a RawKernel, one thread per (sample, output column); the thread streams the
  rows Wt[j, :] of its sample's active set, so a warp reads contiguous row segments. Blocks of
  the same column tile for all samples are launched together, so rows shared by samples are
  served from L2. Reads n s rows of Wt.
- ``input-major``: gather the union of active rows Wt[U] once, then one cuBLAS GEMM with the
  n x |U| dense restriction of H. Reads the union's rows twice (gather, then GEMM of the copy).
- ``spmm``: cuSPARSE SpMM, CSR(H) @ Wt, on Wt^T's F-order view, so Wt is never copied. Reads
  n s rows of Wt by its own schedule.

Then one threshold-and-compact step: mask g > b_i, ``flatnonzero`` (row-major, so the indices
of each row come out sorted) and the row offsets from the per-row counts.

Every kernel is race-free: the scatter update uses atomicAdd (float64 needs sm_60+).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from subquad.errors import ConfigError
from subquad.model.kernels.arguments import check_widths, per_sample, prepare, tiny_case
from subquad.model.kernels.cuda_source import render
from subquad.model.sparse import SparseRows

try:
    import cupy as cp
    import cupyx
    import cupyx.scipy.sparse as cpsparse
    from cupyx import cusparse
except ImportError as exc:  # pragma: no cover - only reached without cupy
    raise ConfigError("backend", f"the GPU kernels need cupy ({exc}); install the 'gpu' extra "
                      "on a machine with a CUDA GPU, or use --backend numpy") from exc

FORWARD_KERNELS = ("auto", "per-example", "input-major", "spmm")
THREADS = 256  # threads per block of every RawKernel launch


@functools.cache
def _module(dtype_name: str) -> Any:
    """The RawModule of every kernel for one dtype (compiled by NVRTC on first use, cached)."""
    return cp.RawModule(code=render("sparse", dtype_name))


def _blocks(total: int) -> tuple[int]:
    """A 1-D grid of THREADS-wide blocks covering ``total`` threads."""
    return (-(-total // THREADS),)


def _launch(name: str, dt: Any, grid: tuple[int, ...], args: tuple) -> None:
    """Launch kernel ``name`` for dtype ``dt`` on ``grid`` (skipped when the grid is empty)."""
    if min(grid) > 0:
        _module(np.dtype(dt).name).get_function(name)(grid, (THREADS,), args)


def _i64(x: int) -> np.int64:
    """A kernel scalar argument (always passed as a numpy scalar, never a Python int)."""
    return np.int64(x)


def _row_ids(indptr: Any, nnz: int) -> Any:
    """The sample index of every stored entry (nnz,), on the device (empty rows are skipped)."""
    return cp.searchsorted(indptr, cp.arange(nnz, dtype=cp.int64), side="right") - 1


def _union(idx: Any, m_in: int) -> tuple[Any, Any]:
    """Sorted used rows U = union_i S_i, and each entry's position in U (O(m_in + nnz))."""
    used = cp.zeros(m_in, dtype=cp.bool_)
    used[idx] = True
    pos = cp.cumsum(used, dtype=cp.int64) - 1
    return cp.flatnonzero(used), pos[idx]


def _restrict(indptr: Any, pos: Any, val: Any, n: int, width: int) -> Any:
    """Dense n x width array with val at (row of entry, pos of entry): H restricted to U."""
    out = cp.zeros((n, width), dtype=val.dtype)
    out[_row_ids(indptr, int(val.shape[0])), pos] = val
    return out


# ---------------------------------------------------------------- forward


def choose_forward(n: int, s: float, m_in: int, m_out: int, itemsize: int) -> str:
    """The auto rule: 'per-example' everywhere until the GPU benchmark says otherwise.

    Per example reads n s rows of W^T, mostly from L2 (samples of one column tile run
    together); input-major reads the union twice and adds a dense n x |U| x m_out GEMM, which
    only pays when the union is small and n large; spmm is cuSPARSE's version of per-example.
    ``experiments/gpu/bench_forward.py`` times all three on a GPU to settle this.
    """
    del n, s, m_in, m_out, itemsize
    return "per-example"


def _preactivations(kernel: str, Wt: Any, H: SparseRows) -> tuple[Any, float, int]:
    """g = H W (n x m_out, C order), weight bytes read, and |union of the S_i|."""
    dt = Wt.dtype
    m_in, m_out = (int(d) for d in Wt.shape)
    n, row_bytes = H.n, float(m_out * dt.itemsize)
    indptr, idx, val = prepare(H, dt, cp)
    cols, pos = _union(idx, m_in)
    union = int(cols.shape[0])
    if kernel == "per-example":
        G = cp.empty((n, m_out), dtype=dt)
        _launch("forward_rows", dt, (n, -(-m_out // THREADS)),
                (Wt, indptr, idx, val, _i64(m_out), G))
        return G, H.nnz * row_bytes, union
    if kernel == "input-major":
        if union == 0:
            return cp.zeros((n, m_out), dtype=dt), 0.0, 0
        G = _restrict(indptr, pos, val, n, union) @ Wt[cols]
        return G, 2.0 * union * row_bytes, union
    A = cpsparse.csr_matrix((val, idx.astype(cp.int32), indptr.astype(cp.int32)),
                            shape=(n, m_in))
    G = cusparse.spmm(A, Wt.T, transb=True)  # A @ (Wt^T)^T; Wt.T is an F-order view
    return cp.ascontiguousarray(G), H.nnz * row_bytes, union


def _compact(G: Any, b: Any) -> SparseRows:
    """Fused threshold-and-compact: sorted CSR of {c: G[i, c] > b_i} with values G - b_i."""
    n, m_out = (int(d) for d in G.shape)
    mask = G > b[:, None]
    indptr = cp.concatenate([cp.zeros(1, dtype=cp.int64), cp.cumsum(mask.sum(axis=1))])
    flat = cp.flatnonzero(mask)  # row-major: sorted within each row
    rows = flat // m_out
    values = G.ravel()[flat] - b[rows]
    return SparseRows(indptr, flat - rows * m_out, values, m_out)


def forward_layer(
    Wt: Any, H: SparseRows, b: Any, extra: Any = None, forward_kernel: str = "auto"
) -> tuple[SparseRows, dict]:
    """g_i = sum_{j in S_i} h_i[j] Wt[j] (+ extra_i); emit sorted {k: g_i[k] > b_i}, g_i - b_i.

    ``forward_kernel`` forces 'per-example', 'input-major' or 'spmm'; 'auto' applies
    :func:`choose_forward`. ``info["bytes"]`` counts the bytes of Wt each kernel reads.
    """
    if forward_kernel not in FORWARD_KERNELS:
        raise ValueError(f"forward_kernel must be one of {FORWARD_KERNELS}, got {forward_kernel!r}")
    Wt = cp.ascontiguousarray(Wt)
    check_widths(Wt, H)
    dt = Wt.dtype
    kernel = forward_kernel
    if kernel == "auto":
        kernel = choose_forward(H.n, H.nnz / max(H.n, 1), *Wt.shape, dt.itemsize)
    G, nbytes, union = _preactivations(kernel, Wt, H)
    if extra is not None:
        G += cp.asarray(extra, dtype=dt)
    out = _compact(G, per_sample(b, H.n, dt, cp))
    return out, {"kernel": kernel, "bytes": nbytes, "union": union}


# ---------------------------------------------------------------- backward block, Gram


def backward_block(Wt: Any, H_in: SparseRows, V_out: SparseRows) -> Any:
    """u_i[j] = sum_{k in S_out,i} Wt[j, k] v_i[k] for j in S_in,i, aligned with H_in.indices."""
    Wt = cp.ascontiguousarray(Wt)
    check_widths(Wt, H_in, V_out)
    dt = Wt.dtype
    ptr_in, idx_in, _ = prepare(H_in, dt, cp)
    ptr_out, idx_out, v = prepare(V_out, dt, cp)
    nnz = int(idx_in.shape[0])
    u = cp.empty(nnz, dtype=dt)
    _launch("backward_block", dt, _blocks(nnz),
            (Wt, _row_ids(ptr_in, nnz), idx_in, ptr_out, idx_out, v, _i64(nnz),
             _i64(Wt.shape[1]), u))
    return u


def gram(R: SparseRows) -> Any:
    """K = R R^T (n x n) of sparse rows in O(n^2 s): one thread merges each pair of rows."""
    dt = cp.asarray(R.values).dtype
    indptr, idx, val = prepare(R, dt, cp)
    n = R.n
    K = cp.empty((n, n), dtype=dt)
    _launch("gram_merge", dt, _blocks(n * n), (indptr, idx, val, _i64(n), K))
    return K


# ---------------------------------------------------------------- updates


def _update_inputs(Wt: Any, H_in: SparseRows, V_out: SparseRows) -> tuple:
    """Both updates' checks and device arrays: (indptr, indices, values) of H_in, then of V_out,
    in Wt's dtype. The updates write into Wt itself, so it must be a C-contiguous cupy array."""
    if not (isinstance(Wt, cp.ndarray) and Wt.flags.c_contiguous):
        raise ValueError("Wt must be a C-contiguous cupy array (updated in place)")
    check_widths(Wt, H_in, V_out)
    return (*prepare(H_in, Wt.dtype, cp), *prepare(V_out, Wt.dtype, cp))


def update_scatter(Wt: Any, H_in: SparseRows, V_out: SparseRows, coef: Any) -> None:
    """In place: Wt[j, k] += sum_i coef_i h_i[j] v_i[k] over each sample's s x s block.

    One block per active input entry, its threads over the sample's output entries; blocks of
    different samples may hit the same (j, k), so the adds are atomic.
    """
    ptr_in, idx_in, h, ptr_out, idx_out, v = _update_inputs(Wt, H_in, V_out)
    nnz = int(idx_in.shape[0])
    c = per_sample(coef, H_in.n, Wt.dtype, cp)
    _launch("update_scatter", Wt.dtype, (nnz,),
            (Wt, _row_ids(ptr_in, nnz), idx_in, h, ptr_out, idx_out, v, c, _i64(Wt.shape[1])))


def update_rowdense(Wt: Any, H_in: SparseRows, V_out: SparseRows, coef: Any) -> None:
    """In place: Wt[j, :] += sum_i coef_i h_i[j] v_i for each j in the union of the S_in,i.

    One GEMM (|U| x n x m_out) of H restricted to its used rows with the dense rows coef_i v_i,
    added into the used rows of Wt (distinct rows, so the scatter has no collisions).
    """
    ptr_in, idx_in, h, ptr_out, idx_out, v = _update_inputs(Wt, H_in, V_out)
    n, (m_in, m_out) = H_in.n, Wt.shape
    cols, pos = _union(idx_in, int(m_in))
    if cols.shape[0] == 0:
        return
    c = per_sample(coef, n, Wt.dtype, cp)
    Vd = _restrict(ptr_out, idx_out, v, n, int(m_out))
    Vd *= c[:, None]
    cupyx.scatter_add(Wt, cols, _restrict(ptr_in, pos, h, n, int(cols.shape[0])).T @ Vd)


# ---------------------------------------------------------------- warm-up


def warmup(dtype: Any = np.float32) -> None:
    """Compile every kernel for ``dtype`` and create the cuBLAS/cuSPARSE handles, on tiny inputs.

    Call it before any timed phase so that NVRTC compilation and handle creation are never
    measured; it ends with a device synchronisation.
    """
    H, Wt, b = tiny_case(dtype, 40, cp)
    dt, m = Wt.dtype, Wt.shape[1]
    for kernel in FORWARD_KERNELS[1:]:
        forward_layer(Wt, H, b, forward_kernel=kernel)
        forward_layer(Wt, H, b, extra=cp.ones((H.n, m), dtype=dt), forward_kernel=kernel)
    backward_block(Wt, H, H)
    gram(H)
    coef = cp.ones(H.n, dtype=dt)
    update_scatter(Wt, H, H, coef)
    update_rowdense(Wt, H, H, coef)
    cp.cuda.get_current_stream().synchronize()
