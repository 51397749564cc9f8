"""Dense trainers end to end: Gauss-Newton converges, GD descends, the JSON contract holds."""

import json
import subprocess
import sys

import numpy as np
import pytest

from subquad.cli import main
from subquad.model.train import TrainConfig, run_training

JSON_KEYS = {"method", "config", "loss", "active_fraction", "expected_active_fraction", "flips",
             "seconds", "work", "init_seconds", "init_work"}
PHASES = {"forward", "backward", "gram", "solve", "update", "fold"}


def test_cli_json_contract_and_gauss_newton_convergence():
    cmd = [sys.executable, "-m", "subquad", "train", "--method", "dense-gn", "--m", "1024",
           "--n", "8", "--d", "16", "--L", "2", "--iters", "10", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    res = json.loads(out.stdout)  # exactly one JSON object
    assert JSON_KEYS <= set(res)
    assert res["method"] == "dense-gn"
    assert len(res["loss"]) == 11
    assert res["loss"][-1] < 1e-8 * res["loss"][0]
    assert set(res["seconds"]) >= PHASES and set(res["work"]) >= PHASES
    assert all(len(v) == 10 for v in res["seconds"].values())
    assert len(res["active_fraction"]) == 11 and len(res["active_fraction"][0]) == 3
    assert len(res["flips"][1]) == 3
    assert res["config"]["m"] == 1024 and res["config"]["solver"] == "cholesky"
    # counted work of the dense forward: L n m^2 per iteration
    assert res["work"]["forward"][0] == 2 * 8 * 1024**2


@pytest.mark.parametrize("L", [2, 4])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_gauss_newton_reaches_tiny_loss(L, seed):
    res = run_training(TrainConfig(method="dense-gn", m=1024, n=8, d=16, L=L, iters=10,
                                   seed=seed))
    assert res["loss"][-1] < 1e-8 * res["loss"][0], res["loss"]
    q = res["expected_active_fraction"]
    for fr in res["active_fraction"]:
        assert all(0.85 * q < f < 1.15 * q for f in fr)


def test_gradient_descent_decreases_monotonically():
    res = run_training(TrainConfig(method="dense-gd", m=512, n=8, d=16, L=2, iters=15,
                                   lr=1e-3, seed=0))
    loss = np.array(res["loss"])
    assert np.all(np.diff(loss) < 0), loss
    assert loss[-1] < 0.9 * loss[0]


def test_fixed_threshold_singular_gram_is_a_clear_error(capsys):
    # seed 0 at this size leaves a sample with no active neuron in the last layer
    rc = main(["train", "--method", "dense-gn", "--m", "1024", "--n", "8", "--d", "16",
               "--L", "2", "--iters", "10", "--threshold", "fixed", "--seed", "0", "--json"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "singular" in err and "--threshold adaptive" in err
    assert "Traceback" not in err


def test_singular_gram_cli_has_no_traceback():
    cmd = [sys.executable, "-m", "subquad", "train", "--method", "dense-gn", "--m", "1024",
           "--n", "8", "--d", "16", "--L", "2", "--iters", "3", "--threshold", "fixed",
           "--seed", "0"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and "singular" in out.stderr


def test_readable_table_without_json(capsys):
    assert main(["train", "--method", "dense-gn", "--m", "256", "--n", "4", "--iters", "2"]) == 0
    out = capsys.readouterr().out
    assert "loss" in out and "forward" in out and "act0" in out


def test_digits_training_reduces_loss():
    res = run_training(TrainConfig(method="dense-gn", m=1024, n=32, d=64, L=2, iters=5,
                                   data="digits", seed=0))
    assert res["loss"][-1] < 1e-3 * res["loss"][0]
