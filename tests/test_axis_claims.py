"""Verdicts of the axis claims (depth, solver, n/d) on small hand-made tables."""

from pathlib import Path

import pandas as pd

from subquad.analysis.claims.axes import FAMILY, depth_claims, n_d_claims, solver_claims
from subquad.analysis.claims.engine import evaluate
from subquad.analysis.limits import load_limits
from subquad.analysis.rundata import RunData
from subquad.vocabulary import REJECTED, SUPPORTED

LIMITS = load_limits()


def _runs(rows):
    base = {"method": "subquad", "options": "solver=cholesky;update=auto;rank_max=0",
            "threshold": "adaptive", "status": "ok", "data": "synthetic", "cg_iters": None}
    return pd.DataFrame([{**base, **r} for r in rows])


def _verdicts(claims, word):
    return [c.verdict for c in claims if word in c.claim]


def test_depth_cost_linear_vs_quadratic_and_activity():
    lin = _runs({"L": L, "phase": "iteration", "work": 10.0 * L, "seconds": 1e-3 * L,
                 "sample": s} for L in range(1, 9) for s in range(3))
    quad = lin.assign(work=lin["work"] * lin["L"], threshold="fixed")
    train = pd.DataFrame([{"method": "subquad", "options": "", "threshold": th, "L": L,
                           "layer": layer, "iteration": it, "loss": 10.0 ** -(6 * it),
                           "active_fraction": 0.03 * (ratio if layer else 1.0),
                           "expected_active_fraction": 0.03}
                          for th, ratio in (("adaptive", 1.2), ("fixed", 2.0))
                          for L in (1, 2) for layer in range(L + 1) for it in (0, 1, 2)])
    claims = depth_claims(pd.concat([lin, quad]), train, LIMITS)
    work = {c.claim.split("[")[1]: c.verdict for c in claims if "work ~ L^1" in c.claim}
    assert work == {"subquad (cholesky, adaptive threshold)]": SUPPORTED,
                    "subquad (cholesky, fixed threshold)]": REJECTED}
    assert _verdicts(claims, "active fraction") == [SUPPORTED, REJECTED]
    assert _verdicts(claims, "converges") == [SUPPORTED, SUPPORTED]


def test_solver_crossover_and_flat_iterations():
    rows = []
    for n, chol, pcg in ((64, 1.0, 3.0), (128, 4.0, 5.0), (256, 30.0, 8.0), (512, 200.0, 20.0)):
        for s, jitter in enumerate((0.99, 1.0, 1.01)):
            rows.append({"n": n, "phase": "solve", "seconds": chol * jitter, "sample": s})
            rows.append({"n": n, "phase": "solve", "seconds": pcg * jitter, "sample": s,
                         "options": "solver=pcg-tensorsketch;update=auto;rank_max=0",
                         "cg_iters": 20.0 + s})
    claims = solver_claims(_runs(rows), None, LIMITS)
    star = [c for c in claims if "below Cholesky" in c.claim]
    assert star[0].verdict == SUPPORTED and "n* = 256" in star[0].measured
    assert _verdicts(claims, "flat in n") == [SUPPORTED]


def test_n_and_d_models():
    fits = pd.DataFrame([
        {"fit": "slope", "axis": "n", "quantity": "work", "method": "subquad", "phase": "gram",
         "options": "solver=cholesky", "context": "m=4096", "fit_range": "n=4..256",
         "n_points": 7, "exponent": 2.0, "ci_low": 1.98, "ci_high": 2.02},
        {"fit": "slope", "axis": "n", "quantity": "work", "method": "subquad", "phase": "solve",
         "options": "solver=cholesky", "context": "m=4096", "fit_range": "n=4..256",
         "n_points": 7, "exponent": 2.0, "ci_low": 1.98, "ci_high": 2.02},
        {"fit": "joint", "axis": "n", "quantity": "work", "method": "subquad", "phase": "solve",
         "options": "solver=cholesky", "context": "L=2", "n_points": 21,
         "fit_range": "m=256..16384;n=4..64;d=4..64", "exponent": 2.7, "ci_low": 2.7,
         "ci_high": 2.7},
        {"fit": "slope", "axis": "d", "quantity": "seconds", "method": "dense-gn",
         "phase": "iteration", "options": "", "context": "m=4096", "fit_range": "d=4..512",
         "n_points": 8, "exponent": 0.01, "ci_low": -0.02, "ci_high": 0.04}])
    got = {c.claim.split(" [")[0]: (c.predicted, c.verdict) for c in n_d_claims(fits, LIMITS)}
    assert got["gram work ~ n^2"] == ("2", SUPPORTED)
    assert got["solve work ~ n^2.8"] == ("2.8", REJECTED)  # Cholesky: n^3/3 + 2 n^2 on 4..256
    assert got["iteration seconds ~ d^0"] == ("0", SUPPORTED)
    assert got["solve work ~ n^2.71"] == ("2.71", SUPPORTED)  # joint: n = 4..64, ratio 2
    gram = next(c for c in n_d_claims(fits, LIMITS) if c.claim.startswith("gram work"))
    assert gram.interval == "[1.980, 2.020]" and "inside 2 +- 0.15" in gram.reason


def test_no_tables_no_claims():
    assert evaluate(RunData(Path(".")), [FAMILY])[1] == []
