"""GPU backend (cupy): kernels against the reference, numpy/cupy training parity, CUDA timing.

GPU tests carry ``@pytest.mark.gpu`` and are skipped, with the probe's reason, when the
module-level probe ``gpu_available()`` (it allocates on the device) finds no usable GPU. With
SUBQUAD_REQUIRE_GPU=1 (experiments/gpu/run.sh sets it) they run anyway and a missing GPU is a
failure, so they are never skipped silently on the GPU machine.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from subquad import cli
from subquad.errors import ConfigError
from subquad.model.backend import get_backend, gpu_available
from subquad.model.kernels import reference
from subquad.model.sparse import SparseRows
from subquad.model.train import TrainConfig, run_training

from .kernel_cases import CASES, DTYPES, IDS, close, forward_case, setup

HAS_GPU, PROBE = gpu_available()
REQUIRE_GPU = os.environ.get("SUBQUAD_REQUIRE_GPU") == "1"
needs_gpu = pytest.mark.skipif(not (HAS_GPU or REQUIRE_GPU), reason=f"no usable GPU: {PROBE}")


def every_case(test):
    """Run a GPU kernel test on every case of ``kernel_cases`` in both dtypes."""
    test = pytest.mark.parametrize("dtype", DTYPES)(test)
    return pytest.mark.parametrize("case", CASES, ids=IDS)(test)



@pytest.fixture
def cp():
    """cupy; a failure naming the probe's reason when the GPU is required but unusable."""
    if not HAS_GPU:
        pytest.fail(f"SUBQUAD_REQUIRE_GPU=1 but no usable GPU: {PROBE}")
    import cupy  # noqa: PLC0415

    return cupy


@pytest.fixture
def gk(cp):
    """The GPU kernel module."""
    from subquad.model.kernels import gpu  # noqa: PLC0415

    return gpu


def on_device(cp, R: SparseRows) -> SparseRows:
    return SparseRows(cp.asarray(R.indptr), cp.asarray(R.indices), cp.asarray(R.values), R.m)


def to_host(cp, R: SparseRows) -> SparseRows:
    return SparseRows(cp.asnumpy(R.indptr), cp.asnumpy(R.indices), cp.asnumpy(R.values), R.m)


# ---------------------------------------------------------------- kernels vs reference


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("with_extra", [False, True])
@every_case
def test_forward(cp, gk, case, dtype, with_extra):
    Wt, H, g, extra, b = forward_case(case, dtype, with_extra)
    ref, rinfo = reference.forward_layer(Wt, H, b, extra)
    ex = None if extra is None else cp.asarray(extra)
    row_bytes = Wt.shape[1] * np.dtype(dtype).itemsize
    for kernel in gk.FORWARD_KERNELS:
        out, info = gk.forward_layer(cp.asarray(Wt), on_device(cp, H), cp.asarray(b), ex,
                                     forward_kernel=kernel)
        assert out.m == Wt.shape[1] and out.values.dtype == dtype
        assert out.indptr.dtype == np.int64 and out.indices.dtype == np.int64
        host = to_host(cp, out)
        np.testing.assert_array_equal(host.indptr, ref.indptr)
        np.testing.assert_array_equal(host.indices, ref.indices)  # sorted, same supports
        close(host.values, ref.values, dtype)
        assert info["union"] == rinfo["union"]
        rows_read = 2 * rinfo["union"] if info["kernel"] == "input-major" else H.nnz
        assert info["bytes"] == rows_read * row_bytes


@pytest.mark.gpu
@needs_gpu
def test_forward_rule_and_bad_kernel(cp, gk):
    assert gk.choose_forward(16, 140, 4096, 4096, 4) in gk.FORWARD_KERNELS[1:]
    Wt, H, _, _ = setup(CASES[0], np.float64)
    with pytest.raises(ValueError, match="forward_kernel"):
        gk.forward_layer(cp.asarray(Wt), on_device(cp, H), np.zeros(H.n), forward_kernel="x")


