"""The one claims engine: the ``Claim`` row of ``claims.csv``, the verdict words, the rules
(every number from ``[claims]`` of limits.toml), the one downgrade path, and the registry.

- ``below`` (m^(2 - Omega(1))): supported when the interval's upper bound is below 2 and below
  the dense-gn baseline's lower bound; not supported when its lower bound is at or above
  2 - min_saving (no real saving) or at or above the baseline's lower bound; else inconclusive.
- ``near`` (~ x^k): supported when the whole interval lies in k +- tolerance, not supported
  when it lies wholly outside, inconclusive otherwise.
- ``band`` (a ratio near 1): supported when every ratio lies in [1/r, r], else not supported.
- ``downgrade``, applied by ``evaluate`` to every claim of every family: a supported / not
  supported verdict becomes inconclusive when a fit it rests on (``Claim.fits``, in an axis of
  grid_axes) has fewer than min_fit_points points or spans less than min_decades, when a fused
  width moved the phase's block into the forward, or (``Claim.quantity`` seconds) when the
  calibration self-check flagged the run. The reason says which rule decided and each downgrade.

A claim is a function ``(RunData, Scope) -> list[Claim]`` registered in a family with
``@register(family)``; families are evaluated in the order ``catalog`` lists them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from subquad.analysis.fit import REGIME_MIN_DECADES, REGIME_MIN_POINTS, trustworthy
from subquad.analysis.limits import Limits, load_limits
from subquad.analysis.rundata import (
    RunData,
    default_options,
    main_context,
    parse_range,
    select_rows,
)
from subquad.results.format import parse_context, same_value, series_label
from subquad.vocabulary import (
    INCONCLUSIVE,
    NOT_MEASURED,
    REJECTED,
    SUPPORTED,
    VARIANT,
)

CLAIM_COLUMNS = ("claim", "predicted", "measured", "interval", "verdict", "reason")


@dataclass
class Claim:
    """One row of ``claims.csv`` (CLAIM_COLUMNS), with what ``downgrade`` judges it by: the
    fitted rows it rests on and the quantity measured."""

    claim: str
    predicted: str
    measured: str = ""
    interval: str = ""
    verdict: str = NOT_MEASURED
    reason: str = ""
    fits: Sequence[pd.Series | None] = field(default=(), repr=False, compare=False)
    quantity: str = field(default="", compare=False)


@dataclass
class Scope:
    """What the claims are measured on: the main m sweep (``fixed``; None when the run has
    none), each method's main variant, the self-check flag and the limits."""

    fixed: dict | None
    options: dict[str, str | None]  #: default, lazy, scatter (subquad) and dense-gn
    flagged: bool
    limits: Limits


ClaimFn = Callable[[RunData, Scope], list[Claim]]
#: family -> its claim functions, in registration order
FAMILIES: dict[str, list[ClaimFn]] = {}
#: claim functions that only speak of the main m sweep (skipped when the run has none)
SWEEP_ONLY: set[ClaimFn] = set()


def register(family: str, sweep: bool = False) -> Callable[[ClaimFn], ClaimFn]:
    """Decorator: add a claim function to ``family`` (its rows follow the earlier ones');
    ``sweep``: it needs the main m sweep."""
    def add(fn: ClaimFn) -> ClaimFn:
        FAMILIES.setdefault(family, []).append(fn)
        SWEEP_ONLY.update([fn] if sweep else [])
        return fn
    return add


# ------------------------------------------------------------------------------ rules


def finite(*xs: float | None) -> bool:
    """Every value is a finite number."""
    return all(x is not None and np.isfinite(x) for x in xs)


def verdict_below(lo: float, hi: float, limit: float, min_saving: float,
                  baseline_lo: float | None = None) -> tuple[str, str]:
    """Exponent strictly below ``limit`` (and below the baseline's lower bound) by its CI."""
    if not finite(lo, hi):
        return NOT_MEASURED, "no fitted exponent"
    has_base = finite(baseline_lo)
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
    if not finite(lo, hi):
        return NOT_MEASURED, "no fitted exponent"
    band = f"{target:g} +- {tol:g}"
    if lo >= target - tol and hi <= target + tol:
        return SUPPORTED, f"interval [{lo:.2f}, {hi:.2f}] inside {band}"
    if hi < target - tol or lo > target + tol:
        return REJECTED, f"interval [{lo:.2f}, {hi:.2f}] outside {band}"
    return INCONCLUSIVE, f"interval [{lo:.2f}, {hi:.2f}] overlaps the edge of {band}"


def verdict_band(lo: float, hi: float, ratio: float) -> str:
    """Every ratio (min ``lo``, max ``hi``) within [1/ratio, ratio]: supported, else not."""
    return SUPPORTED if lo >= 1 / ratio and hi <= ratio else REJECTED


def activity_ratio(training: pd.DataFrame) -> pd.Series:
    """Active fraction / Q(beta) of every training row that records both."""
    ratio = training["active_fraction"] / training["expected_active_fraction"]
    return ratio.replace([np.inf, -np.inf], np.nan).dropna()


