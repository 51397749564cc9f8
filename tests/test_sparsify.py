"""The sparsifier's constants against their definitions (numerical integrals), and c's range."""

import math

import numpy as np
import pytest
from scipy import integrate, stats

from subquad.errors import ConfigError
from subquad.model.sparsify import beta, expected_active, kappa, tail, threshold, weight_std


def test_beta_matches_paper_choice():
    # the paper's b = sqrt(0.4 ln m) is c = 0.2
    assert beta(4096, 0.2) == pytest.approx(math.sqrt(0.4 * math.log(4096)))


@pytest.mark.parametrize("b", [0.5, 1.7, 2.6])
def test_kappa_is_second_moment_of_shifted_relu(b):
    val, _ = integrate.quad(lambda z: (z - b) ** 2 * stats.norm.pdf(z), b, np.inf)
    assert kappa(b) == pytest.approx(val, rel=1e-9)
    assert tail(b) == pytest.approx(stats.norm.sf(b), rel=1e-12)


def test_expected_active_table_of_algorithm_md():
    # ALGORITHM.md section 1: s at c = 0.2
    for m, s in [(1024, 49), (4096, 140), (16384, 400), (32768, 679)]:
        assert expected_active(m, 0.2) == pytest.approx(s, abs=1.0)


def test_weight_std_gives_unit_second_moment():
    m, b = 4096, beta(4096, 0.2)
    s_w = weight_std(m, b)
    assert m * kappa(b) * s_w**2 == pytest.approx(1.0)


@pytest.mark.parametrize("c", [0.0, -0.1, 0.51, 1.0, float("nan")])
def test_c_out_of_range_is_rejected(c):
    with pytest.raises(ConfigError, match=r"^c: .*\(0, 0.5\]"):
        beta(1024, c)


def test_thresholds():
    norms = np.array([1.0, 2.0])
    assert np.allclose(threshold(norms, 2.0, 0.5, "adaptive"), [1.0, 2.0])
    assert np.allclose(threshold(norms, 2.0, 0.5, "fixed"), [1.0, 1.0])
    with pytest.raises(ConfigError, match="threshold"):
        threshold(norms, 2.0, 0.5, "other")
