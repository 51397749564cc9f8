"""Verdicts on the paper's claims, as data: ``claims.csv`` (claim, predicted, measured,
interval, verdict, reason), computed from a run's tables and rendered by the report.

Verdicts (``VERDICTS``): *supported*, *inconclusive*, *not supported*, *not measured* and
*not implemented*. Rules, with every number from ``[claims]`` of limits.toml:

- ``below`` (m^(2 - Omega(1))): supported when the interval's upper bound is below 2 and below
  the dense-gn baseline's lower bound; not supported when its lower bound is at or above
  2 - min_saving (no real saving) or at or above the baseline's lower bound; else inconclusive.
- ``near`` (~ m^k): supported when the whole interval lies in k +- tolerance, not supported
  when it lies wholly outside, inconclusive otherwise.
- Downgrades: a supported / not supported verdict becomes inconclusive when a fit has fewer
  than min_fit_points widths or spans less than min_decades, and (wall clock only) when the
  calibration self-check flagged the run. The reason column says which rule decided and every
  downgrade.

Adding a claim: append an ``ExponentClaim`` to ``EXPONENT_CLAIMS`` (method, phase, quantity,
axis, rule, target, which variant); a claim that is not an exponent is a function
``(RunData, Scope) -> list[Claim]`` appended to ``OTHER_CLAIMS``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from subquad.analysis.fit import REGIME_MIN_DECADES, REGIME_MIN_POINTS, trustworthy
from subquad.analysis.limits import Limits, load_limits
from subquad.analysis.rundata import (
    RunData,
    context_title,
    default_options,
    exponent_text,
    find_fit,
    main_context,
    parse_range,
    select_rows,
)
from subquad.analysis.stats import median_ci
from subquad.results.format import fmt_seconds, options_label
from subquad.results.rundir import RunDir

SUPPORTED, INCONCLUSIVE, REJECTED = "supported", "inconclusive", "not supported"
NOT_MEASURED, NOT_IMPLEMENTED = "not measured", "not implemented"
INFORMATIONAL = "informational"
VERDICTS = (SUPPORTED, INCONCLUSIVE, REJECTED, NOT_MEASURED, NOT_IMPLEMENTED, INFORMATIONAL)
#: the sparsifier's warning ratio of ALGORITHM.md section 1 (active fraction vs Q(beta))
ACTIVITY_RATIO = 1.5
#: relative loss difference under which two trainers "produce the same iterates"
SAME_ITERATES_RTOL = 1e-4


@dataclass
class Claim:
    """One row of ``claims.csv``."""

    claim: str
    predicted: str
    measured: str = ""
    interval: str = ""
    verdict: str = NOT_MEASURED
    reason: str = ""


@dataclass
class Scope:
    """What the claims are measured on: the main m sweep and each method's main variant."""

    fixed: dict
    options: dict[str, str | None]  #: default, lazy, scatter (subquad) and dense-gn
    flagged: bool
    limits: Limits


# ------------------------------------------------------------------------------ rules


def _finite(*xs: float | None) -> bool:
    return all(x is not None and np.isfinite(x) for x in xs)


def verdict_below(lo: float, hi: float, limit: float, min_saving: float,
                  baseline_lo: float | None = None) -> tuple[str, str]:
    """Exponent strictly below ``limit`` (and below the baseline's lower bound) by its CI."""
    if not _finite(lo, hi):
        return NOT_MEASURED, "no fitted exponent"
    has_base = _finite(baseline_lo)
    base = f" and dense-gn's lower bound {baseline_lo:.2f}" if has_base else ""
    if hi < limit and (not has_base or hi < baseline_lo):
        return SUPPORTED, f"upper bound {hi:.2f} < {limit:g}{base}"
    if lo >= limit - min_saving:
        return REJECTED, f"lower bound {lo:.2f} >= {limit - min_saving:g} (no real saving)"
    if has_base and lo >= baseline_lo:
        return REJECTED, f"lower bound {lo:.2f} >= dense-gn's lower bound {baseline_lo:.2f}"
    return INCONCLUSIVE, f"interval [{lo:.2f}, {hi:.2f}] straddles {limit:g}{base}"


def verdict_near(lo: float, hi: float, target: float, tol: float) -> tuple[str, str]:
    """Exponent CI inside target +- tol: supported; wholly outside: not; else inconclusive."""
    if not _finite(lo, hi):
        return NOT_MEASURED, "no fitted exponent"
    band = f"{target:g} +- {tol:g}"
    if lo >= target - tol and hi <= target + tol:
        return SUPPORTED, f"interval [{lo:.2f}, {hi:.2f}] inside {band}"
    if hi < target - tol or lo > target + tol:
        return REJECTED, f"interval [{lo:.2f}, {hi:.2f}] outside {band}"
    return INCONCLUSIVE, f"interval [{lo:.2f}, {hi:.2f}] overlaps the edge of {band}"


