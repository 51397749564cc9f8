"""Preconditioned CG for (K + mu I) c = r with a tensor-sketch preconditioner (ALGORITHM.md 3).

B (L k x n) is a tensor sketch with B^T B ~ K. QR gives R with R^T R = B^T B (+ mu I when the
stacked [B; sqrt(mu) I] is factored), and the preconditioner applies (R^T R)^-1 by two triangular
solves. With a constant-quality embedding, CG then needs a few iterations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from subquad.errors import SingularGramError


def triangular_solver(xp: Any) -> Callable:
    """scipy.linalg.solve_triangular for numpy, cupyx.scipy.linalg.solve_triangular for cupy."""
    if xp.__name__ == "cupy":
        from cupyx.scipy.linalg import solve_triangular  # noqa: PLC0415
    else:
        from scipy.linalg import solve_triangular  # noqa: PLC0415
    return solve_triangular


def _norm(x: Any, xp: Any) -> float:
    return float(xp.sqrt(x @ x))


_HINT = ("increase --sketch-size (the sketch rows L k must be well above n) or use damping "
         "mu > 0; a sample with no active neuron makes K itself singular")


def _check_rank(R: Any, rows: int, n: int, mu: float, xp: Any) -> None:
    """Raise SingularGramError when R (n x n upper triangular) is numerically singular."""
    d = xp.abs(xp.diagonal(R))
    dmax, dmin = float(d.max()), float(d.min())
    tol = max(rows, n) * float(np.finfo(R.dtype).eps) * dmax
    if not math.isfinite(dmin) or dmax == 0.0 or dmin <= tol:
        raise SingularGramError(
            f"sketch B^T B + mu I (mu = {mu:g}) is numerically singular: smallest |R_jj| = "
            f"{dmin:.3g} against largest {dmax:.3g}; {_HINT}")


def sketch_preconditioner(B: Any, mu: float = 0.0, xp: Any = np) -> Callable[[Any], Any]:
    """z = (R^T R)^-1 g with R from QR of B (mu = 0) or of [B; sqrt(mu) I_n] (mu > 0).

    Raises SingularGramError (naming --sketch-size) when R is numerically singular.
    """
    if mu < 0:
        raise ValueError(f"damping mu must be >= 0, got {mu}")
    rows, n = int(B.shape[0]), int(B.shape[1])
    A = B
    if mu > 0:
        A = xp.concatenate([B, math.sqrt(mu) * xp.eye(n, dtype=B.dtype)], axis=0)
        rows += n
    if rows < n:  # B^T B (n x n) from fewer than n rows is singular
        raise SingularGramError(f"sketch B has {rows} rows for n = {n} samples, so B^T B is "
                                f"singular; {_HINT}")
    R = xp.linalg.qr(A, mode="r")[:n]
    _check_rank(R, rows, n, mu, xp)
    solve = triangular_solver(xp)

    def apply(g: Any) -> Any:
        y = solve(R, g, trans="T", lower=False)
        return solve(R, y, lower=False)

    return apply


def preconditioned_cg(matvec: Callable[[Any], Any], r: Any,
                      precond: Callable[[Any], Any] | None = None, tol: float = 1e-10,
                      maxiter: int = 100, xp: Any = np) -> tuple[Any, int, bool, float]:
    """Solve A c = r (A = K + mu I via ``matvec``) from c = 0 until ||r - A c|| / ||r|| <= tol.

    Returns (c, iters, converged, resid): iters counts matvecs of the iteration; resid is the true
    relative residual, checked with one extra matvec when the recurrence reports convergence
    (CG restarts from the current c if the recurrence drifted).
    """
    M = precond if precond is not None else (lambda g: g)
    c = xp.zeros_like(r)
    rnorm = _norm(r, xp)
    if rnorm == 0.0:
        return c, 0, True, 0.0
    res, iters, resid = r.copy(), 0, 1.0
    while True:
        start = iters
        c, res, iters = _cg_run(matvec, M, c, res, tol * rnorm, maxiter, iters, xp)
        res = r - matvec(c)
        resid = _norm(res, xp) / rnorm
        if resid <= tol:
            return c, iters, True, resid
        if iters >= maxiter or iters == start:
            break
    return c, iters, False, resid


def _cg_run(matvec: Callable, M: Callable, c: Any, res: Any, atol: float, maxiter: int,
            iters: int, xp: Any) -> tuple[Any, Any, int]:
    """PCG iterations from (c, res) until ||res|| <= atol or maxiter; the recurrence residual."""
    z = M(res)
    d = z.copy()
    rz = float(res @ z)
    while iters < maxiter and _norm(res, xp) > atol:
        Ad = matvec(d)
        dAd = float(d @ Ad)
        if dAd <= 0.0 or not math.isfinite(dAd):
            break  # A not positive definite along d (or exact breakdown): stop here
        alpha = rz / dAd
        c = c + alpha * d
        res = res - alpha * Ad
        iters += 1
        z = M(res)
        rz_new = float(res @ z)
        d = z + (rz_new / rz) * d
        rz = rz_new
    return c, res, iters


def cg_work(n: int, iters: int) -> float:
    """Multiply-adds of ``iters`` PCG iterations on a dense n x n A with the QR preconditioner.

    Per iteration: the matvec (n^2), two triangular solves (n^2 together) and about 5 n of
    vector updates and inner products; the final residual check adds one matvec.
    """
    n = float(n)
    return iters * (2.0 * n * n + 5.0 * n) + (n * n if iters else 0.0)
