"""The L-layer network of ALGORITHM.md section 1, its depth-stable init, and the dense oracle.

Weights are stored transposed: ``Wt[l-1]`` is W_l^T (row j = column j of W_l), C-contiguous,
so the sparse forward streams whole rows and the dense forward is H_{l-1} @ W_l^T.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from subquad.errors import ConfigError, check_choice
from subquad.memory import available_bytes, fmt_bytes
from subquad.model.backend import BACKENDS, Backend, get_backend
from subquad.model.sparsify import THRESHOLDS, beta, check_c, tail, threshold, weight_std
from subquad.vocabulary import DTYPES

#: largest width accepted (the m x m weights of one layer would need 2^62 bytes beyond it)
M_MAX = 1 << 20


def _check_int(name: str, value: Any, lo: int = 1, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(name, f"must be an integer, got {value!r}")
    v = int(value)
    if v < lo or (hi is not None and v > hi):
        rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ConfigError(name, f"must be an integer in {rng}, got {v}")
    return v


@dataclass(frozen=True)
class NetworkSpec:
    """Everything that fixes a network: width m, samples n, input dim d, depth L, sparsity c."""

    m: int
    n: int
    d: int = 16
    L: int = 2
    c: float = 0.2
    seed: int = 0
    dtype: str = "float64"
    backend: str = "numpy"
    threshold: str = "adaptive"

    def validate(self, extra_bytes: float = 0.0) -> NetworkSpec:
        """Check every parameter and the memory estimate before anything is allocated."""
        for name, lo, hi in (("m", 1, M_MAX), ("n", 1, None), ("d", 1, None), ("L", 1, 64),
                             ("seed", 0, 2**63 - 1)):
            _check_int(name, getattr(self, name), lo, hi)
        check_c(self.c)
        if self.m < 8:
            raise ConfigError("m", f"width must be at least 8 for a sparse layer, got {self.m}")
        if self.n > self.m:
            raise ConfigError("n", f"must not exceed the width m = {self.m} (over-parametrised "
                              f"regime), got n = {self.n}")
        check_choice("dtype", self.dtype, DTYPES)
        check_choice("backend", self.backend, BACKENDS)
        check_choice("threshold", self.threshold, THRESHOLDS)
        if self.backend == "cupy":
            get_backend("cupy")  # fails early, with a clear message, without a usable GPU
        need = self.weight_bytes() + extra_bytes
        have = available_bytes(self.backend)
        if need > 0.9 * have:  # what would fit: weights grow as L m^2 (itemsize)
            fit_m = int(self.m * math.sqrt(0.9 * have / need)) // 8 * 8
            fit_l = int(self.L * 0.9 * have / need)
            advice = [f"m <= {fit_m}"] if fit_m >= 8 else []
            advice += [f"L <= {fit_l}"] if fit_l >= 1 else []
            advice += ["float32 (half the bytes)"] if self.dtype == "float64" else []
            raise ConfigError(
                "m", f"m = {self.m}, L = {self.L}, n = {self.n} ({self.dtype}) needs about "
                f"{fmt_bytes(need)} but only {fmt_bytes(have)} is available on {self.backend}; "
                f"what fits: {' or '.join(advice) or 'a machine with more memory'}")
        return self

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize

    def weight_bytes(self) -> float:
        """Bytes of W_1..W_L, A and a."""
        return float(self.itemsize) * (self.L * self.m * self.m + self.m * self.d + self.m)

    @property
    def beta(self) -> float:
        return beta(self.m, self.c)

    @property
    def q(self) -> float:
        """Q(beta): the expected active fraction of every layer."""
        return tail(self.beta)

    @property
    def s_w(self) -> float:
        """The weight standard deviation 1/sqrt(m kappa)."""
        return weight_std(self.m, self.beta)


@dataclass
class DenseState:
    """Dense activations of one forward pass: H[l] = h_{.,l} (n x m) for l = 0..L."""

    H: list
    norms: list  # ||h_{i,l}|| per layer, (n,)
    f: Any  # outputs (n,)


@dataclass
class Network:
    """A, W_1..W_L (stored as W_l^T), a, and the sparsifier constants of ``spec``."""

    spec: NetworkSpec
    be: Backend
    A: Any
    Wt: list
    a: Any
    init_seconds: float = 0.0
    init_work: dict = field(default_factory=dict)

    @property
    def xp(self):
        return self.be.xp

    @property
    def dtype(self):
        return np.dtype(self.spec.dtype)

    @classmethod
    def init(cls, spec: NetworkSpec) -> Network:
        """Draw A, W_l ~ N(0, s_w^2) and a ~ N(0, 1); the W draw is the timed ``init`` phase.

        Weights are drawn on the host (numpy's generator) so that both backends get the same
        network for a seed; on the GPU the copy is part of the init phase.
        """
        spec.validate()
        be = get_backend(spec.backend)
        dt = np.dtype(spec.dtype)
        ss = np.random.SeedSequence(spec.seed)
        s_a, s_w_seed, s_out = ss.spawn(3)
        s_w = spec.s_w
        A = be.asarray(np.random.default_rng(s_a).standard_normal((spec.m, spec.d)) * s_w, dtype=dt)
        a = be.asarray(np.random.default_rng(s_out).standard_normal(spec.m), dtype=dt)
        rng = np.random.default_rng(s_w_seed)
        Wt = []
        scale = dt.type(s_w)
        with be.timer() as t:
            for _ in range(spec.L):
                w = rng.standard_normal((spec.m, spec.m), dtype=dt)
                w *= scale
                Wt.append(be.asarray(w))
        m2 = float(spec.L) * spec.m * spec.m
        return cls(spec, be, A, Wt, a, init_seconds=t[0],
                   init_work={"madds": m2, "bytes": m2 * dt.itemsize})

    # ---- the dense oracle -------------------------------------------------------------

    def threshold(self, norms):
        """b_{i,l} for a layer whose input rows have norms ``norms``."""
        sp = self.spec
        return threshold(norms, sp.beta, sp.s_w, sp.threshold, xp=self.xp).astype(self.dtype)

    def input_layer(self, X) -> Any:
        """h_{i,0} = sigma(A x_i) (n x m); A is fixed, so trainers compute it once."""
        xp = self.xp
        X = xp.asarray(X, dtype=self.dtype)
        G = X @ self.A.T
        b = self.threshold(xp.linalg.norm(X, axis=1))
        return xp.maximum(G - b[:, None], 0)

    def forward_dense(self, H0) -> DenseState:
        """g_l = W_l h_{l-1}, h_l = sigma(g_l - b_l) for l = 1..L, f = a . h_L (all dense)."""
        xp = self.xp
        H = [H0]
        norms = [xp.linalg.norm(H0, axis=1)]
        for Wt in self.Wt:
            G = H[-1] @ Wt
            b = self.threshold(norms[-1])
            H.append(xp.maximum(G - b[:, None], 0))
            norms.append(xp.linalg.norm(H[-1], axis=1))
        return DenseState(H, norms, H[-1] @ self.a)

    def backward_dense(self, st: DenseState) -> list:
        """v_{i,l} for l = 1..L (index l; index 0 is None), adaptive rank-one term included."""
        xp = self.xp
        sp = self.spec
        L = sp.L
        V = [None] * (L + 1)
        V[L] = (st.H[L] > 0) * self.a[None, :]
        coef = self.dtype.type(sp.beta * sp.s_w)
        for l in range(L - 1, 0, -1):
            U = V[l + 1] @ self.Wt[l].T  # u_{i,l} = W_{l+1}^T v_{i,l+1}
            if sp.threshold == "adaptive":
                safe = xp.where(st.norms[l] > 0, st.norms[l], 1)
                U = U - (coef * V[l + 1].sum(axis=1) / safe)[:, None] * st.H[l]
            V[l] = (st.H[l] > 0) * U
        return V

    def gram_dense(self, st: DenseState, V: list):
        """K = sum_l (H_{l-1} H_{l-1}^T) o (V_l V_l^T)  (n x n)."""
        K = None
        for l in range(1, self.spec.L + 1):
            term = (st.H[l - 1] @ st.H[l - 1].T) * (V[l] @ V[l].T)
            K = term if K is None else K + term
        return K

    def grad_dense(self, st: DenseState, V: list, r) -> list:
        """d loss / d W_l^T = sum_i r_i h_{i,l-1} v_{i,l}^T for l = 1..L (transposed layout)."""
        return [st.H[l - 1].T @ (r[:, None] * V[l]) for l in range(1, self.spec.L + 1)]

    def loss(self, f, y) -> float:
        """1/2 sum_i (f_i - y_i)^2."""
        r = f - y
        return 0.5 * float(self.be.to_host(r @ r))


def memory_estimate(spec: NetworkSpec, dense: bool, rank_max: int = 0) -> float:
    """Bytes a trainer needs beyond the weights: dense rank-n updates build an m x m product,
    the lazy structure keeps U and V (m x r_max per layer)."""
    b = spec.itemsize
    act = 3.0 * (spec.L + 1) * spec.n * spec.m * b
    if dense:
        return act + float(spec.m) * spec.m * b
    return act + 2.0 * spec.L * spec.m * max(rank_max, 0) * b


def finite_check(name: str, arr) -> None:
    """Reject non-finite input data early, naming the parameter."""
    a = np.asarray(arr)
    if not np.all(np.isfinite(a)):
        bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        raise ConfigError(name, f"contains {bad} non-finite value(s) (NaN or inf); "
                          "all entries must be finite")


