"""The dense oracle: gradients against finite differences, K = J J^T, and depth stability."""

import warnings

import numpy as np
import pytest

from subquad.model.network import Network, NetworkSpec
from subquad.model.sparsify import DepthInstabilityWarning

from .conftest import loss_of


@pytest.mark.parametrize("L", [1, 3])
@pytest.mark.parametrize("threshold", ["adaptive", "fixed"])
def test_backward_matches_finite_differences(small_net, L, threshold):
    net, X, y = small_net(m=48, n=3, d=5, L=L, threshold=threshold)
    st = net.forward_dense(net.input_layer(X))
    V = net.backward_dense(st)
    grads = net.grad_dense(st, V, st.f - y)
    rng = np.random.default_rng(1)
    eps = 1e-6
    for l, G in enumerate(grads):
        D = rng.standard_normal(G.shape)
        W0 = net.Wt[l].copy()
        net.Wt[l][:] = W0 + eps * D
        up = loss_of(net, X, y)
        net.Wt[l][:] = W0 - eps * D
        down = loss_of(net, X, y)
        net.Wt[l][:] = W0
        fd = (up - down) / (2 * eps)
        an = float(np.sum(G * D))
        assert abs(fd - an) <= 1e-6 * max(abs(an), 1e-12), (l, fd, an)


def test_gram_equals_explicit_jacobian_product(small_net):
    net, X, y = small_net(m=24, n=4, d=5, L=2)
    H0 = net.input_layer(X)
    st = net.forward_dense(H0)
    K = net.gram_dense(st, net.backward_dense(st))
    eps = 1e-6
    cols = []
    for Wt in net.Wt:  # J by central differences of f over every weight
        for idx in np.ndindex(Wt.shape):
            w = Wt[idx]
            Wt[idx] = w + eps
            fp = net.forward_dense(H0).f
            Wt[idx] = w - eps
            fm = net.forward_dense(H0).f
            Wt[idx] = w
            cols.append((fp - fm) / (2 * eps))
    J = np.stack(cols, axis=1)
    assert np.allclose(K, J @ J.T, rtol=1e-6, atol=1e-8 * np.abs(K).max())


def _activity(threshold, L, m=4096, n=32, seed=0):
    spec = NetworkSpec(m=m, n=n, d=16, L=L, c=0.2, seed=seed, threshold=threshold)
    net = Network.init(spec)
    from subquad.model.data import synthetic

    X, _ = synthetic(n, 16, seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        st = net.forward_dense(net.input_layer(X))
        from subquad.model.sparsify import check_activity

        for layer, H in enumerate(st.H):
            check_activity((H > 0).sum(axis=1), m, spec.q, layer, threshold)
    frac = [float((H > 0).mean()) for H in st.H]
    sq = [float(np.mean(np.sum(H * H, axis=1))) for H in st.H]
    return spec.q, frac, sq, caught


def test_fixed_threshold_two_layers_is_usable_on_average():
    q, frac, _, _ = _activity("fixed", L=2)
    for f in frac:
        assert abs(f / q - 1) < 0.25, frac


def test_adaptive_threshold_is_stable_through_six_layers():
    q, frac, sq, caught = _activity("adaptive", L=6)
    for f in frac:
        assert abs(f / q - 1) < 0.10, frac
    for s in sq:
        assert 0.7 <= s <= 1.4, sq
    assert not [w for w in caught if issubclass(w.category, DepthInstabilityWarning)]


def test_fixed_threshold_four_layers_warns_of_depth_instability():
    _, frac, sq, caught = _activity("fixed", L=4)
    msgs = [str(w.message) for w in caught if issubclass(w.category, DepthInstabilityWarning)]
    assert msgs, (frac, sq)
    assert any("unstable in depth" in m or "no active neuron" in m for m in msgs)


def test_init_is_seeded_and_counts_m2_work():
    spec = NetworkSpec(m=64, n=2, L=3, seed=5)
    a, b = Network.init(spec), Network.init(spec)
    for wa, wb in zip(a.Wt, b.Wt):
        assert np.array_equal(wa, wb)
    assert a.init_work["madds"] == 3 * 64 * 64
    assert a.init_seconds > 0