def grid_note(row: pd.Series | None, limits: Limits) -> str:
    """Why a fit's grid is too small to judge scaling ('' when it is large enough)."""
    if row is None:
        return ""
    n = _points(row)
    decades = _decades(row)
    regime = str(row.get("fit", "")) == "regime"
    need_n = REGIME_MIN_POINTS if regime else limits.claim_min_points
    need_d = REGIME_MIN_DECADES if regime else limits.claim_min_decades
    if n >= need_n and decades >= need_d:
        return ""
    return (f"grid too small to judge ({n} points over {decades:.2g} decades; needs >= "
            f"{need_n} over >= {need_d:g})")


def _points(row: pd.Series) -> int:
    return int(row["n_points"]) if pd.notna(row.get("n_points", np.nan)) else 0


def _decades(row: pd.Series) -> float:
    rng = parse_range(str(row.get("fit_range", "")))
    return math.log10(rng[1] / rng[0]) if rng and rng[0] > 0 else math.nan


def regime_usable(row: pd.Series) -> bool:
    """A single-regime fit judges a claim with >= 5 widths over >= half a decade."""
    return _points(row) >= REGIME_MIN_POINTS and _decades(row) >= REGIME_MIN_DECADES


#: phases whose work the fused update moves into the forward (the update's block, and the top
#: layer's backward block): a fit of them over fused widths is not that phase's power law
FUSED_MOVES = ("update", "backward")


def fused_note(row: pd.Series | None) -> str:
    """Why a backward/update fit over widths where ``fused`` ran cannot judge the phase."""
    if row is None or str(row.get("phase", "")) not in FUSED_MOVES:
        return ""
    modes = str(row.get("update_resolved", ""))
    if "fused" not in modes:
        return ""
    return (f"update {modes}: at fused widths the forward computes this phase's block (kernels/"
            f"fused.py), so its {row['phase']} work there is not the phase's power law")


def downgrade(claim: Claim, rows: list[pd.Series | None], quantity: str, scope: Scope
              ) -> Claim:
    """Inconclusive when a grid is too small, a fused width moved the phase's block into the
    forward, or (wall clock) the self-check flagged the run."""
    notes = [n for n in (grid_note(r, scope.limits) for r in rows) if n][:1]
    notes += [n for n in (fused_note(r) for r in rows[:1]) if n]
    if quantity == "seconds" and scope.flagged:
        notes.append("the calibration self-check flagged this run's timings")
    if notes and claim.verdict in (SUPPORTED, REJECTED):
        claim.reason = (f"downgraded from {claim.verdict} ({claim.reason}): "
                        + "; ".join(notes))
        claim.verdict = INCONCLUSIVE
    elif notes and claim.verdict != NOT_MEASURED:
        claim.reason += "; also " + "; ".join(notes)
    return claim


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


# ------------------------------------------------------------------------ exponent claims


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


def evaluate_exponent(spec: ExponentClaim, data: RunData, scope: Scope) -> Claim:
    """One exponent claim against the run's fits."""
    who, options = spec.method, scope.options.get(_variant_key(spec.method, spec.variant))
    row = _fit_row(data, scope, spec.method, options, spec.phase, spec.quantity, spec.axis)
    if row is None and spec.fallback:
        who = spec.fallback
        options = scope.options.get(_variant_key(who, "default"))
        row = _fit_row(data, scope, who, options, spec.phase, spec.quantity, spec.axis)
    label = options_label(options or "", who)
    name = spec.claim.format(who=f"{who} ({label})" if label and who == "subquad" else who)
    claim = Claim(name, spec.predicted)
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
        claim.verdict, claim.reason = verdict_near(lo, hi, _target(spec.target, scope.fixed),
                                                   scope.limits.claim_tolerance)
    else:
        base_lo = float(base["ci_low"]) if base is not None else None
        claim.verdict, claim.reason = verdict_below(lo, hi, _target(spec.target, scope.fixed),
                                                    scope.limits.claim_min_saving, base_lo)
    return downgrade(claim, [row, base], spec.quantity, scope)


def _variant_key(method: str, variant: str) -> str:
    return method if variant == "default" else f"{method}:{variant}"


