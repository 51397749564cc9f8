"""The paper's claims, a family of the claims engine: exponents in m (an ``ExponentClaim`` in
``EXPONENT_CLAIMS`` each), the lazy update's cost, sketched CG, fast matrix multiplication, and
training per variant. Any other claim: a function decorated with ``@engine.register(FAMILY)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from subquad.analysis.claims import engine
from subquad.analysis.claims.engine import Claim, Scope
from subquad.analysis.rundata import RunData, exponent_text, find_fit, select_rows, series_rows
from subquad.analysis.stats import median_ci
from subquad.results.format import fmt_seconds, options_label
from subquad.vocabulary import (
    INCONCLUSIVE,
    INFORMATIONAL,
    NOT_IMPLEMENTED,
    NOT_MEASURED,
    REJECTED,
    SUPPORTED,
)

FAMILY = "paper"


def _measured(row: pd.Series | None, axis: str) -> tuple[str, str]:
    """('m^1.76 (7 points, m=512..32768)', '[1.70, 1.82]') or not measured."""
    text = exponent_text(row)
    if not text:
        return NOT_MEASURED, ""
    info = [f"{int(row['n_points'])} points"] if pd.notna(row.get("n_points")) else []
    if str(row.get("fit_range", "")):
        info.append(str(row["fit_range"]))
    kind = str(row.get("fit", "") or "")
    if kind == "regime":
        info.append("single-regime fit: weights beyond the last cache level")
    elif kind == "slope" and str(row.get("quantity", "")) == "seconds":
        info.append("fit over all widths")
    if str(row.get("update_resolved", "")) and "->" in str(row["update_resolved"]):
        info.append(f"update {row['update_resolved']} inside the range")
    interval = f"[{row['ci_low']:.2f}, {row['ci_high']:.2f}]"
    return f"{axis}^{row['exponent']:.2f} ({', '.join(info)})", interval


@dataclass(frozen=True)
class ExponentClaim:
    """A claim about one fitted exponent: data, so adding one is one entry.

    ``target``: a number, or "2-c" / "2-2c" (c of the main sweep). ``variant``: which of the
    method's variants in ``Scope.options`` ("default", "lazy", "scatter"). ``baseline``: also
    compare with dense-gn's main variant on the same phase (``below`` only). ``fallback``: a
    method to use when ``method`` has no such fit (e.g. init of dense-gn).
    """

    claim: str
    method: str
    phase: str
    quantity: str
    rule: str  # "below" | "near"
    target: float | str
    predicted: str
    variant: str = "default"
    axis: str = "m"
    baseline: bool = False
    fallback: str = ""


EXPONENT_CLAIMS: tuple[ExponentClaim, ...] = (
    ExponentClaim("initialisation costs ~ m^2 ({who}, seconds)", "subquad", "init", "seconds",
                  "near", 2.0, "2", fallback="dense-gn"),
    ExponentClaim("initialisation costs ~ m^2 ({who}, counted work, weights drawn)", "subquad",
                  "init", "work", "near", 2.0, "2", fallback="dense-gn"),
    ExponentClaim("per-iteration time is m^(2 - Omega(1)) ({who})", "subquad", "iteration",
                  "seconds", "below", 2.0, "< 2, about 2 - c up to a log factor",
                  baseline=True),
    ExponentClaim("per-iteration counted work is m^(2 - Omega(1)) ({who})", "subquad",
                  "iteration", "work", "below", 2.0, "< 2, about 2 - c up to a log factor",
                  baseline=True),
    ExponentClaim("dense-gn per-iteration time ~ m^2 (baseline sanity)", "dense-gn",
                  "iteration", "seconds", "near", 2.0, "2"),
    ExponentClaim("dense-gn per-iteration counted work ~ m^2 (baseline sanity)", "dense-gn",
                  "iteration", "work", "near", 2.0, "2"),
    ExponentClaim("sparsifier: forward counted work ~ m s", "subquad", "forward", "work",
                  "below", 2.0, "about 2 - c (< 2)", baseline=True),
    ExponentClaim("sparsifier: backward counted work ~ s^2", "subquad", "backward", "work",
                  "below", 2.0, "about 2 - 2c (< 2)", baseline=True),
    ExponentClaim("lazy low-rank ({who}): amortised fold work per iteration < m^2", "subquad",
                  "fold", "work", "below", 2.0, "< 2 only with fast rectangular "
                  "multiplication; 2 with a BLAS fold", variant="lazy"),
    ExponentClaim("sparse scatter update (alternative to the fold) ~ n s^2", "subquad",
                  "update", "work", "below", 2.0, "about 2 - 2c (< 2)", variant="scatter"),
)


def _target(target: float | str, fixed: dict) -> float:
    c = float(fixed.get("c", math.nan))
    return {"2-c": 2 - c, "2-2c": 2 - 2 * c}.get(target, target) if isinstance(target, str) \
        else float(target)


@engine.register(FAMILY)
def exponent_claims(data: RunData, scope: Scope) -> list[Claim]:
    """Every ``EXPONENT_CLAIMS`` entry against the run's fits (not measured without a sweep)."""
    if scope.fixed is None:
        why = "no width sweep of a trained method with 3 or more widths in runs.csv"
        return [Claim(c.claim.format(who=c.method), c.predicted, reason=why)
                for c in EXPONENT_CLAIMS]
    return [evaluate_exponent(c, data, scope) for c in EXPONENT_CLAIMS]


