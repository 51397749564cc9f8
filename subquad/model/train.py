"""One training run from a flat configuration: validate, build the trainer, iterate, report.

``run_training`` returns the JSON contract of ``subquad train --json`` (see README).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from subquad import signals
from subquad.errors import ConfigError, SubquadError, Terminated, check_choice
from subquad.model.backend import recorded_backend
from subquad.model.data import DATASETS, LABELS, check_dimension, load
from subquad.model.lowrank import parse_rank_max
from subquad.model.methods import Method, get_method
from subquad.model.network import DTYPES, Network, NetworkSpec, memory_estimate
from subquad.model.solve import SOLVERS, IdentitySolver, make_solver
from subquad.model.sparsify import beta, check_c, tail
from subquad.model.subquadratic import FORWARD_KERNELS_BY_BACKEND, choose_update
from subquad.model.trainer import Step, Trainer
from subquad.vocabulary import ITERATION_PHASES as PHASES

#: CG tolerance per dtype: float32 cannot reach a 1e-10 relative residual
DEFAULT_CG_TOL = {"float64": 1e-10, "float32": 1e-5}
#: solver ``auto``: Cholesky at every n. Measured (results/solver, m = 2048, float64): the
#: sketch-preconditioned CG solve is 10-68x (TensorSketch) and 130-380x (TensorSRHT) slower
#: than Cholesky for n = 64..1024, on well- and ill-conditioned K alike, and 190 s against
#: 2.6 s at m = n = 4096: the QR of the L k x n sketch (k = 8 n) costs about 32 n^3 against
#: Cholesky's n^3 / 3, so no crossover n* exists.
AUTO_SOLVER = "cholesky"
#: CG/PCG iteration limit when none is given
DEFAULT_CG_MAXITER = 100
#: solvers that iterate (take --cg-tol, --cg-maxiter) and that sketch (take --sketch-size)
ITERATIVE_SOLVERS = ("cg", "pcg-tensorsketch", "pcg-tensorsrht")
SKETCHING_SOLVERS = ("pcg-tensorsketch", "pcg-tensorsrht")
#: what a run records per iteration and phase (fields of ``Step``)
PER_PHASE = ("seconds", "work", "bytes")


@dataclass(frozen=True)
class TrainConfig:
    """Every parameter of a run; ``None`` means the documented default."""

    method: str = "subquad"
    m: int = 1024
    n: int = 8
    d: int = 16
    L: int = 2
    c: float = 0.2
    iters: int = 10
    seed: int = 0
    dtype: str = "float64"
    backend: str = "numpy"
    data: str = "synthetic"
    labels: str = "teacher"
    threshold: str = "adaptive"
    lr: float | None = None
    damping: float = 0.0
    solver: str = "auto"
    update: str = "auto"
    rank_max: int | None = None
    rank_exponent: float | None = None
    sketch_size: int | None = None
    cg_tol: float | None = None
    cg_maxiter: int | None = None
    forward_kernel: str = "auto"

    @property
    def spec(self) -> NetworkSpec:
        return NetworkSpec(**{f.name: getattr(self, f.name) for f in fields(NetworkSpec)})

    @property
    def meth(self) -> Method:
        return get_method(self.method)

    @property
    def eta(self) -> float:
        return self.meth.default_lr if self.lr is None else float(self.lr)

    @property
    def tol(self) -> float:
        """CG tolerance: given, or what the dtype can reach (1e-10 float64, 1e-5 float32)."""
        if self.cg_tol is not None:
            return float(self.cg_tol)
        return DEFAULT_CG_TOL.get(self.dtype, 1e-10)

    @property
    def maxiter(self) -> int:
        """CG/PCG iteration limit: given, or DEFAULT_CG_MAXITER."""
        return DEFAULT_CG_MAXITER if self.cg_maxiter is None else int(self.cg_maxiter)

    def resolved_solver(self) -> str:
        if not self.meth.solves:
            return "gradient"
        if self.solver == "auto":
            return AUTO_SOLVER if AUTO_SOLVER in self.meth.solvers else self.meth.solvers[0]
        return self.solver

    def rank_spec(self) -> Any:
        if self.rank_exponent is not None:
            return f"m^{self.rank_exponent}"
        return self.rank_max

    def validate(self) -> TrainConfig:
        """All checks, before anything is allocated; raises ConfigError naming the parameter."""
        meth = get_method(self.method)
        check_choice("data", self.data, DATASETS)
        check_dimension(self.data, self.d)
        check_choice("labels", self.labels, LABELS)
        if isinstance(self.iters, bool) or not isinstance(self.iters, int) or self.iters < 1:
            raise ConfigError("iters", f"must be an integer >= 1, got {self.iters!r}")
        eta = self.eta
        if not (math.isfinite(eta) and eta > 0):
            raise ConfigError("lr", f"step size must be a finite number > 0, got {self.lr!r}")
        if not (math.isfinite(self.damping) and self.damping >= 0):
            raise ConfigError("damping", f"mu must be a finite number >= 0, got {self.damping!r}")
        if self.solver not in ("auto", *SOLVERS):
            raise ConfigError("solver", f"unknown solver {self.solver!r}; accepted: auto, "
                              f"{', '.join(SOLVERS)}")
        if meth.solves and self.resolved_solver() not in meth.solvers:
            raise ConfigError("solver", f"{self.method} solves by {', '.join(meth.solvers)}; "
                              f"accepted: auto, {', '.join(meth.solvers)}")
        if not meth.sparse and self.update not in ("auto", "dense"):
            raise ConfigError("update", f"--update applies to --method subquad only (got "
                              f"{self.update!r} with {self.method})")
        self._check_iterative()
        kernels = FORWARD_KERNELS_BY_BACKEND.get(self.backend, ("auto",))
        if self.forward_kernel not in kernels:
            raise ConfigError("forward-kernel", f"unknown kernel {self.forward_kernel!r} for "
                              f"backend {self.backend!r}; accepted: {', '.join(kernels)}")
        if not meth.sparse and self.forward_kernel != "auto":
            raise ConfigError("forward-kernel", f"{self.method} runs the dense forward pass and "
                              "has no sparse kernel to choose; accepted: auto (or omit it)")
        rank = 0
        mode = "dense"
        if meth.sparse:
            check_c(self.c)
            check_choice("dtype", self.dtype, DTYPES)
            mode = choose_update(self.update, tail(beta(max(self.m, 2), self.c)), self.backend,
                                 float(self.m) * self.m * self.spec.itemsize)
        self._check_rank_options(mode)
        if mode == "lazy":
            rank = parse_rank_max(self.rank_spec() if self.rank_spec() is not None
                                  else "m^0.5", self.m, self.n)
        self.spec.validate(extra_bytes=memory_estimate(self.spec, not meth.sparse, rank))
        return self

    def _check_iterative(self) -> None:
        """Solver options only where the resolved solver uses them; limits checked up front."""
        solver = self.resolved_solver()
        if not self.meth.solves:
            if self.solver not in ("auto", "gradient"):
                raise ConfigError("solver", f"dense-gd takes plain gradient steps and solves no "
                                  f"system, so --solver {self.solver} does not apply; accepted: "
                                  "auto (or omit it); for a solver use --method dense-gn or "
                                  "subquad")
            if self.damping:
                raise ConfigError("damping", "dense-gd builds no Gram matrix, so --damping does "
                                  "not apply; accepted: 0 (or omit it)")
        why = (f"solver auto resolves to {solver} at n = {self.n}" if self.solver == "auto"
               else f"--solver {solver}")
        if self.sketch_size is not None:
            if solver not in SKETCHING_SOLVERS:
                raise ConfigError("sketch-size", f"only the PCG solvers sketch ({why}); accepted "
                                  f"with --solver {' or '.join(SKETCHING_SOLVERS)}")
            if isinstance(self.sketch_size, bool) or self.sketch_size < 1:
                raise ConfigError("sketch-size", f"must be an integer >= 1, got "
                                  f"{self.sketch_size!r}")
        for param, value in (("cg-tol", self.cg_tol), ("cg-maxiter", self.cg_maxiter)):
            if value is not None and solver not in ITERATIVE_SOLVERS:
                raise ConfigError(param, f"only the iterative solvers use it ({why}); accepted "
                                  f"with --solver {', '.join(ITERATIVE_SOLVERS)}")
        if self.cg_tol is not None and not (math.isfinite(self.cg_tol) and 0 < self.cg_tol < 1):
            raise ConfigError("cg-tol", f"relative residual target must lie in (0, 1), got "
                              f"{self.cg_tol!r}")
        if self.cg_maxiter is not None and (isinstance(self.cg_maxiter, bool)
                                            or self.cg_maxiter < 1):
            raise ConfigError("cg-maxiter", f"must be an integer >= 1 (iterations), got "
                              f"{self.cg_maxiter!r}")

    def _check_rank_options(self, mode: str) -> None:
        """--rank-max / --rank-exponent only with the lazy update, and not both."""
        for param, value in (("rank-max", self.rank_max), ("rank-exponent", self.rank_exponent)):
            if value is not None and mode != "lazy":
                used = f"update {mode}" if self.meth.sparse else self.method
                raise ConfigError(param, f"only the lazy low-rank update keeps a rank ({used} "
                                  "does not); accepted with --method subquad --update lazy")
        if self.rank_max is not None and self.rank_exponent is not None:
            raise ConfigError("rank-max", "give either --rank-max R or --rank-exponent A, "
                              "not both")
        if self.rank_max is not None and (isinstance(self.rank_max, bool)
                                          or not isinstance(self.rank_max, int)
                                          or self.rank_max < self.n):
            raise ConfigError("rank-max", f"must be an integer >= n (= {self.n}) so that one "
                              f"update's n columns fit, got {self.rank_max!r}; or give "
                              "--rank-exponent A in (0, 1] for rank max(round(m^A), n)")
        if self.rank_exponent is not None and not (
                math.isfinite(self.rank_exponent) and 0 < self.rank_exponent <= 1):
            raise ConfigError("rank-exponent", f"must lie in (0, 1] (rank m^a), got "
                              f"{self.rank_exponent!r}")


def build_trainer(cfg: TrainConfig, X: Any = None, y: Any = None) -> Trainer:
    """Validate, load data, draw the network (timed init) and assemble the trainer."""
    cfg.validate()
    if X is None:
        X, y = load(cfg.data, cfg.n, cfg.d, cfg.seed, cfg.labels)
    solver_name = cfg.resolved_solver()
    solver = (IdentitySolver() if solver_name == "gradient" else
              make_solver(solver_name, cfg.damping, cfg.sketch_size, cfg.tol, cfg.maxiter,
                          cfg.seed))
    net = Network.init(cfg.spec)
    return Trainer(net, X, y, cfg.meth.kernels(cfg), solver, eta=cfg.eta, method=cfg.method)


def run_training(cfg: TrainConfig, on_step: Callable[[int, Step], None] | None = None
                 ) -> dict:
    """Train for ``cfg.iters`` iterations and return the JSON-ready record of the run."""
    tr = build_trainer(cfg)
    loss0 = tr.start()
    out: dict = {
        "method": cfg.method,
        "config": _config_record(cfg, tr),
        "loss": [loss0],
        "active_fraction": [tr.active_fraction()],
        "expected_active_fraction": cfg.spec.q,
        "flips": [[0] * (cfg.L + 1)],
        **{q: {p: [] for p in PHASES} for q in PER_PHASE},
        "solver_info": [],
        "init_seconds": tr.net.init_seconds,
        "init_work": tr.net.init_work,
    }
    try:
        for t in range(1, cfg.iters + 1):
            signals.check()  # a signal whose exception a finalizer swallowed
            st = tr.step()
            out["loss"].append(st.loss)
            out["active_fraction"].append(st.active_fraction)
            out["flips"].append(st.flips)
            for q in PER_PHASE:
                for p in PHASES:
                    out[q][p].append(getattr(st, q)[p])
            out["solver_info"].append(st.info)
            if on_step is not None:
                on_step(t, st)
    except (SubquadError, KeyboardInterrupt, Terminated) as exc:
        exc.partial = out  # the trajectory so far, for ``train --json`` on a failure or signal
        raise
    out["config"] = _config_record(cfg, tr)  # the trainer's choices after the run (folds)
    return out


def _config_record(cfg: TrainConfig, tr: Trainer) -> dict:
    """The resolved configuration (defaults filled in) plus what the trainer chose."""
    return {**asdict(replace(cfg, lr=cfg.eta, cg_tol=cfg.tol, cg_maxiter=cfg.maxiter,
                             backend=recorded_backend(cfg.backend))), **tr.describe()}