def _fit_row(data: RunData, scope: Scope, method: str, options: str | None, phase: str,
             quantity: str, axis: str) -> pd.Series | None:
    if options is None:
        return None
    if quantity == "seconds" and axis == "m":  # one memory regime, where it has enough widths
        reg = find_fit(data.fits, method, options, phase, quantity, axis, scope.fixed, "regime")
        if reg is not None and regime_usable(reg):
            return reg
    return find_fit(data.fits, method, options, phase, quantity, axis, scope.fixed)


# --------------------------------------------------------------------------- other claims


def _phase_median(runs: pd.DataFrame, fixed: dict, method: str, options: str,
                  phases: tuple[str, ...], m: float) -> float:
    """Sum over ``phases`` of the median seconds of one series at width m (NaN if absent)."""
    sel = select_rows(runs[(runs["method"] == method) & (runs["options"] == options)], fixed)
    sel = sel[np.isclose(sel["m"].astype(float), m)]
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
        sel = select_rows(runs[(runs["method"] == method) & (runs["options"] == options)
                               & (runs["phase"] == "iteration")], fixed)
        ms = set(sel["m"].astype(float))
        widths = ms if widths is None else widths & ms
    return max(widths) if widths else None


def _lazy_cost(data: RunData, scope: Scope) -> list[Claim]:
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


def _cg_claim(data: RunData, scope: Scope) -> list[Claim]:
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


def _fast_matmul(data: RunData, scope: Scope) -> list[Claim]:
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


def _training_claims(data: RunData, scope: Scope | None = None) -> list[Claim]:
    """Section 6: geometric loss decay, activity near Q(beta), same iterates as dense-gn."""
    tr = data.training
    if tr is None or tr.empty:
        return [Claim(LOSS_CLAIM, "contraction < 1 per step", reason="no training.csv"),
                Claim(ACTIVITY_CLAIM, f"within x{ACTIVITY_RATIO}", reason="no training.csv"),
                Claim(SAME_CLAIM, "same losses", reason="no training.csv")]
    per = tr.groupby(["cell", "iteration"], as_index=False).first().sort_values("iteration")
    return [_loss_claim(per), _activity_claim(tr), _same_iterates(per)]


def _loss_claim(per: pd.DataFrame) -> Claim:
    claim = Claim(LOSS_CLAIM, "contraction < 1 per step")
    rhos, monotone = [], True
    for _, g in per[per["method"].isin(["dense-gn", "subquad"])].groupby("cell"):
        loss = g["loss"].to_numpy(float)
        if len(loss) < 2 or not loss[0] > 0:
            continue
        rhos.append((max(loss[-1], 1e-300) / loss[0]) ** (1.0 / (len(loss) - 1)))
        above = loss[loss > 1e-12 * loss[0]]  # round-off at the floor is not a rise
        monotone &= bool(np.all(np.diff(above) <= 0.01 * above[:-1]))
    if not rhos:
        claim.reason = "no Gauss-Newton training cell"
        return claim
    worst = max(rhos)
    claim.measured = (f"per-step contraction {min(rhos):.3g} to {worst:.3g} over {len(rhos)} "
                      f"cells; monotone: {'yes' if monotone else 'no'}")
    claim.interval = f"[{min(rhos):.3g}, {worst:.3g}]"
    if worst >= 1:
        claim.verdict, claim.reason = REJECTED, f"worst contraction {worst:.3g} >= 1"
    elif monotone:
        claim.verdict, claim.reason = SUPPORTED, "every contraction < 1 and losses monotone"
    else:
        claim.verdict, claim.reason = INCONCLUSIVE, "contraction < 1 but a loss rose by > 1%"
    return claim


def _activity_claim(tr: pd.DataFrame) -> Claim:
    claim = Claim(ACTIVITY_CLAIM, f"ratio within [{1 / ACTIVITY_RATIO:.2g}, {ACTIVITY_RATIO:g}]")
    ratio = tr["active_fraction"] / tr["expected_active_fraction"]
    ratio = ratio.replace([np.inf, -np.inf], np.nan).dropna()
    if ratio.empty:
        claim.reason = "no active fractions recorded"
        return claim
    lo, hi = float(ratio.min()), float(ratio.max())
    claim.measured = (f"active fraction / Q(beta) in [{lo:.3g}, {hi:.3g}] over all layers, "
                      "iterations and cells")
    claim.interval = f"[{lo:.3g}, {hi:.3g}]"
    ok = lo >= 1 / ACTIVITY_RATIO and hi <= ACTIVITY_RATIO
    claim.verdict = SUPPORTED if ok else REJECTED
    claim.reason = "every ratio inside the band" if ok else "a ratio leaves the band"
    return claim