def evaluate_exponent(spec: ExponentClaim, data: RunData, scope: Scope) -> Claim:
    """One exponent claim against the run's fits (``evaluate`` applies the downgrades)."""
    who, options = spec.method, scope.options.get(_variant_key(spec.method, spec.variant))
    row = _fit_row(data, scope, spec.method, options, spec.phase, spec.quantity, spec.axis)
    if row is None and spec.fallback:
        who, options = spec.fallback, scope.options.get(spec.fallback)  # its default variant
        row = _fit_row(data, scope, who, options, spec.phase, spec.quantity, spec.axis)
    label = options_label(options or "", who)
    name = spec.claim.format(who=f"{who} ({label})" if label and who == "subquad" else who)
    claim = Claim(name, spec.predicted, quantity=spec.quantity)
    claim.measured, claim.interval = _measured(row, spec.axis)
    base = None
    if spec.baseline:
        base = _fit_row(data, scope, "dense-gn", scope.options.get("dense-gn"), spec.phase,
                        spec.quantity, spec.axis)
        if base is not None and claim.measured != NOT_MEASURED:
            claim.measured += f"; dense-gn {spec.axis}^{exponent_text(base)}"
    if row is None:
        claim.reason = f"no fitted {spec.method} {spec.phase} {spec.quantity} series in " \
                       f"{spec.axis} in this run"
        return claim
    lo, hi = float(row["ci_low"]), float(row["ci_high"])
    if spec.rule == "near":
        claim.verdict, claim.reason = engine.verdict_near(
            lo, hi, _target(spec.target, scope.fixed), scope.limits.claim_tolerance)
    else:
        base_lo = float(base["ci_low"]) if base is not None else None
        claim.verdict, claim.reason = engine.verdict_below(
            lo, hi, _target(spec.target, scope.fixed), scope.limits.claim_min_saving, base_lo)
    claim.fits = (row, base)
    return claim


def _variant_key(method: str, variant: str) -> str:
    return method if variant == "default" else f"{method}:{variant}"


def _fit_row(data: RunData, scope: Scope, method: str, options: str | None,
             phase: str, quantity: str, axis: str) -> pd.Series | None:
    if options is None:
        return None
    if quantity == "seconds" and axis == "m":  # one memory regime, where it has enough widths
        reg = find_fit(data.fits, method, options, phase, quantity, axis, scope.fixed, "regime")
        if reg is not None and engine.regime_usable(reg):
            return reg
    return find_fit(data.fits, method, options, phase, quantity, axis, scope.fixed)


# --------------------------------------------------------------------------- other claims


def _phase_median(runs: pd.DataFrame, fixed: dict, method: str, options: str,
                  phases: tuple[str, ...], m: float) -> float:
    """Sum over ``phases`` of the median seconds of one series at width m (NaN if absent)."""
    sel = series_rows(runs, method, options, fixed, m=m)
    total = 0.0
    for p in phases:
        vals = sel.loc[sel["phase"] == p, "seconds"]
        if vals.empty:
            return math.nan
        total += median_ci(vals).median
    return total


def largest_common_m(runs: pd.DataFrame, fixed: dict, series: list[tuple[str, str]]
                     ) -> float | None:
    """The largest width measured (iteration phase) by every one of ``series``."""
    widths = None
    for method, options in series:
        ms = set(series_rows(runs, method, options, fixed, "iteration")["m"].astype(float))
        widths = ms if widths is None else widths & ms
    return max(widths) if widths else None