def loss_gap(dense: pd.DataFrame, sub: pd.DataFrame, keys: list[str]) -> pd.Series:
    """Relative loss difference of two trainers on the same networks and steps (``keys``),
    where dense-gn's loss is above 1e-10 of its network's largest (round-off below)."""
    both = dense.merge(sub, on=keys, suffixes=("_d", "_s"))
    if both.empty:
        return pd.Series(dtype=float)
    net = [k for k in keys if k != "iteration"]
    both = both[both["loss_d"] > 1e-10 * both.groupby(net)["loss_d"].transform("max")]
    return (both["loss_s"] - both["loss_d"]).abs() / both["loss_d"].abs().clip(lower=1e-300)


def variants(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """A table's rows split per variant (``vocabulary.VARIANT``), named
    'subquad-damped (cholesky, auto, damping=0.1), adaptive threshold[, data digits]' (the data
    set named where the table has several)."""
    keys = [c for c in VARIANT if c in table]
    several = "data" in table and table["data"].nunique() > 1
    out = []
    for key, g in table.fillna({k: "" for k in keys}).groupby(keys, sort=True):
        v = dict(zip(keys, key, strict=True))
        name = series_label(v["method"], v["options"], v.get("label", ""))
        name += f", {v['threshold']} threshold" if v.get("threshold") else ""
        out.append((name + (f", data {v['data']}" if several else ""), g))
    return out


def same_options(a: str, b: str) -> bool:
    """Two options strings agree on every option both set (e.g. solver, lr, damping)."""
    oa, ob = parse_context(a), parse_context(b)
    return all(same_value(oa[k], ob[k]) for k in oa.keys() & ob.keys())


# -------------------------------------------------------------------------- downgrade


def _points(row: pd.Series) -> int:
    return int(row["n_points"]) if pd.notna(row.get("n_points", np.nan)) else 0


def fit_span(fit_range: str, axis: str) -> tuple[float, float] | None:
    """(lo, hi) of ``axis`` in a fit range ('m=256..16384;n=4..64': the axis part)."""
    parts = str(fit_range).split(";")
    return parse_range(next((p for p in parts if p.startswith(f"{axis}=")), parts[0]))


def _decades(row: pd.Series) -> float:
    rng = fit_span(row.get("fit_range", ""), str(row.get("axis", "m")))
    return math.log10(rng[1] / rng[0]) if rng and rng[0] > 0 else math.nan


def regime_usable(row: pd.Series) -> bool:
    """A single-regime fit judges a claim with >= 5 widths over >= half a decade."""
    return _points(row) >= REGIME_MIN_POINTS and _decades(row) >= REGIME_MIN_DECADES


def grid_note(row: pd.Series | None, limits: Limits) -> str:
    """Why a fit's grid is too small to judge scaling ('' when it is large enough)."""
    if row is None or str(row.get("axis", "m")) not in limits.claim_grid_axes:
        return ""
    n, decades = _points(row), _decades(row)
    regime = str(row.get("fit", "")) == "regime"
    need_n = REGIME_MIN_POINTS if regime else limits.claim_min_points
    need_d = REGIME_MIN_DECADES if regime else limits.claim_min_decades
    if n >= need_n and decades >= need_d:
        return ""
    return (f"grid too small to judge ({n} points over {decades:.2g} decades; needs >= "
            f"{need_n} over >= {need_d:g})")


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


def downgrade(claim: Claim, scope: Scope) -> Claim:
    """Inconclusive when a grid is too small, a fused width moved the phase's block into the
    forward, or (wall clock) the self-check flagged the run."""
    notes = [n for n in (grid_note(r, scope.limits) for r in claim.fits) if n][:1]
    notes += [n for n in (fused_note(r) for r in claim.fits[:1]) if n]
    if claim.quantity == "seconds" and scope.flagged:
        notes.append("the calibration self-check flagged this run's timings")
    if notes and claim.verdict in (SUPPORTED, REJECTED):
        claim.reason = (f"downgraded from {claim.verdict} ({claim.reason}): "
                        + "; ".join(notes))
        claim.verdict = INCONCLUSIVE
    elif notes and claim.verdict != NOT_MEASURED:
        claim.reason += "; also " + "; ".join(notes)
    return claim


# ------------------------------------------------------------------------------- driver


def scope_of(data: RunData, limits: Limits | None = None) -> Scope:
    """The main m sweep's context and the variants the claims refer to."""
    runs, fixed = data.runs, main_context(data.runs)
    options: dict[str, str | None] = {}
    if fixed is not None:
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


def evaluate(data: RunData, families: Sequence[str], limits: Limits | None = None
             ) -> tuple[Scope, list[Claim]]:
    """Every claim of ``families`` (in that order), each through ``downgrade``."""
    scope = scope_of(data, limits)
    fns = [fn for fam in families for fn in FAMILIES.get(fam, [])
           if scope.fixed is not None or fn not in SWEEP_ONLY]
    return scope, [downgrade(c, scope) for fn in fns for c in fn(data, scope)]


def claims_frame(claims: Sequence[Claim]) -> pd.DataFrame:
    """The claims as a frame in CLAIM_COLUMNS order."""
    return pd.DataFrame([[getattr(c, k) for k in CLAIM_COLUMNS] for c in claims],
                        columns=list(CLAIM_COLUMNS))
