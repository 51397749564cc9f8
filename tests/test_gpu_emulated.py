"""The cupy backend on the test-only host stand-in: glue, timing, training and sweep vs numpy.

``gpu.py``, ``backend.py`` and the trainer run unchanged against ``emulation.fake_cupy`` (numpy
arrays that refuse host mixing, scipy.sparse, the CUDA kernels compiled for the host behind the
RawKernel double). This proves the GPU code path's logic and types, not its behaviour on a GPU
(docs/GPU.md, "Emulation"); results say ``cupy-emulated`` and record no GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from subquad.model.kernels import reference
from subquad.model.kernels.emulation import rawkernel
from subquad.model.sparse import SparseRows
from subquad.model.train import TrainConfig, build_trainer
from tests.experiment_text import DENSE_AND_SCATTER, grid

from .kernel_cases import CASES, DTYPES, IDS, forward_case, setup

ROOT = Path(__file__).resolve().parents[1]
TOL = {np.float64: 1e-12, np.float32: 1e-5}


def dev(cp, R: SparseRows) -> SparseRows:
    return SparseRows(cp.asarray(R.indptr), cp.asarray(R.indices), cp.asarray(R.values), R.m)


def rel(actual, desired) -> float:
    scale = max(float(np.abs(desired).max(initial=0.0)), 1.0)
    return float(np.abs(np.asarray(actual, float) - desired).max(initial=0.0)) / scale


@pytest.fixture(params=["forward", "reverse", "random"])
def gk(emulated_cupy, request):
    """gpu.py on the stand-in, its kernels in each thread order."""
    rawkernel.SETTINGS.schedule = request.param
    from subquad.model.kernels import gpu  # noqa: PLC0415

    yield gpu
    rawkernel.SETTINGS.schedule = "random"


# ---------------------------------------------------------------- glue vs reference


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_gpu_glue_matches_reference(emulated_cupy, gk, case, dtype):
    cp = emulated_cupy
    Wt, H, _, extra, b = forward_case(case, dtype, True)
    ref, rinfo = reference.forward_layer(Wt, H, b, extra)
    for kernel in gk.FORWARD_KERNELS:
        out, info = gk.forward_layer(cp.asarray(Wt), dev(cp, H), cp.asarray(b), cp.asarray(extra),
                                     forward_kernel=kernel)
        assert isinstance(out.values, cp.ndarray) and out.values.dtype == dtype
        np.testing.assert_array_equal(cp.asnumpy(out.indptr), ref.indptr)
        np.testing.assert_array_equal(cp.asnumpy(out.indices), ref.indices)
        assert rel(cp.asnumpy(out.values), ref.values) <= TOL[dtype], kernel
        assert info["union"] == rinfo["union"]
    Wt, H, V, rng = setup(case, dtype)
    u = gk.backward_block(cp.asarray(Wt), dev(cp, H), dev(cp, V))
    assert rel(cp.asnumpy(u), reference.backward_block(Wt, H, V)) <= TOL[dtype]
    K = cp.asnumpy(gk.gram(dev(cp, H)))
    np.testing.assert_array_equal(K, K.T)
    assert rel(K, reference.gram(H)) <= TOL[dtype]
    coef = rng.standard_normal(H.n).astype(dtype)
    want = Wt.copy()
    reference.update_scatter(want, H, V, coef)
    for update in (gk.update_scatter, gk.update_rowdense):
        W = cp.array(Wt)
        update(W, dev(cp, H), dev(cp, V), cp.asarray(coef))
        assert rel(cp.asnumpy(W), want) <= TOL[dtype], update.__name__


def test_stand_in_rejects_what_cupy_rejects(emulated_cupy):
    from subquad.model.kernels import gpu  # noqa: PLC0415

    cp = emulated_cupy
    Wt, H, V, _ = setup(CASES[1], np.float64)
    with pytest.raises(ValueError, match="C-contiguous cupy"):  # host weights, as on a GPU
        gpu.update_scatter(Wt, dev(cp, H), dev(cp, V), cp.ones(H.n))
    with pytest.raises(TypeError, match="host numpy array"):
        cp.asarray(Wt) + Wt
    empty = cp.empty(3)
    assert np.isnan(cp.asnumpy(empty)).all()  # unwritten output shows as NaN
    for dtype in DTYPES:
        gpu.warmup(dtype)


def test_backend_timer_and_names_under_the_stand_in(emulated_cupy):
    from subquad.model.backend import emulated, get_backend, gpu_available, recorded_backend

    be = get_backend("cupy")
    assert be.is_gpu and be.xp is emulated_cupy and emulated()
    assert recorded_backend("cupy") == "cupy-emulated" and recorded_backend("numpy") == "numpy"
    ok, name = gpu_available()
    assert ok and "emulated" in name and "no GPU" in name
    a = be.asarray(np.ones((64, 64)))
    with be.timer() as t:
        (a @ a).sum()
    assert 0.0 < t[0] < 10.0
    assert isinstance(be.to_host(a), np.ndarray) and not isinstance(be.to_host(a), be.xp.ndarray)


# ---------------------------------------------------------------- training parity

MODES = [(u, L, f) for u in ("scatter", "rowdense", "lazy") for L in (1, 2, 3)
         for f in ("per-example", "input-major")]
MODES += [("scatter", 2, "spmm"), ("rowdense", 1, "spmm"), ("dense", 2, "auto")]


def _iterates(backend: str, update: str, L: int, fk: str, solver: str = "cholesky"):
    method = "dense-gn" if update == "dense" else "subquad"
    kw = dict(method=method, m=96, n=8, d=16, L=L, iters=4, seed=3, dtype="float64",
              solver=solver, update="auto" if update == "dense" else update,
              forward_kernel=fk if backend == "cupy" or fk != "spmm" else "auto")
    if update == "lazy":
        kw["rank_max"] = 16  # folds inside the run
    tr = build_trainer(TrainConfig(backend=backend, **kw))
    losses, weights = [tr.start()], []
    for _ in range(kw["iters"]):
        losses.append(tr.step().loss)
        weights.append([np.array(tr.net.be.to_host(w)) for w in tr.net.Wt])
    return np.array(losses), weights, tr.describe()


@pytest.mark.parametrize(("update", "L", "fk"), MODES, ids=[f"{u}-L{L}-{f}" for u, L, f in MODES])
def test_training_iterates_match_numpy(emulated_cupy, update, L, fk):
    """float64: every loss and every weight matrix after every step, to 1e-10."""
    la, wa, da = _iterates("numpy", update, L, fk)
    lb, wb, db = _iterates("cupy", update, L, fk)
    assert np.abs(lb - la).max() <= 1e-10 * la[0]
    assert max(np.abs(x - y).max() for sa, sb in zip(wa, wb) for x, y in zip(sa, sb)) <= 1e-10
    assert la[-1] < 0.5 * la[0]
    if update != "dense":
        assert db["forward_kernel_used"] == [fk] and db["update"] == da["update"] == update
    if update == "lazy":
        assert db["folds"] == da["folds"] >= 1


def test_pcg_training_matches_numpy(emulated_cupy):
    la, wa, _ = _iterates("numpy", "scatter", 2, "per-example", "pcg-tensorsketch")
    lb, wb, _ = _iterates("cupy", "scatter", 2, "per-example", "pcg-tensorsketch")
    np.testing.assert_allclose(lb, la, rtol=1e-6, atol=1e-10 * la[0])  # PCG's own tolerance


# ---------------------------------------------------------------- CLI and sweep (env var)


def _env() -> dict:
    return {**os.environ, "SUBQUAD_EMULATE_CUPY": "1", "PYTHONPATH": str(ROOT)}


def test_cli_train_under_the_env_var(emulated_cupy):
    args = ["--m", "96", "--n", "8", "--L", "2", "--iters", "4", "--seed", "3",
            "--dtype", "float64", "--update", "scatter", "--json"]
    proc = subprocess.run([sys.executable, "-m", "subquad", "train", "--backend", "cupy", *args],
                          capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(proc.stdout)
    assert rec["status"] == "ok" and rec["config"]["backend"] == "cupy-emulated"
    la, _, _ = _iterates("numpy", "scatter", 2, "auto")
    assert np.abs(np.array(rec["loss"]) - la).max() <= 1e-10 * la[0]


SWEEP = ('\nname = "smoke-emulated"\nbackend = "cupy"\ndtype = "float64"\n' + DENSE_AND_SCATTER
         + grid("64, 96, 128") + "\n[calibration]\nenabled = true\nm = [256]\n")


def test_sweep_fit_report_under_the_env_var(tmp_path):
    cfg = tmp_path / "smoke-emulated.toml"
    cfg.write_text(SWEEP)
    out = tmp_path / "out"
    for cmd in (["sweep", str(cfg), "--out", str(out)], ["fit", str(out)], ["report", str(out)]):
        proc = subprocess.run([sys.executable, "-m", "subquad", *cmd], capture_output=True,
                              text=True, env=_env(), cwd=ROOT, timeout=300)
        assert proc.returncode == 0, f"{cmd[0]}: {proc.stdout}\n{proc.stderr}"
    runs = pd.read_csv(out / "runs.csv")
    assert set(runs["status"]) == {"ok"}
    assert set(runs["backend"]) == {"cupy-emulated"}  # never "cupy": not GPU evidence
    assert (runs[runs["phase"] == "iteration"]["seconds"] > 0).all()
    env = json.loads((out / "environment.json").read_text())
    assert env["gpu"] is None and "-gpu" not in env["machine"]
    fits = pd.read_csv(out / "fits.csv")  # check and report key every series by backend
    assert len(fits) and set(fits["backend"]) == {"cupy-emulated"}
    report = (out / "report.md").read_text()
    assert "| GPU | none |" in report and "GPU driver" not in report
