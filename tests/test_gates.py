"""Regression gates: counted-work exponents of the real trainers, and `subquad check` rules."""

from __future__ import annotations

import math
from importlib import resources

import numpy as np
import pandas as pd
import pytest

from subquad.analysis.check import factor_gate, run_check
from subquad.analysis.fit import fit_run
from subquad.analysis.gates import GateResult, format_gates, gate_scan, scan_work
from subquad.analysis.limits import load_limits
from subquad.cli import main
from subquad.model.sparse import SparseRows
from subquad.model.subquadratic import SparseKernels, SparseState
from subquad.model.train import TrainConfig, build_trainer
from subquad.model.trainer import Work
from subquad.results.schema import SCHEMA_VERSION, VERSION_COLUMN

GRID = (1024, 2048, 4096, 8192)
N, C, ITERS = 4, 0.2, 2


# ------------------------------------------------------------------ counted work, real trainers


@pytest.fixture(scope="module")
def subquad_scan():
    """The subquad trainer at L = 2 (L = 1 has no backward phase), sparse scatter update."""
    return scan_work("subquad", GRID, N, 2, C, ITERS, update="scatter")


@pytest.fixture(scope="module")
def dense_scan():
    return scan_work("dense-gn", GRID, N, 1, C, ITERS)


def _by_name(results: list[GateResult]) -> dict[str, GateResult]:
    return {r.name: r for r in results}


def test_subquad_iteration_work_is_subquadratic(subquad_scan):
    lim = load_limits().exponent_limit("subquad", "iteration", "work", c=C)
    assert lim.hi == pytest.approx(1.82)
    assert subquad_scan.exponent("iteration") <= lim.hi


def test_subquad_default_update_iteration_work_is_subquadratic():
    """L = 1 and update auto (row-dense below m ~ 3000, scatter above) also stay below."""
    scan = scan_work("subquad", GRID, N, 1, C, ITERS)
    lim = load_limits().exponent_limit("subquad", "iteration", "work", c=C)
    assert scan.exponent("iteration") <= lim.hi


def test_dense_gn_iteration_work_is_quadratic(dense_scan):
    lim = load_limits().exponent_limit("dense-gn", "iteration", "work")
    assert (lim.lo, lim.hi) == pytest.approx((1.98, 2.02))
    assert lim.lo <= dense_scan.exponent("iteration") <= lim.hi


def test_init_is_the_only_quadratic_phase(subquad_scan):
    lim = load_limits()
    exps = subquad_scan.exponents
    assert exps["init"] == pytest.approx(2.0, abs=1e-9)
    others = {p: e for p, e in exps.items() if p not in ("init", "fold")}
    assert all(e <= lim.non_init_max for e in others.values()), others
    assert math.isnan(exps["fold"])  # no lazy structure: the fold phase does no work


@pytest.mark.parametrize("phase", ["forward", "backward", "gram", "update", "solve"])
def test_phase_work_matches_its_model(subquad_scan, phase):
    model = load_limits().model(phase, "scatter")
    target = model.exponent(GRID, C)
    assert abs(subquad_scan.exponent(phase) - target) <= model.tolerance


def test_model_exponents_come_from_s_of_m():
    """forward ~ m s(m) has local slope ~1.76 at c = 0.2 (ALGORITHM.md section 5), not 1.8."""
    lim = load_limits()
    fwd = lim.model("forward").exponent(GRID, C)
    assert 1.70 < fwd < 1.80
    assert lim.model("backward").exponent(GRID, C) == pytest.approx(2 * (fwd - 1))
    assert lim.model("solve").exponent(GRID, C) == 0.0


def test_every_work_gate_passes_on_the_real_trainers(subquad_scan, dense_scan):
    results = gate_scan(subquad_scan) + gate_scan(dense_scan)
    assert all(r.passed for r in results), format_gates(results)


# ------------------------------------------------------------------ a dense forward must fail


def _dense_forward(self: SparseKernels) -> tuple[SparseState, Work]:
    """Every pre-activation from the densified h_{l-1}: honest n m^2 work, same output."""
    net, xp = self.net, self.xp
    sp = net.spec
    H, norms = [self.H0], [self.norm0]
    for l in range(1, sp.L + 1):
        b = net.threshold(norms[-1])
        G = H[-1].to_dense(xp) @ self._W0t(l)
        out = SparseRows.from_dense(xp.maximum(G - b[:, None], 0), xp)
        H.append(out)
        norms.append(out.row_norms(xp))
    HL = H[-1]
    f = HL.with_values(net.a[HL.indices] * HL.values).row_sums(xp)
    madds = float(sp.L) * sp.n * sp.m * sp.m + HL.nnz
    return SparseState(H, norms, f), Work(madds, float(sp.L) * sp.m * sp.m * sp.itemsize)