def _same_iterates(per: pd.DataFrame) -> Claim:
    claim = Claim(SAME_CLAIM, f"relative loss difference <= {SAME_ITERATES_RTOL:g}")
    keys = [k for k in ("m", "n", "d", "L", "c", "seed", "threshold", "data") if k in per]
    dense = per[per["method"] == "dense-gn"]
    sub = per[(per["method"] == "subquad") & per["options"].str.contains("solver=cholesky")]
    both = dense.merge(sub, on=[*keys, "iteration"], suffixes=("_d", "_s"))
    if both.empty:
        claim.reason = "no dense-gn and subquad (cholesky) training on the same network"
        return claim
    l0 = both.groupby(keys)["loss_d"].transform("max")
    both = both[both["loss_d"] > 1e-10 * l0]
    rel = (both["loss_s"] - both["loss_d"]).abs() / both["loss_d"].abs().clip(lower=1e-300)
    worst = float(rel.max()) if len(rel) else math.nan
    if not _finite(worst):
        claim.reason = "no iteration above the loss floor"
        return claim
    claim.measured = f"max relative difference {worst:.2g} over {len(rel)} iterations"
    claim.interval = f"<= {worst:.2g}"
    claim.verdict = SUPPORTED if worst <= SAME_ITERATES_RTOL else REJECTED
    claim.reason = f"max {worst:.2g} {'<=' if worst <= SAME_ITERATES_RTOL else '>'} " \
                   f"{SAME_ITERATES_RTOL:g}"
    return claim


OTHER_CLAIMS: tuple[Callable[[RunData, Scope], list[Claim]], ...] = (
    _lazy_cost, _cg_claim, _fast_matmul)


# ------------------------------------------------------------------------------- driver


def scope_of(data: RunData, limits: Limits | None = None) -> Scope | None:
    """The main m sweep's context and the variants the claims refer to (None: no sweep)."""
    fixed = main_context(data.runs)
    if fixed is None:
        return None
    runs = data.runs
    sub = select_rows(runs[runs["method"] == "subquad"], fixed)

    def pick(update: str) -> str | None:
        opts = [o for o in sub.groupby("options")["m"].nunique()
                .sort_values(ascending=False, kind="stable").index
                if f"update={update};" in o + ";"]
        return str(opts[0]) if opts else None

    options = {"subquad": default_options(runs, "subquad", fixed),
               "dense-gn": default_options(runs, "dense-gn", fixed),
               "subquad:lazy": pick("lazy"), "subquad:scatter": pick("scatter")}
    return Scope(fixed, options, trustworthy(data.selfcheck) is False,
                 limits or load_limits())


def evaluate(data: RunData, limits: Limits | None = None) -> tuple[Scope | None, list[Claim]]:
    """Every claim of the paper with its prediction, measurement, verdict and reason."""
    scope = scope_of(data, limits)
    if scope is None:
        why = "no width sweep of a trained method with 3 or more widths in runs.csv"
        rows = [Claim(c.claim.format(who=c.method), c.predicted, reason=why)
                for c in EXPONENT_CLAIMS]
        return None, rows + _training_claims(data) + _axis_claims(data)
    rows = [evaluate_exponent(c, data, scope) for c in EXPONENT_CLAIMS]
    for extra in OTHER_CLAIMS:
        rows += extra(data, scope)
    return scope, rows + _training_claims(data, scope) + _axis_claims(data)


def _axis_claims(data: RunData) -> list[Claim]:
    """Claims on n, d, L, the solver and real data (``axis_claims.py``), where the run varies
    those axes; none otherwise."""
    from subquad.analysis.axis_claims import claims_from_tables  # noqa: PLC0415

    runs = data.all_runs if data.all_runs is not None else data.runs
    return [Claim(c.claim, c.predicted, c.measured, c.interval, c.verdict, c.reason)
            for c in claims_from_tables(runs, data.training, data.fits)]


def scope_text(scope: Scope | None) -> str:
    """'the longest width sweep (n=16, ...), subquad `...`' for the report."""
    if scope is None:
        return ""
    machine = scope.fixed.get("machine")
    return (f"Measured on the longest width sweep ({context_title(scope.fixed, ('m',))}"
            f"{'; machine ' + str(machine) if machine else ''}), subquad configuration "
            f"`{scope.options.get('subquad') or 'default'}`, dense-gn "
            f"`{scope.options.get('dense-gn') or '-'}`. ")


def write_claims(run_dir: RunDir | Path, data: RunData, limits: Limits | None = None
                 ) -> tuple[Scope | None, pd.DataFrame]:
    """Evaluate the claims of a loaded run and write ``run_dir/claims.csv``."""
    scope, rows = evaluate(data, limits)
    frame = pd.DataFrame([asdict(c) for c in rows])
    RunDir.of(run_dir).write_table("claims", frame)
    return scope, frame

