"""The CUDA C sources of the GPU kernels, importable without cupy or a GPU.

``gpu.py`` compiles them with cupy at run time; ``compile_check`` compiles them with NVRTC
alone (the ``cuda-bindings`` and ``nvidia-cuda-nvrtc`` packages, no driver needed), so a kernel
edited on a CPU-only machine is checked by ``make test`` before it ever reaches a GPU.
Symbols follow ALGORITHM.md (see ``gpu.py`` for what each kernel computes).
"""

from __future__ import annotations

from subquad.errors import ConfigError

#: C type of the ``@T@`` placeholder for each supported dtype
CTYPES = {"float32": "float", "float64": "double"}

#: compute capabilities every source must compile for (Ampere, Hopper)
ARCHITECTURES = ("compute_80", "compute_90")

_SPARSE = r"""
typedef @T@ T;
typedef long long i64;

// G[i, c] = sum_{p in row i} val[p] * Wt[idx[p], c]; blockIdx.x = sample, blockIdx.y = tile.
extern "C" __global__ void forward_rows(const T* __restrict__ Wt, const i64* __restrict__ indptr,
                                        const i64* __restrict__ idx, const T* __restrict__ val,
                                        const i64 m_out, T* __restrict__ G) {
    const i64 i = blockIdx.x;
    const i64 c = (i64)blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= m_out) return;
    const i64 end = indptr[i + 1];
    T acc = 0;
#pragma unroll 4
    for (i64 p = indptr[i]; p < end; ++p) acc += val[p] * Wt[idx[p] * m_out + c];
    G[i * m_out + c] = acc;
}

// u[p] = sum_{q in row i of V} Wt[idx_in[p], idx_out[q]] v[q], i = rows_in[p]; thread per p.
extern "C" __global__ void backward_block(const T* __restrict__ Wt,
                                          const i64* __restrict__ rows_in,
                                          const i64* __restrict__ idx_in,
                                          const i64* __restrict__ ptr_out,
                                          const i64* __restrict__ idx_out,
                                          const T* __restrict__ v, const i64 nnz_in,
                                          const i64 m_out, T* __restrict__ u) {
    const i64 p = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= nnz_in) return;
    const i64 i = rows_in[p];
    const T* row = Wt + idx_in[p] * m_out;
    const i64 end = ptr_out[i + 1];
    T acc = 0;
    for (i64 q = ptr_out[i]; q < end; ++q) acc += row[idx_out[q]] * v[q];
    u[p] = acc;
}

// K[i, j] = K[j, i] = <r_i, r_j> by merging the two sorted index lists; thread per (i, j).
extern "C" __global__ void gram_merge(const i64* __restrict__ indptr, const i64* __restrict__ idx,
                                      const T* __restrict__ val, const i64 n,
                                      T* __restrict__ K) {
    const i64 t = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n * n) return;
    const i64 i = t / n, j = t % n;
    if (j < i) return;
    i64 a = indptr[i], b = indptr[j];
    const i64 ae = indptr[i + 1], be = indptr[j + 1];
    T acc = 0;
    while (a < ae && b < be) {
        const i64 x = idx[a], y = idx[b];
        if (x == y) { acc += val[a] * val[b]; ++a; ++b; }
        else if (x < y) ++a;
        else ++b;
    }
    K[i * n + j] = acc;
    K[j * n + i] = acc;
}

// Wt[idx_in[p], idx_out[q]] += coef_i h[p] v[q] for q in row i; block per p, threads over q.
extern "C" __global__ void update_scatter(T* __restrict__ Wt, const i64* __restrict__ rows_in,
                                          const i64* __restrict__ idx_in,
                                          const T* __restrict__ h,
                                          const i64* __restrict__ ptr_out,
                                          const i64* __restrict__ idx_out,
                                          const T* __restrict__ v, const T* __restrict__ coef,
                                          const i64 m_out) {
    const i64 p = blockIdx.x;
    const i64 i = rows_in[p];
    const T x = coef[i] * h[p];
    T* row = Wt + idx_in[p] * m_out;
    const i64 end = ptr_out[i + 1];
    for (i64 q = ptr_out[i] + threadIdx.x; q < end; q += blockDim.x)
        atomicAdd(row + idx_out[q], x * v[q]);
}
"""

#: every CUDA source the project holds, by name
SOURCES = {"sparse": _SPARSE}


def render(name: str, dtype_name: str) -> str:
    """The source ``name`` with its element type T set for ``dtype_name``."""
    if name not in SOURCES:
        raise ConfigError("cuda source", f"unknown {name!r}; accepted: {', '.join(SOURCES)}")
    if dtype_name not in CTYPES:
        raise ConfigError("dtype", f"GPU kernels support {', '.join(CTYPES)}, got {dtype_name!r}")
    return SOURCES[name].replace("@T@", CTYPES[dtype_name])


def compile_check(name: str, dtype_name: str, arch: str) -> tuple[bool, str]:
    """Compile one source to PTX with NVRTC for ``arch``: (success, NVRTC's log).

    Needs ``cuda.bindings`` (the ``dev`` extra installs it); no GPU or driver is used.
    """
    from cuda.bindings import nvrtc  # noqa: PLC0415

    ok = nvrtc.nvrtcResult.NVRTC_SUCCESS
    err, prog = nvrtc.nvrtcCreateProgram(render(name, dtype_name).encode(),
                                         f"{name}.cu".encode(), 0, [], [])
    if err != ok:
        raise RuntimeError(f"nvrtcCreateProgram failed: {err}")
    try:
        opts = [f"--gpu-architecture={arch}".encode()]
        (status,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        _, size = nvrtc.nvrtcGetProgramLogSize(prog)
        log = b" " * size
        nvrtc.nvrtcGetProgramLog(prog, log)
    finally:
        nvrtc.nvrtcDestroyProgram(prog)
    return status == ok, log.decode(errors="replace").strip("\x00 \n")
