"""Shared fixtures: small float64 networks and data for correctness tests; a Slurm cluster."""

from __future__ import annotations

import numpy as np
import pytest

from subquad.model.data import synthetic
from subquad.model.network import Network, NetworkSpec
from tests import slurm_cluster as _slurm


@pytest.fixture
def small_net():
    """Build a small float64 network and its data: ``small_net(m, n, d, L, threshold)``."""

    def build(m=48, n=3, d=5, L=2, threshold="adaptive", c=0.2, seed=0):
        spec = NetworkSpec(m=m, n=n, d=d, L=L, c=c, seed=seed, threshold=threshold)
        net = Network.init(spec)
        X, y = synthetic(n, d, seed)
        return net, X, y

    return build


def loss_of(net: Network, X: np.ndarray, y: np.ndarray) -> float:
    """The loss of the dense oracle on (X, y)."""
    st = net.forward_dense(net.input_layer(X))
    return net.loss(st.f, y)


@pytest.fixture(scope="session")
def slurm_cluster():
    """A one-node Slurm cluster (partition ``debug``, SLURM_CONF set) for the session; see
    tests/slurm_cluster.py for when it starts one, reuses one, skips or fails."""
    with _slurm.cluster() as info:
        yield info


@pytest.fixture(scope="module")
def emulated_cupy():
    """The test-only host stand-in for cupy (random thread order), removed after the module.

    Skips, saying why, where no C/C++ compiler exists to build the host kernels.
    """
    from subquad.model.kernels.emulation import fake_cupy, host  # noqa: PLC0415

    try:
        host.find_compiler()
    except host.HostCompilerMissing as exc:
        pytest.skip(str(exc))
    fake_cupy.install(schedule="random", seed=0)
    import cupy  # noqa: PLC0415

    yield cupy
    fake_cupy.uninstall()