@engine.register(FAMILY, sweep=True)
def lazy_cost(data: RunData, scope: Scope) -> list[Claim]:
    """Lazy update + fold against the scatter update at the largest common width."""
    lazy, scat = scope.options.get("subquad:lazy"), scope.options.get("subquad:scatter")
    claim = Claim("lazy low-rank: update + fold cost next to the sparse scatter update",
                  INFORMATIONAL)
    if not (lazy and scat):
        claim.reason = "needs a lazy and a scatter subquad variant in the main sweep"
        return [claim]
    m = largest_common_m(data.runs, scope.fixed, [("subquad", lazy), ("subquad", scat)])
    if m is None:
        claim.reason = "no width where both were measured"
        return [claim]
    t_l = _phase_median(data.runs, scope.fixed, "subquad", lazy, ("update", "fold"), m)
    t_s = _phase_median(data.runs, scope.fixed, "subquad", scat, ("update",), m)
    claim.measured = (f"at m={m:.0f}: lazy update+fold {fmt_seconds(t_l)} vs scatter update "
                      f"{fmt_seconds(t_s)} per iteration")
    claim.verdict, claim.reason = INFORMATIONAL, "a measured comparison, no prediction"
    return [claim]


@engine.register(FAMILY, sweep=True)
def cg_claim(data: RunData, scope: Scope) -> list[Claim]:
    """Sketch-preconditioned CG needs few iterations at any m."""
    claim = Claim("sketching + preconditioning: CG converges in a few iterations, flat in m",
                  "O(1) iterations (k a few times n)")
    runs = select_rows(data.runs[(data.runs["method"] == "subquad")
                                 & data.runs["options"].str.contains("solver=pcg")],
                       scope.fixed)
    failed = 0
    if data.all_runs is not None:
        failed = int(data.all_runs.loc[data.all_runs["status"] == "cg-not-converged",
                                       "cell"].nunique())
    it = runs[(runs["phase"] == "iteration") & runs["cg_iters"].notna()]
    if it.empty:
        claim.reason = "no PCG solver in the main sweep"
        return [claim]
    med = it.groupby("m")["cg_iters"].median().sort_index()
    growth = float(med.iloc[-1] / max(med.iloc[0], 1.0))
    claim.measured = (f"median CG iterations {med.iloc[0]:.3g} at m={med.index[0]:.0f} -> "
                      f"{med.iloc[-1]:.3g} at m={med.index[-1]:.0f}; {failed} non-converged "
                      "cells")
    claim.interval = f"growth x{growth:.2g}"
    if failed or growth > 3.0:
        claim.verdict = REJECTED
        claim.reason = f"{failed} cells did not converge" if failed else \
            f"iterations grew x{growth:.2g} (> 3) over the sweep"
    else:
        claim.verdict = SUPPORTED if growth <= 1.5 else INCONCLUSIVE
        claim.reason = f"iterations grew x{growth:.2g} ({'<= 1.5' if growth <= 1.5 else '> 1.5'})"
    return [claim]


@engine.register(FAMILY, sweep=True)
def fast_matmul(data: RunData, scope: Scope) -> list[Claim]:
    """The fold by fast rectangular multiplication: not implemented (a BLAS GEMM)."""
    fold = _fit_row(data, scope, "subquad", scope.options.get("subquad:lazy"), "fold", "work",
                    "m")
    measured = ("the fold is an ordinary BLAS GEMM, 2 m^2 r per fold, amortised 2 n m^2 per "
                "iteration")
    if fold is not None:
        measured += f"; measured fold exponent m^{exponent_text(fold)}"
    return [Claim("fast rectangular multiplication: fold m x m^a x m in m^(2+o(1))",
                  "amortised n m^(2-a) per iteration", measured, "", NOT_IMPLEMENTED,
                  "subquad implements the fold with BLAS, not fast matrix multiplication")]


LOSS_CLAIM = "training: loss falls geometrically (Gauss-Newton)"
ACTIVITY_CLAIM = "training: active fraction stays near Q(beta)"
SAME_CLAIM = "training: subquad (exact solve) reproduces dense-gn's iterates"


@engine.register(FAMILY)
def training_claims(data: RunData, scope: Scope) -> list[Claim]:
    """Section 6 per variant (named in brackets): geometric loss decay, activity near Q(beta),
    the same iterates as dense-gn; one unmeasured row per claim that no variant measures."""
    tr, band, rtol = data.training, scope.limits.claim_activity_ratio, scope.limits.claim_same_rtol
    if tr is None or tr.empty:
        return [Claim(LOSS_CLAIM, "contraction < 1 per step", reason="no training.csv"),
                Claim(ACTIVITY_CLAIM, f"within x{band:g}", reason="no training.csv"),
                Claim(SAME_CLAIM, "same losses", reason="no training.csv")]
    per = tr.groupby(["cell", "iteration"], as_index=False).first().sort_values("iteration")
    gn = per[per["method"].isin(["dense-gn", "subquad"])]
    loss = [_loss_claim(g, name) for name, g in engine.variants(gn)]
    active = [_activity_claim(g, name, band) for name, g in engine.variants(tr)]
    return (_or(loss, Claim(LOSS_CLAIM, "contraction < 1 per step",
                            reason="no Gauss-Newton training cell"))
            + _or(active, Claim(ACTIVITY_CLAIM, f"ratio within [{1 / band:.2g}, {band:g}]",
                                reason="no active fractions recorded"))
            + _or(_same_iterates(per, rtol), Claim(
                SAME_CLAIM, f"relative loss difference <= {rtol:g}",
                reason="no dense-gn and subquad (cholesky) training on the same network")))