@pytest.mark.gpu
@needs_gpu
@every_case
def test_backward_block_and_gram(cp, gk, case, dtype):
    Wt, H, V, _ = setup(case, dtype)
    u = gk.backward_block(cp.asarray(Wt), on_device(cp, H), on_device(cp, V))
    assert u.dtype == dtype and u.shape == (H.nnz,)
    close(cp.asnumpy(u), reference.backward_block(Wt, H, V), dtype)
    for R in (H, V):
        K = cp.asnumpy(gk.gram(on_device(cp, R)))
        assert K.dtype == dtype and K.shape == (R.n, R.n)
        np.testing.assert_array_equal(K, K.T)
        close(K, reference.gram(R), dtype)


@pytest.mark.gpu
@needs_gpu
@every_case
def test_updates(cp, gk, case, dtype):
    Wt, H, V, rng = setup(case, dtype)
    coef = rng.standard_normal(H.n).astype(dtype)
    want = Wt.copy()
    reference.update_scatter(want, H, V, coef)
    for update in (gk.update_scatter, gk.update_rowdense):
        W = cp.array(Wt)  # a fresh device copy per update
        assert update(W, on_device(cp, H), on_device(cp, V), cp.asarray(coef)) is None
        close(cp.asnumpy(W), want, dtype)


@pytest.mark.gpu
@needs_gpu
def test_updates_reject_host_weights(cp, gk):
    Wt, H, V, _ = setup(CASES[1], np.float64)
    with pytest.raises(ValueError, match="C-contiguous cupy"):
        gk.update_scatter(Wt, on_device(cp, H), on_device(cp, V), np.ones(H.n))


@pytest.mark.gpu
@needs_gpu
def test_warmup_runs(gk):
    for dtype in DTYPES:
        gk.warmup(dtype)


# ---------------------------------------------------------------- backend and timing


@pytest.mark.gpu
@needs_gpu
def test_cuda_event_timer_is_positive(cp):
    be = get_backend("cupy")
    a = cp.asarray(np.random.default_rng(0).standard_normal((2048, 2048), dtype=np.float32))
    for _ in range(3):
        with be.timer() as t:
            b = a @ a
        assert 0.0 < t[0] < 10.0 and b.shape == a.shape


@pytest.mark.skipif(HAS_GPU, reason=f"a usable GPU is present ({PROBE})")
def test_cupy_backend_without_gpu_is_a_config_error(capsys):
    with pytest.raises(ConfigError, match="usable CUDA GPU") as err:
        get_backend("cupy")
    assert err.value.param == "backend"
    argv = ["train", "--backend", "cupy", "--m", "64", "--n", "2", "--iters", "1"]
    assert cli.main(argv) == cli.EXIT_USAGE
    msg = capsys.readouterr().err
    assert msg.startswith("subquad: error: backend:") and "--backend numpy" in msg
    assert "Traceback" not in msg


# ---------------------------------------------------------------- numpy / cupy parity


PARITY = [
    ("dense-gn", "auto", "cholesky"),
    ("subquad", "scatter", "cholesky"),
    ("subquad", "rowdense", "cholesky"),
    ("subquad", "lazy", "cholesky"),
    ("subquad", "scatter", "pcg-tensorsketch"),
]


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize(("method", "update", "solver"), PARITY,
                         ids=[f"{m}-{u}-{s}" for m, u, s in PARITY])
def test_numpy_cupy_parity(cp, method, update, solver):
    """Same seed, float64: the same loss trajectory, activity, flips and counted work."""
    kw = dict(method=method, m=512, n=8, d=16, L=3, iters=4, seed=3, dtype="float64",
              update=update, solver=solver)
    if update == "lazy":
        kw["rank_max"] = 16  # a fold after every second step
    a = run_training(TrainConfig(backend="numpy", **kw))
    b = run_training(TrainConfig(backend="cupy", **kw))
    la, lb = np.array(a["loss"]), np.array(b["loss"])
    rtol = 1e-8 if solver == "cholesky" else 1e-6  # PCG stops at its own tolerance
    np.testing.assert_allclose(lb, la, rtol=rtol, atol=1e-12 * la[0])
    assert la[-1] < 1e-3 * la[0]
    assert b["work"] == a["work"]
    assert b["active_fraction"] == a["active_fraction"] and b["flips"] == a["flips"]
    for phase in ("backward", "gram", "solve", "update", "fold"):  # forward: kernel-specific
        assert b["bytes"][phase] == a["bytes"][phase], phase
    if method == "subquad" and update == "lazy":
        assert b["config"]["folds"] == a["config"]["folds"] >= 1
