"""Data sets: the bundled scikit-learn sets (shape, unit norm, labels, seeding, d checks) and
the clustered synthetic option that makes K ill-conditioned."""

import numpy as np
import pytest

from subquad.cli import main
from subquad.errors import ConfigError
from subquad.model.data import REAL_SETS, load
from subquad.model.network import Network, NetworkSpec


@pytest.mark.parametrize("name", sorted(REAL_SETS))
def test_real_set_shape_norm_labels(name):
    d = REAL_SETS[name].d
    X, y = load(name, 100, d, seed=3)
    assert X.shape == (100, d) and y.shape == (100,)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-12)
    if REAL_SETS[name].positive is None:  # regression: standardised over the whole set
        assert len(np.unique(y)) > 50 and abs(y.mean()) < 0.5
    else:  # one class against the rest, both present
        assert set(np.unique(y)) == {-1.0, 1.0}
    X2, y2 = load(name, 100, d, seed=3)
    X3, _ = load(name, 100, d, seed=4)
    assert np.array_equal(X, X2) and np.array_equal(y, y2)
    assert not np.array_equal(X, X3)


def test_labels_follow_the_documented_classes():
    _, y = load("iris", 150, 4, seed=0)  # all of iris: 50 versicolor against 100
    assert (y == 1).sum() == 50
    _, y = load("wine", 178, 13, seed=0)  # cultivar 0 has 59 of the 178 wines
    assert (y == 1).sum() == 59
    _, y = load("breast-cancer", 569, 30, seed=0)  # 357 benign, 212 malignant
    assert (y == 1).sum() == 357


@pytest.mark.parametrize("name", sorted(REAL_SETS))
def test_wrong_d_exits_2_naming_the_accepted_d(name, capsys):
    d = REAL_SETS[name].d
    rc = main(["train", "--method", "dense-gn", "--m", "64", "--n", "4", "--d", str(d + 1),
               "--iters", "1", "--data", name])
    err = capsys.readouterr().err
    assert rc == 2 and f"d: {name} has d = {d} features; pass --d {d}" in err


def test_too_many_samples_is_an_error():
    with pytest.raises(ConfigError, match="^n: iris has 150 samples"):
        load("iris", 151, 4, seed=0)


def _cond_K(X: np.ndarray) -> float:
    net = Network.init(NetworkSpec(m=512, n=X.shape[0], d=X.shape[1], L=2, c=0.2, seed=0))
    st = net.forward_dense(net.input_layer(X))
    return float(np.linalg.cond(net.gram_dense(st, net.backward_dense(st))))


def test_clustered_data_makes_K_ill_conditioned():
    Xs, _ = load("synthetic", 32, 16, seed=0)
    Xc, yc = load("clustered", 32, 16, seed=0)
    np.testing.assert_allclose(np.linalg.norm(Xc, axis=1), 1.0, rtol=1e-12)
    assert np.all(np.isfinite(yc))
    assert _cond_K(Xc) > 100 * _cond_K(Xs)