def _or(claims: list[Claim], empty: Claim) -> list[Claim]:
    """The per-variant rows, or the one unmeasured row when no variant measured the claim."""
    return claims if any(c.verdict != NOT_MEASURED for c in claims) else [empty]


def _loss_claim(per: pd.DataFrame, variant: str) -> Claim:
    claim = Claim(f"{LOSS_CLAIM} [{variant}]", "contraction < 1 per step")
    rhos, monotone = [], True
    for _, g in per.groupby("cell"):
        loss = g["loss"].to_numpy(float)
        if len(loss) < 2 or not loss[0] > 0:
            continue
        rhos.append((max(loss[-1], 1e-300) / loss[0]) ** (1.0 / (len(loss) - 1)))
        above = loss[loss > 1e-12 * loss[0]]  # round-off at the floor is not a rise
        monotone &= bool(np.all(np.diff(above) <= 0.01 * above[:-1]))
    if not rhos:
        return claim
    worst = max(rhos)
    claim.measured = (f"per-step contraction {min(rhos):.3g} to {worst:.3g} over {len(rhos)} "
                      f"cells; monotone: {'yes' if monotone else 'no'}")
    claim.interval = f"[{min(rhos):.3g}, {worst:.3g}]"
    claim.verdict, claim.reason = (
        (REJECTED, f"worst contraction {worst:.3g} >= 1") if worst >= 1 else
        (SUPPORTED, "every contraction < 1 and losses monotone") if monotone else
        (INCONCLUSIVE, "contraction < 1 but a loss rose by > 1%"))
    return claim


def _activity_claim(tr: pd.DataFrame, variant: str, band: float) -> Claim:
    claim = Claim(f"{ACTIVITY_CLAIM} [{variant}]", f"ratio within [{1 / band:.2g}, {band:g}]")
    ratio = engine.activity_ratio(tr)
    if ratio.empty:
        return claim
    lo, hi = float(ratio.min()), float(ratio.max())
    claim.measured = (f"active fraction / Q(beta) in [{lo:.3g}, {hi:.3g}] over all layers, "
                      "iterations and cells")
    claim.interval = f"[{lo:.3g}, {hi:.3g}]"
    claim.verdict = engine.verdict_band(lo, hi, band)
    claim.reason = ("every ratio inside the band" if claim.verdict == SUPPORTED else
                    "a ratio leaves the band")
    return claim


def _same_iterates(per: pd.DataFrame, rtol: float) -> list[Claim]:
    """Each subquad (cholesky) variant against dense-gn with the same options where both set
    one (solver, lr, damping), on the same networks."""
    keys = [k for k in ("m", "n", "d", "L", "c", "seed", "threshold", "data") if k in per]
    cols = [*keys, "iteration", "loss"]
    dense = per[per["method"] == "dense-gn"]
    sub = per[(per["method"] == "subquad") & per["options"].str.contains("solver=cholesky")]
    out = []
    for name, s in engine.variants(sub):
        claim = Claim(f"{SAME_CLAIM} [{name}]", f"relative loss difference <= {rtol:g}")
        same = [engine.same_options(o, s["options"].iloc[0]) for o in dense["options"].fillna("")]
        partner = dense[np.array(same, dtype=bool)]
        rel = engine.loss_gap(partner[cols], s[cols], [*keys, "iteration"])
        if partner.empty and not dense.empty:
            claim.reason = "no dense-gn training with the options both set (solver, lr, damping)"
        elif rel.empty:
            continue
        else:
            worst = float(rel.max())
            claim.measured = f"max relative difference {worst:.2g} over {len(rel)} iterations"
            claim.interval = f"<= {worst:.2g}"
            claim.verdict = SUPPORTED if worst <= rtol else REJECTED
            claim.reason = f"max {worst:.2g} {'<=' if worst <= rtol else '>'} {rtol:g}"
        out.append(claim)
    return out
