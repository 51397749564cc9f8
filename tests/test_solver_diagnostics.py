"""cond(K) and the preconditioned condition number reported by the solvers (untimed steps)."""

import numpy as np
import pytest

from subquad.model.solve import condition_numbers
from subquad.model.train import TrainConfig, build_trainer


def test_condition_numbers_of_an_exact_preconditioner():
    rng = np.random.default_rng(0)
    G = rng.standard_normal((6, 6))
    A = G @ G.T + 0.1 * np.eye(6)
    out = condition_numbers(A, np.linalg.cholesky(A).T)  # B^T B = A: a perfect sketch
    assert out["cond_K"] == pytest.approx(np.linalg.cond(A), rel=1e-8)
    assert out["cond_preconditioned"] == pytest.approx(1.0, abs=1e-8)
    assert "cond_preconditioned" not in condition_numbers(A)


@pytest.mark.parametrize("solver", ["cholesky", "cg", "pcg-tensorsketch"])
def test_diagnose_reports_conditioning_only_when_asked(solver):
    iterative = {} if solver == "cholesky" else {"cg_maxiter": 2000}
    tr = build_trainer(TrainConfig(method="subquad", m=512, n=16, L=2, data="clustered",
                                   solver=solver, **iterative))
    tr.start()
    assert "cond_K" not in tr.step().info
    tr.solver.diagnose = True
    info = tr.step().info
    assert info["cond_K"] > 100  # clustered inputs: ill-conditioned K
    if solver == "cg":
        assert info["cond_preconditioned"] == info["cond_K"]
    elif solver.startswith("pcg"):  # the sketch preconditioner removes most of it
        assert 1 <= info["cond_preconditioned"] < info["cond_K"] / 10
