"""The one iteration skeleton every trainer shares: named phases, counted work, flips, activity.

An iteration is backward -> gram -> solve -> fold -> update -> forward; the forward at its end
gives the loss after the step (the loss before the first step comes from ``start``). Trainers
differ only in their kernels (dense or sparse) and their solver.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from subquad.errors import DivergenceError, SingularGramError
from subquad.model.network import Network
from subquad.model.solve import Solver
from subquad.model.sparsify import activity_advice, check_activity
from subquad.vocabulary import ITERATION_PHASES as PHASES

#: bytes one random element access moves (x86 and the GPUs the suite targets)
CACHE_LINE = 64


@dataclass
class Work:
    """Counted work of one phase, with what the machine model needs to turn it into seconds.

    ``madds`` multiply-adds performed; ``bytes`` bytes of weights read as elements;
    ``line_bytes`` the same accesses counted in whole cache lines; ``working_set`` S_p, the
    bytes the phase's accesses range over (which cache level serves them); ``access`` one of
    ``ACCESS_KINDS``; ``shape`` "a x b x c" of the GEMM (access gemm); ``calls`` library or
    kernel calls (each pays the per-call overhead o_p).
    """

    madds: float = 0.0
    bytes: float = 0.0
    line_bytes: float = 0.0
    working_set: float = 0.0
    access: str = "compute"
    shape: str = ""
    calls: float = 0.0

    def __add__(self, other: Work) -> Work:
        """Sum of two parts of one phase; the larger working set and the memory-bound kind win."""
        rank = {k: i for i, k in enumerate(("compute", "gemm", "stream", "random"))}
        kind = max(self.access, other.access, key=lambda a: rank.get(a, 0))
        return Work(self.madds + other.madds, self.bytes + other.bytes,
                    self.line_bytes + other.line_bytes,
                    max(self.working_set, other.working_set), kind,
                    self.shape or other.shape, self.calls + other.calls)

    def model_fields(self) -> dict:
        """The per-phase model inputs (runs.csv columns ``line_bytes`` .. ``calls``)."""
        return {"line_bytes": self.line_bytes, "working_set": self.working_set,
                "access": self.access, "shape": self.shape, "calls": self.calls}


def lines_touched(cols: Any, row_bytes: float) -> Any:
    """Expected distinct cache lines that ``cols`` sorted random columns hit in one row.

    A row of ``row_bytes`` spans R = ceil(row_bytes / 64) lines; k distinct random columns
    land in R (1 - (1 - 1/R)^k) distinct lines (k when they are far apart, R when dense).
    """
    R = max(1.0, math.ceil(row_bytes / CACHE_LINE))
    return R * (1.0 - (1.0 - 1.0 / R) ** np.asarray(cols, dtype=float))


class Kernels(Protocol):
    """What a trainer family provides; ``state`` is whatever its forward produces."""

    name: str

    def setup(self, net: Network, H0: Any) -> None: ...
    def forward(self) -> tuple[Any, Work]: ...
    def outputs(self, state: Any) -> Any: ...
    def backward(self, state: Any) -> tuple[Any, Work]: ...
    def gram(self, state: Any, V: Any) -> tuple[Any, Work]: ...
    def sketch_inputs(self, state: Any, V: Any) -> tuple[list, list]: ...
    def fold(self, n_new: int) -> Work: ...
    def update(self, state: Any, V: Any, coef: Any) -> Work: ...
    def active_counts(self, state: Any) -> list[np.ndarray]: ...
    def flips(self, old: Any, new: Any) -> list[int]: ...
    def describe(self) -> dict: ...


@dataclass
class Step:
    """What one iteration measured."""

    loss: float
    seconds: dict[str, float]
    work: dict[str, float]
    bytes: dict[str, float]
    active_fraction: list[float]
    flips: list[int]
    info: dict = field(default_factory=dict)
    model: dict[str, dict] = field(default_factory=dict)


@dataclass
class Trainer:
    """Gauss-Newton (or GD) on ``net`` with pluggable kernels and solver.

    The step is W_l <- W_l - eta sum_i c_i v_{i,l} h_{i,l-1}^T with (K + mu I) c = r.
    """

    net: Network
    X: np.ndarray
    y: np.ndarray
    kernels: Kernels
    solver: Solver
    eta: float = 1.0
    method: str = ""
    state: Any = None
    loss0: float = math.nan
    _warned: set = field(default_factory=set, repr=False)

    def start(self) -> float:
        """Compute h_0 (A is fixed, so once), run the first forward, return the initial loss."""
        net = self.net
        self._y = net.be.asarray(self.y, dtype=net.dtype)
        H0 = net.input_layer(self.X)
        self.kernels.setup(net, H0)
        self.state, _ = self.kernels.forward()
        self.loss0 = self._loss(self.state)
        self._check_activity(self.state)
        return self.loss0

    def _loss(self, state: Any) -> float:
        loss = self.net.loss(self.kernels.outputs(state), self._y)
        if not math.isfinite(loss):
            advice = "lower --lr" + ("" if self.method == "dense-gd" else " or raise --damping")
            raise DivergenceError(f"non-finite loss ({loss}) at width m = {self.net.spec.m}; "
                                  f"{advice}")
        return loss

    def _check_activity(self, state: Any) -> list[float]:
        m, q = self.net.spec.m, self.net.spec.q
        counts = self.kernels.active_counts(state)
        for layer, cnt in enumerate(counts):
            if layer in self._warned:
                continue
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                check_activity(cnt, m, q, layer, self.net.spec.threshold)
            for w in caught:
                self._warned.add(layer)
                warnings.warn(w.message, w.category, stacklevel=3)
        return [float(np.mean(c)) / m for c in counts]

    def step(self) -> Step:
        """One training iteration, each phase timed and its work counted."""
        be, k = self.net.be, self.kernels
        st = self.state
        sec = dict.fromkeys(PHASES, 0.0)
        work: dict[str, Work] = {p: Work() for p in PHASES}
        info: dict = {}
        with be.timer() as t:
            r = k.outputs(st) - self._y
            V, work["backward"] = k.backward(st)
        sec["backward"] = t[0]
        K = None
        if self.solver.needs_gram:
            with be.timer() as t:
                K, work["gram"] = k.gram(st, V)
            sec["gram"] = t[0]
        sketching = getattr(self.solver, "kind", "none") != "none"
        sk = k.sketch_inputs(st, V) if sketching else None
        with be.timer() as t:
            try:
                c, madds, info = self.solver.solve(be.xp, K, r, sk)
            except SingularGramError as exc:
                spec = self.net.spec
                raise SingularGramError(
                    f"{exc}; {activity_advice(spec.threshold, spec.m, spec.q)}") from None
        sec["solve"] = t[0]
        # calls: a factorisation and two triangular solves, plus a few vector ops per CG step
        work["solve"] = Work(madds, 0.0, calls=3.0 + 8.0 * float(info.get("cg_iters", 0) or 0))
        with be.timer() as t:
            work["fold"] = k.fold(self.net.spec.n)
        sec["fold"] = t[0]
        with be.timer() as t:
            work["update"] = k.update(st, V, ((-self.eta) * c).astype(self.net.dtype))
        sec["update"] = t[0]
        with be.timer() as t:
            new, work["forward"] = k.forward()
        sec["forward"] = t[0]
        loss = self._loss(new)
        flips = k.flips(st, new)
        frac = self._check_activity(new)
        self.state = new
        return Step(loss, sec, {p: w.madds for p, w in work.items()},
                    {p: w.bytes for p, w in work.items()}, frac, flips, info,
                    {p: w.model_fields() for p, w in work.items()})

    def active_fraction(self) -> list[float]:
        """Mean active fraction per layer (0..L) of the current state."""
        m = self.net.spec.m
        return [float(np.mean(c)) / m for c in self.kernels.active_counts(self.state)]

    def describe(self) -> dict:
        """The options this trainer runs with (what ``auto`` resolved to)."""
        return {"solver": self.solver.name, **self.kernels.describe()}
