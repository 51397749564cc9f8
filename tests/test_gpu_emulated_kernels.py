"""The CUDA kernels compiled for the host under AddressSanitizer + UBSan, in three thread orders.

Every kernel of ``cuda_source`` runs through the RawKernel double (CuPy's argument rules) in
the sanitizer-built driver, on the shared cases plus a single element and widths that are not
multiples of the block, in forward, reverse and seeded random order, and must equal
``model/kernels/reference.py``. Planted faults (an off-by-one bound, a Python float for a
``float``, an int32 array for ``long long*``, a transposed view) must be caught. Test-only
emulation: it says nothing about a real GPU (docs/GPU.md, "Emulation").
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from subquad.model.kernels import reference
from subquad.model.kernels.cuda_source import SOURCES, render
from subquad.model.kernels.emulation import host, rawkernel
from subquad.model.kernels.emulation.host import HostModule, Launch, SanitizerReport
from subquad.model.kernels.emulation.rawkernel import ArgumentError, RawModule
from subquad.model.sparse import SparseRows

from .kernel_cases import CASES, DTYPES, gapped_thresholds, setup

THREADS = 256  # as gpu.THREADS (gpu.py itself needs cupy to import)
TOL = {np.float64: 1e-12, np.float32: 1e-5}

try:
    COMPILER = host.find_compiler()
except host.HostCompilerMissing as _exc:
    pytest.skip(str(_exc), allow_module_level=True)


def _one_element(m_in: int, m_out: int, dtype):
    """n = 1 with a single stored entry in H and in V."""
    rng = np.random.default_rng(1)
    Wt = rng.standard_normal((m_in, m_out)).astype(dtype)
    H = SparseRows(np.array([0, 1]), np.array([m_in - 1]), np.array([0.7], dtype), m_in)
    V = SparseRows(np.array([0, 1]), np.array([m_out // 2]), np.array([-1.3], dtype), m_out)
    return Wt, H, V, rng


ALL = [("case", c) for c in CASES] + [("single", (1, 1)), ("single", (3, 257))]


def _case(kind, c, dtype):
    return setup(c, dtype) if kind == "case" else _one_element(*c, dtype)


def _row_ids(R: SparseRows) -> np.ndarray:
    return (np.searchsorted(R.indptr, np.arange(R.nnz), side="right") - 1).astype(np.int64)


def _blocks(total: int) -> int:
    return -(-total // THREADS)


def _launches(mod: RawModule, Wt, H, V, coef, dtype):
    """The four kernels' launches for one case, marshalled by the double (as gpu.py builds them)."""
    dt = np.dtype(dtype)
    n, m_out = H.n, Wt.shape[1]
    i64 = np.int64
    ptr, idx, val = H.indptr.astype(i64), H.indices.astype(i64), H.values.astype(dt)
    vptr, vidx, v = V.indptr.astype(i64), V.indices.astype(i64), V.values.astype(dt)
    out = {"G": np.full((n, m_out), np.nan, dt), "u": np.full(H.nnz, np.nan, dt),
           "K": np.full((n, n), np.nan, dt), "W": Wt.copy()}
    spec = [
        ("forward_rows", (n, _blocks(m_out)), (Wt, ptr, idx, val, i64(m_out), out["G"])),
        ("backward_block", (_blocks(H.nnz),),
         (Wt, _row_ids(H), idx, vptr, vidx, v, i64(H.nnz), i64(m_out), out["u"])),
        ("gram_merge", (_blocks(n * n),), (ptr, idx, val, i64(n), out["K"])),
        ("update_scatter", (H.nnz,),
         (out["W"], _row_ids(H), idx, val, vptr, vidx, v, coef.astype(dt), i64(m_out))),
    ]
    launches = []
    for name, grid, args in spec:
        if min(grid) == 0:
            continue
        k = mod.get_function(name)
        launches.append(Launch(name, grid, (THREADS,), k.marshal(args),
                               [p.pointer and not p.const for p in k.kernel.params]))
    return launches, out


