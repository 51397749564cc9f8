"""The shifted-ReLU sparsifier: beta(m, c), q = Q(beta), kappa(beta), thresholds b, init scale.

ALGORITHM.md section 1: sigma(z) = max(z - b, 0) with b = beta * s_pre, beta = sqrt(2 c ln m);
weights ~ N(0, s_w^2) with s_w = 1/sqrt(m kappa) keep E||h_l||^2 = 1 at every layer.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.special import ndtr

from subquad.errors import ConfigError

THRESHOLDS = ("adaptive", "fixed")
#: a layer whose active fraction passes this multiple of Q(beta) triggers the depth warning
ACTIVITY_WARN_RATIO = 1.5


class DepthInstabilityWarning(UserWarning):
    """The fixed threshold let a layer's activity drift away from Q(beta) (ALGORITHM.md sec. 1)."""


def check_c(c: float) -> float:
    """Validate the sparsity exponent: c must lie in (0, 0.5]."""
    if not (isinstance(c, (int, float)) and math.isfinite(c) and 0.0 < c <= 0.5):
        raise ConfigError("c", f"sparsity exponent must lie in (0, 0.5], got {c!r}")
    return float(c)


def beta(m: int, c: float) -> float:
    """beta(m, c) = sqrt(2 c ln m): the threshold in units of the pre-activation std."""
    return math.sqrt(2.0 * check_c(c) * math.log(m))


def phi(x: float) -> float:
    """Standard normal density."""
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def tail(b: float) -> float:
    """q = Q(beta): the probability that a neuron fires (Gaussian upper tail)."""
    return float(ndtr(-b))


def kappa(b: float) -> float:
    """kappa(beta) = E[(Z - beta)_+^2] = (1 + beta^2) Q(beta) - beta phi(beta)."""
    return (1.0 + b * b) * tail(b) - b * phi(b)


def weight_std(m: int, b: float) -> float:
    """s_w = 1/sqrt(m kappa): the init scale of A and W_l that keeps E||h_l||^2 = 1."""
    return 1.0 / math.sqrt(m * kappa(b))


def expected_active(m: int, c: float) -> float:
    """s = m Q(beta): the expected number of active neurons per sample and layer."""
    return m * tail(beta(m, c))


def threshold(norms: np.ndarray, b: float, s_w: float, mode: str, xp=np) -> np.ndarray:
    """Per-sample thresholds b_{i,l}: adaptive beta s_w ||h_{i,l-1}||, or fixed beta s_w."""
    if mode == "adaptive":
        return (b * s_w) * norms
    if mode == "fixed":
        return xp.full_like(norms, b * s_w)
    raise ConfigError("threshold", f"unknown threshold {mode!r}; accepted: {', '.join(THRESHOLDS)}")


def activity_advice(mode: str, m: int, q: float) -> str:
    """What to do about a drifting or dead layer, for the threshold actually in use."""
    if mode == "fixed":
        return "the fixed threshold is unstable in depth; use --threshold adaptive (the default)"
    return (f"under the adaptive threshold only s = m Q(beta) = {m * q:.3g} neurons per sample "
            "are expected active, so the fraction is noisy; raise --m or lower --c to make s "
            "larger")


def check_activity(counts: np.ndarray, m: int, q: float, layer: int, mode: str) -> None:
    """Warn when a layer's activity drifts (fixed threshold: depth instability) or a sample dies.

    ``counts`` holds the number of active neurons of each sample in this layer.
    """
    frac = float(np.mean(counts)) / m
    silent = int(np.sum(np.asarray(counts) == 0))
    problems = []
    if frac > ACTIVITY_WARN_RATIO * q:
        problems.append(f"active fraction {frac:.4g} is {frac / q:.2f}x Q(beta) = {q:.4g} "
                        f"(threshold={mode})")
    if silent:
        problems.append(f"{silent} sample(s) have no active neuron (threshold={mode}); their "
                        "rows of K vanish and Gauss-Newton cannot step")
    for problem in problems:
        warnings.warn(f"layer {layer}: {problem}; {activity_advice(mode, m, q)}",
                      DepthInstabilityWarning, stacklevel=3)
