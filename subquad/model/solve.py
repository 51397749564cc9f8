"""Solvers of (K + mu I) c = r for one Gauss-Newton step, and the identity 'solver' of GD.

All three return c with the multiply-adds they performed and a small info dict (CG iterations).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from subquad.errors import ConfigError, ConvergenceError, SingularGramError, check_choice
from subquad.model.cg import triangular_solver

SOLVERS = ("cholesky", "cg", "pcg-tensorsketch", "pcg-tensorsrht")


@dataclass
class Solver:
    """Base: ``needs_gram`` says whether the iteration must build K.

    With ``diagnose`` set (the harness sets it only for its untimed training iterations) the
    solvers also report cond(K + mu I) and, for the sketch preconditioners, the condition
    number of the preconditioned system in ``info``; these cost O(n^3) each.
    """

    needs_gram: bool = True
    name: str = "solver"
    diagnose: bool = False

    def solve(self, xp: Any, K: Any, r: Any, sketch_inputs: Any = None
              ) -> tuple[Any, float, dict]:
        raise NotImplementedError


@dataclass
class IdentitySolver(Solver):
    """Gradient descent: c = r (the step is -eta sum_i r_i v_i h_i^T, the gradient)."""

    needs_gram: bool = False
    name: str = "gradient"

    def solve(self, xp, K, r, sketch_inputs=None):
        return r, 0.0, {}


def condition_numbers(A: Any, B: Any = None, mu: float = 0.0) -> dict[str, float]:
    """cond(A) of the symmetric system A = K + mu I and, with a sketch B (rows k x n), the
    condition number of the preconditioned system: the generalised eigenvalues of
    A x = lambda (B^T B + mu I) x, as CG sees A with the preconditioner (R^T R)^-1."""
    from scipy.linalg import eigh  # noqa: PLC0415

    A = np.asarray(A.get() if hasattr(A, "get") else A, dtype=np.float64)
    ev = np.linalg.eigvalsh(A)
    out = {"cond_K": float(ev[-1] / ev[0]) if ev[0] > 0 else math.inf}
    if B is not None:
        Bh = np.asarray(B.get() if hasattr(B, "get") else B, dtype=np.float64)
        M = Bh.T @ Bh + mu * np.eye(A.shape[0])
        try:
            gv = eigh(A, M, eigvals_only=True)
            out["cond_preconditioned"] = float(gv[-1] / gv[0]) if gv[0] > 0 else math.inf
        except np.linalg.LinAlgError:  # B^T B singular: the preconditioner is undefined
            out["cond_preconditioned"] = math.inf
    return out


def _cholesky(xp: Any, A: Any) -> Any:
    """Lower Cholesky factor; cupy only raises on a non-PD matrix inside its errstate."""
    if xp is np:
        return np.linalg.cholesky(A)
    import cupyx  # noqa: PLC0415 - GPU only

    with cupyx.errstate(linalg="raise"):
        return xp.linalg.cholesky(A)


def singular_message(K_host: np.ndarray, mu: float, detail: str) -> str:
    """Explain a singular K: which samples have a zero row (no active neuron) and what to do."""
    zero = np.flatnonzero(np.abs(np.diag(K_host)) <= 0)
    who = (f"sample(s) {zero.tolist()} have a zero row (no active neuron, so no gradient)"
           if zero.size else detail)
    advice = "" if mu > 0 else "; a damping --damping MU > 0 makes K + mu I invertible"
    return (f"the Gram matrix K + mu I (mu = {mu:g}) is singular: {who}. Gauss-Newton cannot "
            f"take a step{advice}")


@dataclass
class CholeskySolver(Solver):
    """Direct solve by Cholesky of K + mu I (n^3 / 3 multiply-adds)."""

    mu: float = 0.0
    name: str = "cholesky"

    def solve(self, xp, K, r, sketch_inputs=None):
        n = K.shape[0]
        A = K + self.mu * xp.eye(n, dtype=K.dtype)
        Kh = np.asarray(A.get() if hasattr(A, "get") else A)
        eps = np.finfo(Kh.dtype).eps
        if np.any(np.diag(Kh) <= 0):
            raise SingularGramError(singular_message(Kh, self.mu, "a zero diagonal"))
        try:
            Lc = _cholesky(xp, A)
        except np.linalg.LinAlgError as exc:
            raise SingularGramError(singular_message(Kh, self.mu, str(exc))) from None
        piv = np.asarray(xp.diagonal(Lc).get() if hasattr(Lc, "get") else np.diagonal(Lc))
        if (not np.all(np.isfinite(piv)) or piv.min() <= 0
                or piv.min() ** 2 <= n * eps * np.max(np.diag(Kh))):
            raise SingularGramError(singular_message(
                Kh, self.mu, f"smallest Cholesky pivot^2 {np.nanmin(piv) ** 2:.3g} is below "
                f"n eps max(K_ii)"))
        solve = triangular_solver(xp)
        c = solve(Lc.T, solve(Lc, r, lower=True), lower=False)
        return c, n**3 / 3.0 + 2.0 * n * n, condition_numbers(A) if self.diagnose else {}


@dataclass
class PCGSolver(Solver):
    """The paper's route: sketch the Kronecker rows, QR, CG with (R^T R)^-1 as preconditioner.

    ``kind = "none"`` is plain CG, the baseline that shows what the preconditioner buys.
    """

    kind: str = "tensorsketch"
    mu: float = 0.0
    sketch_size: int | None = None
    tol: float = 1e-10
    maxiter: int = 100
    seed: int = 0
    name: str = "pcg"
    _calls: int = field(default=0, repr=False)

    def solve(self, xp, K, r, sketch_inputs=None):
        from subquad.model.cg import cg_work, preconditioned_cg, sketch_preconditioner  # noqa: PLC0415
        from subquad.model.sketch import default_sketch_size, sketch, sketch_work  # noqa: PLC0415

        if xp is not np:  # the n x n system is tiny: solve it on the host, no per-step syncs
            c, work, info = self.solve(np, K.get(), r.get(), _to_host_rows(sketch_inputs))
            return xp.asarray(c), work, info
        n = K.shape[0]
        k = 0
        precond = B = None
        if self.kind != "none":  # the unpreconditioned CG baseline skips the sketch
            H_list, V_list = sketch_inputs
            k = self.sketch_size or default_sketch_size(n)
            B = sketch(self.kind, H_list, V_list, k, self.seed + self._calls, xp=xp)
            self._calls += 1
            precond = sketch_preconditioner(B, self.mu, xp=xp)
        A = K + self.mu * xp.eye(n, dtype=K.dtype)
        c, iters, converged, resid = preconditioned_cg(lambda p: A @ p, r, precond, self.tol,
                                                       self.maxiter, xp=xp)
        if not converged:
            better = (f"raise --sketch-size (now {k})" if precond is not None else
                      "use a preconditioned solver (--solver pcg-tensorsketch)")
            raise ConvergenceError(
                f"CG did not reach --cg-tol {self.tol:g} in {self.maxiter} iterations "
                f"(relative residual {resid:.3g}); {better}, raise --cg-maxiter or loosen "
                "--cg-tol")
        work = cg_work(n, iters)
        if precond is not None:
            nnz_h = sum(h.nnz for h in H_list)
            nnz_v = sum(v.nnz for v in V_list)
            L = len(H_list)
            work += sketch_work(self.kind, nnz_h, nnz_v, k, n, L) + 2.0 * L * k * n * n
        info: dict = {"cg_iters": iters, "sketch_size": k}
        if self.diagnose:
            info.update(condition_numbers(A, B, self.mu))
            info.setdefault("cond_preconditioned", info["cond_K"])  # plain CG: M = I
        return c, work, info


def _to_host_rows(sketch_inputs: Any) -> Any:
    """Host copies of the sketch inputs (lists of SparseRows) for a host-side solve."""
    if sketch_inputs is None:
        return None
    from subquad.model.sparse import SparseRows  # noqa: PLC0415

    def host(R: SparseRows) -> SparseRows:
        return SparseRows(R.indptr.get(), R.indices.get(), R.values.get(), R.m, R._counts)

    return tuple([host(R) for R in rows] for rows in sketch_inputs)


def make_solver(name: str, mu: float = 0.0, sketch_size: int | None = None, cg_tol: float = 1e-10,
                cg_maxiter: int = 100, seed: int = 0) -> Solver:
    """Build a solver by name (see ``SOLVERS``), validating its parameters."""
    if not (mu >= 0 and np.isfinite(mu)):
        raise ConfigError("damping", f"mu must be a finite number >= 0, got {mu!r}")
    check_choice("solver", name, SOLVERS)
    if name == "cholesky":
        return CholeskySolver(mu=mu)
    if sketch_size is not None and sketch_size < 1:
        raise ConfigError("sketch-size", f"must be a positive integer, got {sketch_size}")
    if not (0 < cg_tol < 1):
        raise ConfigError("cg-tol", f"must lie in (0, 1), got {cg_tol!r}")
    kind = "none" if name == "cg" else name.split("-", 1)[1]
    return PCGSolver(kind=kind, mu=mu, sketch_size=sketch_size, tol=cg_tol, maxiter=cg_maxiter,
                     seed=seed, name=name)
