"""One training run from a flat configuration: validate, build the trainer, iterate, report.

``run_training`` returns the JSON contract of ``subquad train --json`` (see README).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from subquad.errors import ConfigError, check_choice
from subquad.model.data import DATASETS, LABELS, check_dimension, load
from subquad.model.network import DTYPES, Network, NetworkSpec, memory_estimate
from subquad.model.solve import SOLVERS, IdentitySolver, make_solver
from subquad.model.trainer import PHASES, Step, Trainer

METHODS = ("dense-gd", "dense-gn", "subquad")
#: default step sizes: a pure Gauss-Newton step, and a small stable gradient step
DEFAULT_LR = {"dense-gd": 1e-3, "dense-gn": 1.0, "subquad": 1.0}
#: CG tolerance per dtype: float32 cannot reach a 1e-10 relative residual
DEFAULT_CG_TOL = {"float64": 1e-10, "float32": 1e-5}
#: solver ``auto``: Cholesky at every n. Measured (results/solver, m = 2048, float64): the
#: sketch-preconditioned CG solve is 10-68x (TensorSketch) and 130-380x (TensorSRHT) slower
#: than Cholesky for n = 64..1024, on well- and ill-conditioned K alike, and 190 s against
#: 2.6 s at m = n = 4096: the QR of the L k x n sketch (k = 8 n) costs about 32 n^3 against
#: Cholesky's n^3 / 3, so no crossover n* exists.
AUTO_SOLVER = "cholesky"


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
    cg_maxiter: int = 100
    forward_kernel: str = "auto"

    @property
    def spec(self) -> NetworkSpec:
        return NetworkSpec(m=self.m, n=self.n, d=self.d, L=self.L, c=self.c, seed=self.seed,
                           dtype=self.dtype, backend=self.backend, threshold=self.threshold)

    @property
    def eta(self) -> float:
        return DEFAULT_LR[self.method] if self.lr is None else float(self.lr)

    @property
    def tol(self) -> float:
        """CG tolerance: given, or what the dtype can reach (1e-10 float64, 1e-5 float32)."""
        if self.cg_tol is not None:
            return float(self.cg_tol)
        return DEFAULT_CG_TOL[self.dtype] if self.dtype in DEFAULT_CG_TOL else 1e-10

    def resolved_solver(self) -> str:
        if self.method == "dense-gd":
            return "gradient"
        if self.solver == "auto":
            return AUTO_SOLVER
        return self.solver

    def rank_spec(self) -> Any:
        if self.rank_exponent is not None:
            return f"m^{self.rank_exponent}"
        return self.rank_max

    def validate(self) -> TrainConfig:
        """All checks, before anything is allocated; raises ConfigError naming the parameter."""
        check_choice("method", self.method, METHODS)
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
        if self.method == "dense-gn" and self.resolved_solver() != "cholesky":
            raise ConfigError("solver", "dense-gn is the naive baseline and solves by Cholesky; "
                              "accepted: auto, cholesky")
        if self.method != "subquad" and self.update not in ("auto", "dense"):
            raise ConfigError("update", f"--update applies to --method subquad only (got "
                              f"{self.update!r} with {self.method})")
        from subquad.model.subquadratic import FORWARD_KERNELS_BY_BACKEND, choose_update  # noqa: PLC0415

        kernels = FORWARD_KERNELS_BY_BACKEND.get(self.backend, ("auto",))
        if self.forward_kernel not in kernels:
            raise ConfigError("forward-kernel", f"unknown kernel {self.forward_kernel!r} for "
                              f"backend {self.backend!r}; accepted: {', '.join(kernels)}")
        rank = 0
        if self.method == "subquad":
            from subquad.model.sparsify import beta, check_c, tail  # noqa: PLC0415

            check_c(self.c)
            check_choice("dtype", self.dtype, DTYPES)
            mode = choose_update(self.update, tail(beta(max(self.m, 2), self.c)), self.backend,
                                 float(self.m) * self.m * self.spec.itemsize)
            if mode == "lazy":
                from subquad.model.lowrank import parse_rank_max  # noqa: PLC0415

                rank = parse_rank_max(self.rank_spec() if self.rank_spec() is not None
                                      else "m^0.5", self.m, self.n)
        self.spec.validate(extra_bytes=memory_estimate(self.spec, self.method, rank))
        return self


def build_trainer(cfg: TrainConfig, X: Any = None, y: Any = None) -> Trainer:
    """Validate, load data, draw the network (timed init) and assemble the trainer."""
    cfg.validate()
    if X is None:
        X, y = load(cfg.data, cfg.n, cfg.d, cfg.seed, cfg.labels)
    solver_name = cfg.resolved_solver()
    solver = (IdentitySolver() if solver_name == "gradient" else
              make_solver(solver_name, cfg.damping, cfg.sketch_size, cfg.tol, cfg.cg_maxiter,
                          cfg.seed))
    net = Network.init(cfg.spec)
    if cfg.method == "subquad":
        from subquad.model.kernels import get_kernels  # noqa: PLC0415
        from subquad.model.subquadratic import SparseKernels  # noqa: PLC0415

        kernels: Any = SparseKernels(get_kernels(cfg.backend), cfg.update, cfg.rank_spec(),
                                     cfg.forward_kernel)
    else:
        from subquad.model.dense import DenseKernels  # noqa: PLC0415

        kernels = DenseKernels()
    return Trainer(net, X, y, kernels, solver, eta=cfg.eta, method=cfg.method)


def run_training(cfg: TrainConfig, on_step: Callable[[int, Step], None] | None = None
                 ) -> dict:
    """Train for ``cfg.iters`` iterations and return the JSON-ready record of the run."""
    tr = build_trainer(cfg)
    loss0 = tr.start()
    L = cfg.L
    out: dict = {
        "method": cfg.method,
        "config": {},
        "loss": [loss0],
        "active_fraction": [tr.active_fraction()],
        "expected_active_fraction": cfg.spec.q,
        "flips": [[0] * (L + 1)],
        "seconds": {p: [] for p in PHASES},
        "work": {p: [] for p in PHASES},
        "bytes": {p: [] for p in PHASES},
        "solver_info": [],
        "init_seconds": tr.net.init_seconds,
        "init_work": tr.net.init_work,
    }
    for t in range(1, cfg.iters + 1):
        st = tr.step()
        out["loss"].append(st.loss)
        out["active_fraction"].append(st.active_fraction)
        out["flips"].append(st.flips)
        for p in PHASES:
            out["seconds"][p].append(st.seconds[p])
            out["work"][p].append(st.work[p])
            out["bytes"][p].append(st.bytes[p])
        out["solver_info"].append(st.info)
        if on_step is not None:
            on_step(t, st)
    out["config"] = {**asdict(replace(cfg, lr=cfg.eta, cg_tol=cfg.tol)), **tr.describe()}
    return out