def test_dense_forward_stand_in_gives_the_same_sparse_rows():
    cfg = TrainConfig(method="subquad", m=1024, n=N, L=2, c=C, dtype="float32",
                      update="scatter")
    tr = build_trainer(cfg)
    tr.start()
    real, real_work = tr.kernels.forward()
    dense, dense_work = _dense_forward(tr.kernels)
    for a, b in zip(real.H, dense.H):
        np.testing.assert_array_equal(a.indptr, b.indptr)
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_allclose(a.values, b.values, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(real.f, dense.f, rtol=1e-4, atol=1e-6)
    assert dense_work.madds > 10 * real_work.madds


def test_work_gate_catches_a_dense_forward(monkeypatch, subquad_scan):
    monkeypatch.setattr(SparseKernels, "forward", _dense_forward)
    bad = _by_name(gate_scan(scan_work("subquad", GRID, N, 2, C, ITERS, update="scatter")))
    good = _by_name(gate_scan(subquad_scan))
    for name in ("subquad iteration work exponent", "subquad forward: not m^2",
                 "subquad forward work vs model"):
        assert not bad[name].passed, format_gates(list(bad.values()))
        assert good[name].passed, format_gates(list(good.values()))
    assert bad["subquad iteration work exponent"].value > 1.95


# ------------------------------------------------------------------ subquad check, synthetic runs

SYNTH_M = (1024, 1448, 2048, 2896, 4096, 5792, 8192)
HEALTHY = {"dense-gn": 2.0, "subquad": 1.75}


def _synthetic_run(path, seconds_exp=None, work_exp=None, factor=1.0, noise=0.01, seed=0,
                   samples=9, calib=None):
    """A fitted run directory: seconds ~ C m^k (lognormal noise), work ~ m^k exactly;
    ``calib`` = speed factor of a calib-gemv kernel timed on the same grid (None: not run)."""
    seconds_exp = {**HEALTHY, **(seconds_exp or {})}
    work_exp = {**HEALTHY, **(work_exp or {})}
    rng = np.random.default_rng(seed)
    rows = []
    for method in HEALTHY:
        for m in SYNTH_M:
            base = {"machine": "synthetic", "method": method, "dtype": "float32", "m": m,
                    "n": 16, "d": 16, "L": 2, "c": 0.2, "seed": 0, "status": "ok",
                    "options": "solver=cholesky" if method == "subquad" else "",
                    "cell": f"{method}-{m}", VERSION_COLUMN: SCHEMA_VERSION}
            rows.append({**base, "sample": 0, "phase": "init", "seconds": 1e-9 * m * m,
                         "work": 2.0 * m * m})
            t = 1e-9 * m ** seconds_exp[method] * factor
            for s, z in enumerate(rng.standard_normal(samples)):
                rows.append({**base, "sample": s, "phase": "iteration",
                             "seconds": t * math.exp(noise * z), "work": m ** work_exp[method]})
    for m in SYNTH_M if calib is not None else ():
        for s, z in enumerate(rng.standard_normal(samples)):
            rows.append({"machine": "synthetic", "method": "calib-gemv", "dtype": "float32",
                         "m": m, "n": 16, "d": 16, "L": 2, "c": 0.2, "seed": 0, "status": "ok",
                         "options": "", "sample": s, "phase": "kernel",
                         "cell": f"gemv-{m}", VERSION_COLUMN: SCHEMA_VERSION,
                         "seconds": 1e-10 * m * m * calib * math.exp(0.01 * z), "work": m * m})
    path.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(path / "runs.csv", index=False)
    fit_run(path, n_boot=200)
    return path


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    return _synthetic_run(tmp_path_factory.mktemp("check") / "baseline")


def _failed(results: list[GateResult]) -> list[str]:
    return [r.name for r in results if not r.passed]


def test_check_passes_a_healthy_run(tmp_path, baseline):
    run = _synthetic_run(tmp_path / "run", seed=1)
    results = run_check(run, baseline)
    assert results and not _failed(results), format_gates(results)
    kinds = {r.name.split(":")[0] for r in results}
    assert kinds == {"limit", "vs baseline", "factor"}


def test_quadratic_subquad_fails_the_scaling_gate(tmp_path, baseline):
    run = _synthetic_run(tmp_path / "run", {"subquad": 2.0}, {"subquad": 2.0}, seed=1)
    failed = _failed(run_check(run, baseline))
    assert any(n.startswith("limit: subquad") and "iteration work" in n for n in failed)
    assert any(n.startswith("limit: subquad") and "iteration seconds" in n for n in failed)


def test_fifteen_percent_slower_fails_the_factor_gate(tmp_path, baseline):
    run = _synthetic_run(tmp_path / "run", factor=1.15, seed=1)
    failed = _failed(run_check(run, baseline))
    assert failed and all(n.startswith("factor:") for n in failed)
    assert len(failed) == 2 * len(SYNTH_M)


@pytest.mark.parametrize(("factor", "noise"), [(1.05, 0.01), (1.0, 0.10), (1.15, 0.5)])
def test_slower_within_ratio_or_noise_passes(tmp_path, baseline, factor, noise):
    run = _synthetic_run(tmp_path / "run", factor=factor, noise=noise, seed=2)
    results = run_check(run, baseline)
    assert not [n for n in _failed(results) if n.startswith("factor:")], format_gates(results)


def test_exponent_rising_beyond_intervals_fails(tmp_path, baseline):
    run = _synthetic_run(tmp_path / "run", {"subquad": 1.85}, seed=1)  # still below 1.95
    results = run_check(run, baseline)
    failed = _failed(results)
    assert any(n.startswith("vs baseline: subquad") and "iteration seconds" in n
               for n in failed), format_gates(results)
    assert not [n for n in failed if n.startswith("limit:")]


def test_factor_gate_rule():
    base = np.linspace(1.0, 1.02, 9)
    slower, _, how = factor_gate(base * 1.15, base)
    assert slower and "rule Mann-Whitney" in how
    assert not factor_gate(base * 1.05, base)[0]
    # 5 vs 5 cannot reach p < 0.002 (min p = 1/252): decided by interval overlap, not passed
    slower, ratio, how = factor_gate(base[:5] * 1.5, base[:5])
    assert slower and ratio == pytest.approx(1.5) and "rule interval overlap" in how


def test_check_command_exit_codes(tmp_path, baseline, capsys):
    good = _synthetic_run(tmp_path / "good", seed=1)
    bad = _synthetic_run(tmp_path / "bad", factor=1.3, seed=1)
    assert main(["check", str(good), "--baseline", str(baseline)]) == 0
    assert "verdict" in capsys.readouterr().out
    assert main(["check", str(bad), "--baseline", str(baseline)]) == 1
    assert "FAIL" in capsys.readouterr().out
    assert main(["check", str(good), "--baseline", str(tmp_path / "nope")]) == 2
    assert "--baseline" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["check", str(tmp_path / "empty"), "--baseline", str(baseline)]) == 2
    assert "DIR" in capsys.readouterr().err