def _compare(Wt, H, V, coef, out, dtype) -> dict[str, float]:
    """Relative max errors of each kernel against the reference."""
    def rel(a, b):
        scale = max(float(np.abs(b).max(initial=0.0)), 1.0)
        return float(np.abs(np.asarray(a, float) - b).max(initial=0.0)) / scale

    g = H.to_dense().astype(np.float64) @ Wt.astype(np.float64)
    b = gapped_thresholds(g).astype(dtype) if H.n and Wt.shape[1] > 1 else np.zeros(H.n, dtype)
    ref, _ = reference.forward_layer(Wt, H, b)
    G = out["G"]
    mask = G > b[:, None]
    np.testing.assert_array_equal(mask.sum(axis=1), np.diff(ref.indptr))
    np.testing.assert_array_equal(np.nonzero(mask)[1], ref.indices)
    want_w = Wt.copy()
    reference.update_scatter(want_w, H, V, coef)
    return {"forward_rows": rel((G - b[:, None])[mask], ref.values),
            "backward_block": rel(out["u"], reference.backward_block(Wt, H, V)),
            "gram_merge": rel(out["K"], reference.gram(H)),
            "update_scatter": rel(out["W"], want_w)}


@pytest.fixture(scope="module")
def sanitized_modules():
    rawkernel.SETTINGS.array_type = np.ndarray  # host arrays stand in for device arrays here
    return {np.dtype(dt).name: RawModule(code=render("sparse", np.dtype(dt).name))
            for dt in DTYPES}


@pytest.mark.parametrize("schedule", host.SCHEDULES)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_kernels_match_reference_under_sanitizers(sanitized_modules, dtype, schedule):
    """One sanitized driver process per (dtype, schedule) runs every kernel on every case."""
    mod = sanitized_modules[np.dtype(dtype).name]
    hm = HostModule(mod.code, sanitize=True)
    launches, outs, inputs = [], [], []
    for kind, c in ALL:
        Wt, H, V, rng = _case(kind, c, dtype)
        coef = rng.standard_normal(H.n)
        ls, out = _launches(mod, Wt, H, V, coef, dtype)
        launches += ls
        outs.append(out)
        inputs.append((Wt, H, V, coef.astype(dtype)))
    hm.run(launches, schedule=schedule, seed=7)  # raises SanitizerReport on any report
    worst: dict[str, float] = {}
    for (Wt, H, V, coef), out in zip(inputs, outs):
        for name, err in _compare(Wt, H, V, coef, out, dtype).items():
            worst[name] = max(worst.get(name, 0.0), err)
    print(f"\n{np.dtype(dtype).name} {schedule}: max relative error {worst}")
    assert all(e <= TOL[dtype] for e in worst.values()), worst


def test_non_atomic_kernels_are_order_independent(sanitized_modules):
    """forward_rows, backward_block and gram_merge give bit-identical results in all orders."""
    mod = sanitized_modules["float64"]
    hm = HostModule(mod.code, sanitize=False)
    results = []
    for schedule in host.SCHEDULES:
        Wt, H, V, rng = setup(CASES[4], np.float64)
        ls, out = _launches(mod, Wt, H, V, rng.standard_normal(H.n), np.float64)
        hm.run(ls, schedule=schedule, seed=3)
        results.append(out)
    for key in ("G", "u", "K"):
        for other in results[1:]:
            np.testing.assert_array_equal(other[key], results[0][key])
    np.testing.assert_allclose(results[1]["W"], results[0]["W"], rtol=1e-14, atol=1e-14)


