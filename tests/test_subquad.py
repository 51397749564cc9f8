"""The subquadratic trainer computes the same mathematics as dense Gauss-Newton."""

import numpy as np
import pytest

from subquad.model.cg import preconditioned_cg, sketch_preconditioner
from subquad.model.sketch import default_sketch_size, tensorsketch, tensorsrht
from subquad.model.train import TrainConfig, build_trainer, run_training

BASE = dict(m=1024, n=8, d=16, L=2, c=0.2, seed=3, dtype="float64", lr=0.5)


def _train(method, steps=5, **opts):
    tr = build_trainer(TrainConfig(method=method, **BASE, **opts))
    losses = [tr.start()]
    losses += [tr.step().loss for _ in range(steps)]
    return tr, np.array(losses)


def _weights(tr):
    lazy = getattr(tr.kernels, "lazy", [])
    if lazy:
        return [lr.dense() for lr in lazy]
    return [w.copy() for w in tr.net.Wt]


@pytest.fixture(scope="module")
def dense_run():
    return _train("dense-gn")


@pytest.mark.parametrize("update", ["scatter", "rowdense", "lazy", "fused"])
def test_same_iterates_as_dense_gauss_newton(dense_run, update):
    dense, loss_d = dense_run
    opts = {"solver": "cholesky", "update": update}
    if update == "lazy":
        opts["rank_max"] = 16  # 8 columns per step: folds after steps 2 and 4
    tr, loss_s = _train("subquad", **opts)
    assert loss_d[-1] < 0.01 * loss_d[0]  # the trajectory is not trivial
    np.testing.assert_allclose(loss_s, loss_d, rtol=1e-8)
    for ws, wd in zip(_weights(tr), _weights(dense)):
        np.testing.assert_allclose(ws, wd, rtol=1e-8, atol=1e-8 * np.abs(wd).max())
    if update == "lazy":
        assert tr.kernels.folds >= 2


@pytest.mark.parametrize("sketch", [tensorsketch, tensorsrht])
def test_pcg_matches_cholesky_in_few_iterations(sketch):
    tr = build_trainer(TrainConfig(method="subquad", **BASE))
    tr.start()
    k = tr.kernels
    st = tr.state
    V, _ = k.backward(st)
    K, _ = k.gram(st, V)
    r = k.outputs(st) - tr._y
    c_exact = np.linalg.solve(K, r)
    H_list, V_list = k.sketch_inputs(st, V)
    B = sketch(H_list, V_list, default_sketch_size(8), 0)
    c, iters, converged, _ = preconditioned_cg(lambda p: K @ p, r, sketch_preconditioner(B, 0.0),
                                               1e-10, 100)
    assert converged and iters <= 20, iters
    # relative residual 1e-10 bounds the solution error by cond(K) * 1e-10
    np.testing.assert_allclose(c, c_exact, rtol=1e-6, atol=1e-9 * np.abs(c_exact).max())


@pytest.mark.parametrize("solver", ["pcg-tensorsketch", "pcg-tensorsrht"])
def test_pcg_solver_in_training_tracks_cholesky(dense_run, solver):
    _, loss_d = dense_run
    tr, loss_s = _train("subquad", solver=solver, update="scatter")
    np.testing.assert_allclose(loss_s, loss_d, rtol=1e-5)


@pytest.mark.parametrize("update", ["auto", "fused"])
def test_digits_training_keeps_sparsity(update):
    common = dict(m=1024, n=64, d=64, L=2, c=0.2, iters=4, data="digits", seed=0)
    dense = run_training(TrainConfig(method="dense-gn", **common))
    sub = run_training(TrainConfig(method="subquad", update=update, **common))
    assert sub["loss"][-1] < 1e-3 * sub["loss"][0]
    np.testing.assert_allclose(sub["loss"], dense["loss"], rtol=1e-6, atol=1e-12)
    q = sub["expected_active_fraction"]
    for per_layer in sub["active_fraction"]:
        assert all(q / 1.5 <= f <= 1.5 * q for f in per_layer), per_layer


def test_adaptive_backward_term_matches_dense_oracle():
    tr = build_trainer(TrainConfig(method="subquad", m=512, n=4, d=8, L=3, seed=1))
    tr.start()
    V, _ = tr.kernels.backward(tr.state)
    st = tr.net.forward_dense(tr.net.input_layer(tr.X))
    Vd = tr.net.backward_dense(st)
    for l in range(1, 4):
        np.testing.assert_allclose(V[l].to_dense(), Vd[l], rtol=1e-10, atol=1e-12)


def test_json_reports_chosen_options():
    res = run_training(TrainConfig(method="subquad", m=1024, n=4, iters=1))
    assert res["config"]["update"] in ("scatter", "rowdense")
    assert res["config"]["solver"] == "cholesky"
    assert res["work"]["forward"][0] > 0 and res["work"]["fold"][0] == 0


def test_lazy_fold_period_matches_observed_folds():
    tr = build_trainer(TrainConfig(method="subquad", m=512, n=4, update="lazy", rank_max=12))
    tr.start()
    period = tr.kernels.fold_period(4)
    assert period == 3
    folds = [tr.step().work["fold"] > 0 for _ in range(4 * period)]
    # after the first step (the sweep's warm-up), any `period` consecutive steps fold once
    for i in range(1, len(folds) - period + 1):
        assert sum(folds[i:i + period]) == 1, folds


@pytest.mark.parametrize("forward_kernel", ["per-example", "input-major"])
@pytest.mark.parametrize(("L", "n", "c"), [(1, 8, 0.2), (2, 4, 0.3), (3, 8, 0.2), (3, 6, 0.3)])
def test_fused_mode_equals_dense_gauss_newton(L, n, c, forward_kernel):
    """The fused update and the top layer's backward from the forward's dots (corrected for
    flipped neurons, which this step size produces) give dense-gn's iterates in float64."""
    kw = dict(m=1024, n=n, d=16, L=L, c=c, seed=2, dtype="float64", lr=0.7, solver="cholesky")
    dense = build_trainer(TrainConfig(method="dense-gn", **kw))
    fused = build_trainer(TrainConfig(method="subquad", update="fused",
                                      forward_kernel=forward_kernel, **kw))
    loss_d, loss_f = [dense.start()], [fused.start()]
    top_flips = 0
    for _ in range(5):
        loss_d.append(dense.step().loss)
        step = fused.step()
        loss_f.append(step.loss)
        top_flips += step.flips[L]
    np.testing.assert_allclose(loss_f, loss_d, rtol=1e-8)
    for ws, wd in zip(_weights(fused), _weights(dense)):
        np.testing.assert_allclose(ws, wd, rtol=1e-8, atol=1e-8 * np.abs(wd).max())
    assert loss_d[-1] < 0.1 * loss_d[0]
    if L >= 2:
        assert top_flips > 0  # the flip correction of the top backward ran