def test_custom_limits_file(tmp_path, baseline):
    toml = resources.files("subquad.analysis").joinpath("limits.toml").read_text()
    strict = tmp_path / "strict.toml"
    strict.write_text(toml.replace("max = 1.82", "max = 1.70"))
    results = run_check(baseline, baseline, strict)
    assert any(n.startswith("limit: subquad") and "iteration work" in n
               for n in _failed(results))


def test_factor_gate_discounts_a_uniform_machine_drift(tmp_path):
    import importlib.resources

    text = importlib.resources.files("subquad.analysis").joinpath("limits.toml").read_text()
    limits = tmp_path / "limits.toml"
    limits.write_text(text.replace('normalize_by = ""', 'normalize_by = "calib-gemv"'))
    base = _synthetic_run(tmp_path / "base", calib=1.0)
    drifted = _synthetic_run(tmp_path / "drift", factor=1.3, calib=1.3, seed=1)
    assert _failed(run_check(drifted, base))  # off by default: the raw slow-down fails
    results = run_check(drifted, base, limits)
    assert not _failed(results), format_gates(results)
    assert any(r.name.startswith("machine drift") and abs(r.value - 1.3) < 0.02
               for r in results)
    # the same slow-down with the machine's calibration kernel unchanged is a regression
    slower = _synthetic_run(tmp_path / "slower", factor=1.3, calib=1.0, seed=1)
    failed = _failed(run_check(slower, base, limits))
    assert len(failed) == 2 * len(SYNTH_M) and all(n.startswith("factor:") for n in failed)