def test_c_compiler_fallback_gives_the_same_results(monkeypatch, sanitized_modules):
    """Where only gcc exists, the source compiles as C (extern "C" dropped) to the same numbers."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no C compiler to test the fallback with")
    mod = sanitized_modules["float64"]
    Wt, H, V, rng = setup(CASES[2], np.float64)
    coef = rng.standard_normal(H.n)
    outs = []
    for finder in (host.find_compiler, lambda: (gcc, "c")):
        monkeypatch.setattr(host, "find_compiler", finder)
        ls, out = _launches(mod, Wt, H, V, coef, np.float64)
        HostModule(mod.code, sanitize=False).run(ls, "forward")
        outs.append(out)
    for key in outs[0]:
        np.testing.assert_array_equal(outs[1][key], outs[0][key])


def test_missing_compiler_message(monkeypatch):
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.delenv("CC", raising=False)
    with pytest.raises(host.HostCompilerMissing, match="apt-get install g"):
        host.find_compiler()


# ---------------------------------------------------------------- planted faults


def test_planted_off_by_one_is_reported_by_the_sanitizer(monkeypatch):
    good = "if (p >= nnz_in) return;"
    assert SOURCES["sparse"].count(good) == 1
    monkeypatch.setitem(SOURCES, "sparse", SOURCES["sparse"].replace(good,
                                                                     "if (p > nnz_in) return;"))
    mod = RawModule(code=render("sparse", "float64"))
    Wt, H, V, _ = setup(CASES[1], np.float64)
    assert H.nnz % THREADS != 0  # a spare thread p = nnz_in exists in the last block
    k = mod.get_function("backward_block")
    u = np.zeros(H.nnz)
    args = (Wt, _row_ids(H), H.indices, V.indptr, V.indices, V.values, np.int64(H.nnz),
            np.int64(Wt.shape[1]), u)
    launch = Launch("backward_block", (_blocks(H.nnz),), (THREADS,), k.marshal(args),
                    [False] * 8 + [True])
    with pytest.raises(SanitizerReport, match="heap-buffer-overflow") as err:
        HostModule(mod.code, sanitize=True).run([launch], "forward")
    assert "backward_block" in str(err.value)


AXPY = r"""
extern "C" __global__ void axpy(float* __restrict__ y, const float* __restrict__ x,
                                const float a, const int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] += a * x[i];
}
"""


def test_python_float_for_a_float_parameter_is_named():
    k = RawModule(code=AXPY).get_function("axpy")
    x, y = np.ones(5, np.float32), np.zeros(5, np.float32)
    with pytest.raises(ArgumentError, match=r"kernel axpy, parameter 'a'.*Python float.*double"):
        k((1,), (32,), (y, x, 2.0, np.int32(5)))
    k((1,), (32,), (y, x, np.float32(2.0), np.int32(5)))  # the right types run
    np.testing.assert_array_equal(y, 2.0)
    with pytest.raises(ArgumentError, match=r"parameter 'n'.*Python int.*long long"):
        k((1,), (32,), (y, x, np.float32(2.0), 5))


def test_int32_array_for_a_long_long_pointer_is_named():
    mod = RawModule(code=render("sparse", "float64"))
    Wt, H, _, _ = setup(CASES[0], np.float64)
    G = np.empty((H.n, Wt.shape[1]))
    args = (Wt, H.indptr.astype(np.int32), H.indices, H.values, np.int64(Wt.shape[1]), G)
    with pytest.raises(ArgumentError, match=r"kernel forward_rows, parameter 'indptr'.*int32"):
        mod.get_function("forward_rows")((H.n, 1), (THREADS,), args)


def test_transposed_view_is_named():
    mod = RawModule(code=render("sparse", "float64"))
    Wt, H, _, _ = setup(CASES[0], np.float64)  # square, so only the strides are wrong
    G = np.empty((H.n, Wt.shape[1]))
    args = (Wt.T, H.indptr, H.indices, H.values, np.int64(Wt.shape[1]), G)
    with pytest.raises(ArgumentError, match=r"kernel forward_rows, parameter 'Wt'.*non-C-contig"):
        mod.get_function("forward_rows")((H.n, 1), (THREADS,), args)


def test_other_launch_errors_are_named():
    """32-bit index past 2^31 threads, CUDA's launch limits, restrict aliasing, arity."""
    k = RawModule(code=AXPY).get_function("axpy")
    x, y = np.ones(5, np.float32), np.zeros(5, np.float32)
    ok = (y, x, np.float32(1.0), np.int32(5))
    with pytest.raises(ArgumentError, match=r"axpy.*blockIdx.x \* blockDim.x in 32 bits"):
        k((2**23 + 1,), (256,), ok)
    with pytest.raises(ArgumentError, match=r"grid\[1\] = 70000"):
        k((1, 70000), (32,), ok)
    with pytest.raises(ArgumentError, match="more than 1024 threads"):
        k((1,), (64, 32), ok)
    with pytest.raises(ArgumentError, match=r"parameter 'y'.*'x' overlaps"):
        k((1,), (32,), (y, y, np.float32(1.0), np.int32(5)))
    with pytest.raises(ArgumentError, match="takes 4 arguments"):
        k((1,), (32,), (y, x))
    # the project's kernels index in 64 bits, so a huge grid is not flagged for them
    bodies = rawkernel._bodies(render("sparse", "float32"))
    assert bodies and not any(rawkernel._index_is_32bit(b, "x") for b in bodies.values())
