"""The Markdown report of a run: environment, how to reproduce it, the paper's claims with
verdicts computed from the fitted exponents, the crossover and speed-up, the self-check, figures.

Every verdict is derived from the numbers of this run (``fits.csv``, ``runs.csv``,
``training.csv``, ``crossover.csv``, ``selfcheck.csv``); an input that is absent turns its
section or row into "not measured in this run" instead of an error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from subquad.analysis.fit import REGIME_MIN_DECADES, REGIME_MIN_POINTS
from subquad.analysis.plots import (
    FIGURES,
    RunData,
    context_matches,
    context_title,
    crossover_value,
    exponent_text,
    find_fit,
    fmt_seconds,
    load_run,
    main_context,
    median_ci,
    options_label,
    parse_range,
    read_table,
    select_rows,
    series_label,
)
from subquad.files import atomic_write_text
from subquad.memory import fmt_bytes

NOT_MEASURED = "not measured in this run"
SUPPORTED, INCONCLUSIVE, REJECTED = "supported", "inconclusive", "not supported"
#: an exponent within this distance of its prediction counts as "~ m^k" (the self-check's 0.15)
TOLERANCE = 0.15
#: m^(2 - Omega(1)) needs a real saving: a lower bound above 2 - MIN_SAVING shows none
MIN_SAVING = 0.05
#: the sparsifier's warning ratio of ALGORITHM.md section 1 (active fraction vs Q(beta))
ACTIVITY_RATIO = 1.5
#: MEASUREMENT.md: a scaling exponent needs at least 6 points over at least one decade
MIN_FIT_POINTS = 6
MIN_DECADES = 1.0
#: relative loss difference under which two trainers "produce the same iterates"
SAME_ITERATES_RTOL = 1e-4

FIGURE_CAPTIONS = {
    "time_vs_m": "Per-iteration time vs width, with fitted power laws, references and m*",
    "phases_vs_m": "Per-phase time vs width",
    "init_vs_iteration": "Initialisation vs one iteration",
    "work_vs_m": "Counted multiply-adds and bytes vs width",
    "time_vs_n_d": "Per-iteration time vs n and d",
    "training": "Loss, active fraction per layer and flips over training",
    "exponent_vs_c": "Per-iteration exponent and convergence vs c",
    "ablation": "Update modes and solvers vs dense Gauss-Newton",
    "local_slopes": "Local slopes between neighbouring widths",
}


@dataclass
class Claim:
    """One row of the claims table."""

    claim: str
    predicted: str
    measured: str
    verdict: str


# -- verdict rules -----------------------------------------------------------------------------


def _finite(*xs: float | None) -> bool:
    """True when every value is a finite number."""
    return all(x is not None and np.isfinite(x) for x in xs)


def verdict_below(lo: float, hi: float, limit: float = 2.0,
                  baseline_lo: float | None = None) -> str:
    """Exponent strictly below ``limit`` (and below the baseline's lower bound) by its CI."""
    if not _finite(lo, hi):
        return NOT_MEASURED
    has_base = _finite(baseline_lo)
    if hi < limit and (not has_base or hi < baseline_lo):
        return SUPPORTED
    if lo >= limit - MIN_SAVING or (has_base and lo >= baseline_lo):
        return REJECTED
    return INCONCLUSIVE


def verdict_near(lo: float, hi: float, target: float, tol: float = TOLERANCE) -> str:
    """Exponent CI inside target +- tol: supported; wholly outside: not; else inconclusive."""
    if not _finite(lo, hi):
        return NOT_MEASURED
    if lo >= target - tol and hi <= target + tol:
        return SUPPORTED
    if hi < target - tol or lo > target + tol:
        return REJECTED
    return INCONCLUSIVE


def _ci(row: pd.Series | None) -> tuple[float, float]:
    """(ci_low, ci_high) of a fitted row, NaN when absent."""
    if row is None:
        return math.nan, math.nan
    return float(row["ci_low"]), float(row["ci_high"])


def _measured(row: pd.Series | None, axis: str = "m", extra: str = "") -> str:
    """'1.76 [1.70, 1.82] (7 points, m 512-32768)' or NOT_MEASURED."""
    text = exponent_text(row)
    if not text:
        return NOT_MEASURED
    info = []
    if "n_points" in row and pd.notna(row["n_points"]):
        info.append(f"{int(row['n_points'])} points")
    rng = str(row.get("fit_range", "") or "")
    if rng:
        info.append(rng if "=" in rng else f"{axis} {rng}")
    kind = str(row.get("fit", "") or "")
    if kind == "regime":
        info.append("single-regime fit: weights beyond the last cache level")
    elif kind == "slope" and str(row.get("quantity", "")) == "seconds":
        info.append("fit over all widths")
    out = f"{axis}^{text}" + (f" ({', '.join(info)})" if info else "")
    return out + (f"; {extra}" if extra else "")


# -- claims ----------------------------------------------------------------------------------


@dataclass
class Scope:
    """What the claims are measured on: the main m sweep and subquad's default options."""

    fixed: dict
    sub_options: str
    lazy_options: str | None
    scatter_options: str | None
    #: the calibration self-check failed: wall-clock verdicts are downgraded to inconclusive
    flagged: bool = False


def _scope(data: RunData) -> Scope | None:
    """The main m sweep's context and the subquad configurations the claims refer to."""
    fixed = main_context(data.runs)
    if fixed is None:
        return None
    sub = select_rows(data.runs[data.runs["method"] == "subquad"], fixed)
    flagged = trustworthy(data) is False
    if sub.empty:
        return Scope(fixed, "", None, None, flagged)
    counts = sub.groupby("options")["m"].nunique().sort_values(ascending=False, kind="stable")
    default = str(counts.index[0])

    def pick(update: str) -> str | None:
        opts = [o for o in counts.index if f"update={update}" in o]
        return str(opts[0]) if opts else None

    return Scope(fixed, default, pick("lazy"), pick("scatter"), flagged)


def _fit(data: RunData, scope: Scope, method: str, options: str | None, phase: str,
         quantity: str) -> pd.Series | None:
    """The m-exponent row of one series in the claims' context."""
    if options is None:
        return None
    if quantity == "seconds":
        reg = find_fit(data.fits, method, options, phase, quantity, "m", scope.fixed, "regime")
        if reg is not None and _regime_usable(reg):
            return reg
    return find_fit(data.fits, method, options, phase, quantity, "m", scope.fixed)


def _decades(row: pd.Series) -> float:
    rng = parse_range(str(row.get("fit_range", "")))
    return math.log10(rng[1] / rng[0]) if rng and rng[0] > 0 else math.nan


def _regime_usable(row: pd.Series) -> bool:
    """A single-regime fit judges a claim with >= 5 widths over >= half a decade."""
    n = int(row["n_points"]) if pd.notna(row.get("n_points", np.nan)) else 0
    return n >= REGIME_MIN_POINTS and _decades(row) >= REGIME_MIN_DECADES


def _grid_note(row: pd.Series | None) -> str:
    """Why a fit's grid is too small to judge scaling ('' when it is large enough)."""
    if row is None:
        return ""
    n = int(row["n_points"]) if pd.notna(row.get("n_points", np.nan)) else 0
    decades = _decades(row)
    regime = str(row.get("fit", "")) == "regime"
    need_n = REGIME_MIN_POINTS if regime else MIN_FIT_POINTS
    need_d = REGIME_MIN_DECADES if regime else MIN_DECADES
    if n >= need_n and decades >= need_d:
        return ""
    return (f"grid too small to judge ({n} points over {decades:.2g} decades; needs >= "
            f"{need_n} over >= {need_d:g})")


def _gated(claim: Claim, rows: list[pd.Series | None], quantity: str, scope: Scope) -> Claim:
    """Downgrade a verdict to inconclusive when the grid is too small or timing is untrusted."""
    notes = [n for n in (_grid_note(r) for r in rows) if n][:1]
    if quantity == "seconds" and scope.flagged:
        notes.append("the self-check flagged this run's timings")
    if notes and claim.verdict in (SUPPORTED, REJECTED):
        claim.verdict = INCONCLUSIVE
    if notes and claim.measured != NOT_MEASURED:
        claim.measured += "; " + "; ".join(notes)
    return claim


def _below_claim(scope: Scope, name: str, predicted: str, row: pd.Series | None,
                 baseline: pd.Series | None, quantity: str, extra: str = "") -> Claim:
    """A claim 'exponent < 2 (and below the dense baseline)', gated."""
    base_lo = _ci(baseline)[0] if baseline is not None else None
    if baseline is not None:
        extra = "; ".join(x for x in (f"dense-gn {exponent_text(baseline)}", extra) if x)
    claim = Claim(name, predicted, _measured(row, extra=extra),
                  verdict_below(*_ci(row), 2.0, base_lo))
    return _gated(claim, [row, baseline], quantity, scope)


def _near_claim(scope: Scope, name: str, row: pd.Series | None, quantity: str,
                target: float = 2.0) -> Claim:
    """A claim 'exponent ~ target', gated."""
    claim = Claim(name, f"{target:g}", _measured(row), verdict_near(*_ci(row), target))
    return _gated(claim, [row], quantity, scope)


def _scaling_claims(data: RunData, scope: Scope) -> list[Claim]:
    """Init ~ m^2, per-iteration m^(2 - Omega(1)) in seconds and work, dense-gn ~ m^2."""
    c = float(scope.fixed.get("c", math.nan))
    pred_sub = f"< 2, about 2 - c = {2 - c:g} up to a log factor" if np.isfinite(c) else "< 2"
    out = []
    for quantity, name in (("seconds", "seconds"), ("work", "counted work, weights drawn")):
        who, init = "subquad", _fit(data, scope, "subquad", scope.sub_options, "init", quantity)
        if init is None:
            who, init = "dense-gn", _fit(data, scope, "dense-gn", "", "init", quantity)
        out.append(_near_claim(scope, f"initialisation costs ~ m^2 ({who}, {name})", init,
                               quantity))
    for quantity, name in (("seconds", "time"), ("work", "counted work")):
        sub = _fit(data, scope, "subquad", scope.sub_options, "iteration", quantity)
        dense = _fit(data, scope, "dense-gn", "", "iteration", quantity)
        out.append(_below_claim(scope, f"per-iteration {name} is m^(2 - Omega(1)) "
                                f"({series_label('subquad', scope.sub_options)})", pred_sub,
                                sub, dense, quantity))
    for quantity, name in (("seconds", "time"), ("work", "counted work")):
        dense = _fit(data, scope, "dense-gn", "", "iteration", quantity)
        out.append(_near_claim(scope, f"dense-gn per-iteration {name} ~ m^2 (baseline sanity)",
                               dense, quantity))
    return out


def _sparsifier_claims(data: RunData, scope: Scope) -> list[Claim]:
    """Shifted-ReLU sparsifier: forward m s and backward s^2 work exponents."""
    c = float(scope.fixed.get("c", math.nan))
    out = []
    for phase, pred in (("forward", 2 - c), ("backward", 2 - 2 * c)):
        sub = _fit(data, scope, "subquad", scope.sub_options, phase, "work")
        dense = _fit(data, scope, "dense-gn", "", phase, "work")
        what = "m s" if phase == "forward" else "s^2"
        out.append(_below_claim(scope, f"sparsifier: {phase} counted work ~ {what}",
                                f"about {pred:g} (< 2)" if np.isfinite(pred) else "< 2",
                                sub, dense, "work"))
    return out


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
        total += median_ci(vals)[0]
    return total


def _largest_common_m(runs: pd.DataFrame, fixed: dict, series: list[tuple[str, str]]
                      ) -> float | None:
    """The largest width measured (iteration phase) by every one of ``series``."""
    widths = None
    for method, options in series:
        sel = select_rows(runs[(runs["method"] == method) & (runs["options"] == options)
                           & (runs["phase"] == "iteration")], fixed)
        ms = set(sel["m"].astype(float))
        widths = ms if widths is None else widths & ms
    return max(widths) if widths else None


def _lazy_claims(data: RunData, scope: Scope) -> list[Claim]:
    """Lazy low-rank maintenance: the fold's exponent and its cost next to the scatter update."""
    fold = _fit(data, scope, "subquad", scope.lazy_options, "fold", "work")
    extra = ""
    if scope.lazy_options and scope.scatter_options:
        m = _largest_common_m(data.runs, scope.fixed, [("subquad", scope.lazy_options),
                                                         ("subquad", scope.scatter_options)])
        if m is not None:
            lazy = _phase_median(data.runs, scope.fixed, "subquad", scope.lazy_options,
                                 ("update", "fold"), m)
            scat = _phase_median(data.runs, scope.fixed, "subquad", scope.scatter_options,
                                 ("update",), m)
            if _finite(lazy, scat):
                extra = (f"at m={m:.0f}: lazy update+fold {fmt_seconds(lazy)} vs scatter "
                         f"update {fmt_seconds(scat)} per iteration")
    name = options_label(scope.lazy_options) if scope.lazy_options else "lazy"
    scatter = _fit(data, scope, "subquad", scope.scatter_options, "update", "work")
    return [_below_claim(scope, f"lazy low-rank ({name}): amortised fold work per iteration "
                         "< m^2", "< 2 only with fast rectangular multiplication; 2 with a "
                         "BLAS fold", fold, None, "work", extra),
            _below_claim(scope, "sparse scatter update (alternative to the fold) ~ n s^2",
                         "about 2 - 2c (< 2)", scatter, None, "work")]


def _cg_iterations(data: RunData, scope: Scope) -> tuple[str, str]:
    """Measured text and verdict of 'sketch-preconditioned CG needs few iterations at any m'."""
    runs = select_rows(data.runs[(data.runs["method"] == "subquad")
                             & data.runs["options"].str.contains("solver=pcg")], scope.fixed)
    raw = read_table(data.run_dir / "runs.csv")
    failed = 0
    if raw is not None and "status" in raw:
        failed = int((raw["status"] == "cg-not-converged").sum())
    it = runs[runs["phase"] == "iteration"]
    if "cg_iters" not in it or it["cg_iters"].dropna().empty:
        return NOT_MEASURED, NOT_MEASURED
    med = it.dropna(subset=["cg_iters"]).groupby("m")["cg_iters"].median().sort_index()
    growth = float(med.iloc[-1] / max(med.iloc[0], 1.0))
    text = (f"median CG iterations {med.iloc[0]:.3g} at m={med.index[0]:.0f} -> "
            f"{med.iloc[-1]:.3g} at m={med.index[-1]:.0f}; {failed} non-converged samples")
    chol = [o for o in set(data.runs["options"]) if "solver=cholesky" in o]
    pcg = sorted(set(runs["options"]))
    if chol and pcg:
        m = _largest_common_m(data.runs, scope.fixed, [("subquad", chol[0]), ("subquad", pcg[0])])
        if m is not None:
            t_p = _phase_median(data.runs, scope.fixed, "subquad", pcg[0], ("solve",), m)
            t_c = _phase_median(data.runs, scope.fixed, "subquad", chol[0], ("solve",), m)
            if _finite(t_p, t_c) and t_c > 0:
                text += (f"; solve at m={m:.0f}: {options_label(pcg[0]).split(',')[0]} "
                         f"{fmt_seconds(t_p)} vs cholesky {fmt_seconds(t_c)}")
    if failed or growth > 3.0:
        return text, REJECTED
    return text, SUPPORTED if growth <= 1.5 else INCONCLUSIVE


def _solver_claims(data: RunData, scope: Scope) -> list[Claim]:
    """Tensor sketching + preconditioning, and the (absent) fast rectangular multiplication."""
    text, verdict = _cg_iterations(data, scope)
    out = [Claim("sketching + preconditioning: CG converges in a few iterations, flat in m",
                 "O(1) iterations (k a few times n)", text, verdict)]
    fold = _fit(data, scope, "subquad", scope.lazy_options, "fold", "work")
    measured = ("not implemented with fast matrix multiplication: the fold is an ordinary BLAS "
                "GEMM, 2 m^2 r per fold, amortised 2 n m^2 per iteration")
    if fold is not None:
        measured += f"; measured fold exponent m^{exponent_text(fold)}"
    out.append(Claim("fast rectangular multiplication: fold m x m^a x m in m^(2+o(1))",
                     "amortised n m^(2-a) per iteration", measured, "not implemented"))
    return out


LOSS_CLAIM = "training: loss falls geometrically (Gauss-Newton)"
ACTIVITY_CLAIM = "training: active fraction stays near Q(beta)"


def _training_claims(data: RunData) -> list[Claim]:
    """Section 6: geometric loss decay, activity near Q(beta), same iterates as dense-gn."""
    tr = data.training
    if tr is None or not {"cell", "iteration", "loss", "method", "options"} <= set(tr.columns):
        return [Claim(name, pred, NOT_MEASURED, NOT_MEASURED) for name, pred in (
            (LOSS_CLAIM, "contraction < 1 per step"),
            (ACTIVITY_CLAIM, f"within x{ACTIVITY_RATIO}"),
            ("training: subquad (exact solve) reproduces dense-gn's iterates", "same losses"))]
    per = tr.groupby(["cell", "iteration"], as_index=False).first().sort_values("iteration")
    return [_loss_claim(per), _activity_claim(tr), _same_iterates(per)]


def _loss_claim(per: pd.DataFrame) -> Claim:
    """Per-step contraction of the Gauss-Newton losses (one row per cell and iteration)."""
    rhos, monotone = [], True
    for _, g in per[per["method"].isin(["dense-gn", "subquad"])].groupby("cell"):
        loss = g["loss"].to_numpy(float)
        if len(loss) < 2 or not loss[0] > 0:
            continue
        rhos.append((max(loss[-1], 1e-300) / loss[0]) ** (1.0 / (len(loss) - 1)))
        above = loss[loss > 1e-12 * loss[0]]  # round-off at the floor is not a rise
        monotone &= bool(np.all(np.diff(above) <= 0.01 * above[:-1]))
    if not rhos:
        return Claim(LOSS_CLAIM, "contraction < 1 per step", NOT_MEASURED, NOT_MEASURED)
    worst = max(rhos)
    verdict = REJECTED if worst >= 1 else (SUPPORTED if monotone else INCONCLUSIVE)
    return Claim(LOSS_CLAIM, "contraction < 1 per step",
                 f"per-step contraction {min(rhos):.3g} to {worst:.3g} over {len(rhos)} cells; "
                 f"monotone: {'yes' if monotone else 'no'}", verdict)


def _activity_claim(tr: pd.DataFrame) -> Claim:
    """Active fraction / Q(beta) over every layer, iteration and cell."""
    predicted = f"ratio within [{1 / ACTIVITY_RATIO:.2g}, {ACTIVITY_RATIO:g}]"
    if not {"active_fraction", "expected_active_fraction"} <= set(tr.columns):
        return Claim(ACTIVITY_CLAIM, predicted, NOT_MEASURED, NOT_MEASURED)
    ratio = tr["active_fraction"] / tr["expected_active_fraction"]
    ratio = ratio.replace([np.inf, -np.inf], np.nan).dropna()
    if ratio.empty:
        return Claim(ACTIVITY_CLAIM, predicted, NOT_MEASURED, NOT_MEASURED)
    lo, hi = float(ratio.min()), float(ratio.max())
    ok = lo >= 1 / ACTIVITY_RATIO and hi <= ACTIVITY_RATIO
    return Claim(ACTIVITY_CLAIM, predicted, f"active fraction / Q(beta) in [{lo:.3g}, "
                 f"{hi:.3g}] over all layers, iterations and cells", SUPPORTED if ok else REJECTED)


def _same_iterates(per: pd.DataFrame) -> Claim:
    """Max relative loss difference between dense-gn and subquad (cholesky) on one network."""
    name = "training: subquad (exact solve) reproduces dense-gn's iterates"
    keys = [k for k in ("m", "n", "d", "L", "c", "seed", "threshold", "data") if k in per]
    dense = per[per["method"] == "dense-gn"]
    sub = per[(per["method"] == "subquad") & per["options"].str.contains("solver=cholesky")]
    both = dense.merge(sub, on=[*keys, "iteration"], suffixes=("_d", "_s"))
    if both.empty:
        return Claim(name, "same losses", NOT_MEASURED, NOT_MEASURED)
    l0 = both.groupby(keys)["loss_d"].transform("max")
    both = both[both["loss_d"] > 1e-10 * l0]
    rel = (both["loss_s"] - both["loss_d"]).abs() / both["loss_d"].abs().clip(lower=1e-300)
    worst = float(rel.max()) if len(rel) else math.nan
    v = (SUPPORTED if worst <= SAME_ITERATES_RTOL else REJECTED) if _finite(worst) \
        else NOT_MEASURED
    return Claim(name, f"relative loss difference <= {SAME_ITERATES_RTOL:g}",
                 f"max relative difference {worst:.2g} over {len(rel)} iterations", v)


def claims(data: RunData) -> list[Claim]:
    """Every claim of the paper with its prediction, measurement and verdict."""
    scope = _scope(data) if data.runs is not None else None
    if scope is None:
        rows = [Claim(name, pred, NOT_MEASURED, NOT_MEASURED) for name, pred in (
            ("initialisation costs ~ m^2", "2"),
            ("per-iteration time is m^(2 - Omega(1))", "< 2"),
            ("per-iteration counted work is m^(2 - Omega(1))", "< 2"),
            ("dense-gn per-iteration time ~ m^2 (baseline sanity)", "2"),
            ("fast rectangular multiplication", "n m^(2-a)"))]
        rows[-1].verdict = "not implemented"
        return rows + _training_claims(data)
    return (_scaling_claims(data, scope) + _sparsifier_claims(data, scope)
            + _lazy_claims(data, scope) + _solver_claims(data, scope) + _training_claims(data))


# -- sections --------------------------------------------------------------------------------

ENV_KEYS = (
    ("CPU", ("cpu_model", "cpu", "processor", "cpu.model")),
    ("cores", ("cores", "cpu_count", "n_cores")),
    ("usable cores", ("usable_cores",)),
    ("memory", ("memory_bytes", "memory", "memory_gb", "mem_total")),
    ("BLAS (threads)", ("blas", "threadpoolctl", "blas_info")),
    ("numba threads", ("numba.num_threads", "numba_threads", "numba")),
    ("GPU", ("gpu.name", "gpu", "gpu_name")),
    ("GPU driver", ("gpu.driver", "gpu_driver")),
    ("Python", ("python",)),
    ("versions", ("versions", "packages")),
    ("git commit", ("git", "git_commit", "commit")),
    ("date", ("date_utc", "date", "timestamp")),
)


def _env_lookup(env: dict, path: str) -> tuple[bool, object]:
    """Value of a dotted key in ``env`` (found, value)."""
    cur: object = env
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return False, None
        cur = cur[part]
    return True, cur


def _fmt_blas(libs: object) -> str:
    """'openblas 0.3.27 (pthreads): 2 threads; ...' from threadpoolctl records."""
    if not isinstance(libs, list):
        return _fmt_env(libs)
    parts = []
    for lib in libs:
        if not isinstance(lib, dict):
            parts.append(_fmt_env(lib))
            continue
        name = lib.get("internal_api") or lib.get("vendor") or lib.get("user_api") or "?"
        words = [str(name), str(lib.get("version") or ""),
                 f"({lib['threading_layer']})" if lib.get("threading_layer") else ""]
        threads = lib.get("num_threads", lib.get("threads"))
        parts.append(" ".join(w for w in words if w) + f": {threads} threads")
    return "; ".join(parts) or "none"


def _fmt_git(git: object) -> str:
    """'abc1234 (dirty)' from a {commit, dirty} record or a bare commit string."""
    if not isinstance(git, dict):
        return _fmt_env(git)
    commit = git.get("commit") or "unknown (not a git checkout)"
    return f"{commit}{' (uncommitted changes)' if git.get('dirty') else ''}"


def _fmt_env(value: object, key: str = "") -> str:
    """Readable one-line text of an environment value (dicts, lists of dicts, scalars)."""
    if value is None or value == "":
        return "none"
    if key.endswith("_bytes") and isinstance(value, int | float):
        return fmt_bytes(float(value))
    if key.endswith("_gb") and isinstance(value, int | float):
        return f"{value:g} GB"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt_env(v, str(k))}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return "; ".join(_fmt_env(v) for v in value) or "none"
    return str(value).replace("|", "/").replace("\n", " ")


FORMATTERS = {"blas": _fmt_blas, "threadpoolctl": _fmt_blas, "git": _fmt_git}


def environment_section(env: dict) -> str:
    """The environment table; keys it does not know are listed after the known ones."""
    if not env:
        return "## Environment\n\nEnvironment " + NOT_MEASURED + " (no environment.json).\n"
    lines = ["## Environment", "", "| item | value |", "|---|---|"]
    used: set[str] = set()
    for label, paths in ENV_KEYS:
        if label == "GPU driver" and not env.get("gpu"):
            continue
        for path in paths:
            found, value = _env_lookup(env, path)
            if found:
                top, leaf = path.split(".")[0], path.split(".")[-1]
                text = FORMATTERS.get(top, lambda v, k=leaf: _fmt_env(v, k))(value)
                lines.append(f"| {label} | {text} |")
                used.add(top)
                break
        else:
            lines.append(f"| {label} | not recorded |")
    for key, value in env.items():
        if key not in used:
            lines.append(f"| {key} | {_fmt_env(value, key)} |")
    return "\n".join(lines) + "\n"


def reproduce_section(data: RunData) -> str:
    """The commands that reproduce this run."""
    out = str(data.run_dir)
    names = []
    if data.runs is not None and "experiment" in data.runs:
        names = sorted(n for n in set(data.runs["experiment"]) if n)
    if not names:
        return ("## Reproduce\n\nExperiment name " + NOT_MEASURED
                + f" (no runs.csv); afterwards: `subquad fit {out}`, `subquad plot {out}`, "
                f"`subquad report {out}`.\n")
    sweeps = "\n".join(f"subquad sweep experiments/{n}.toml --out {out}" for n in names)
    return ("## Reproduce\n\n```sh\n" + sweeps + f"\nsubquad fit {out}\nsubquad plot {out}\n"
            f"subquad report {out}\n```\n")


def claims_section(data: RunData) -> str:
    """The table claim | predicted | measured | verdict, and how verdicts are decided."""
    scope = _scope(data) if data.runs is not None else None
    where = (f"Measured on the longest width sweep ({context_title(scope.fixed, ('m',))}"
             f"{'; machine ' + str(scope.fixed['machine']) if scope.fixed.get('machine') else ''})"
             f", subquad configuration `{scope.sub_options or 'default'}`. "
             if scope else "")
    lines = ["## Claims of the paper", "",
             where + "Exponents are of m with 95% confidence intervals from `fits.csv`."
             + ("" if data.fits is not None else
                " **No exponent fitted in this run** (no series with 3 or more widths, or "
                f"`subquad fit {data.run_dir}` not run yet)."), "",
             "| claim | predicted | measured | verdict |", "|---|---|---|---|"]
    for c in claims(data):
        verdict = f"**{c.verdict}**" if c.verdict in (SUPPORTED, REJECTED) else c.verdict
        lines.append(f"| {c.claim} | {c.predicted} | {c.measured} | {verdict} |")
    lines += ["", "Verdicts: *m^(2 - Omega(1))* is **supported** when the upper bound of the "
              "interval is below 2 and below dense-gn's lower bound, **not supported** when the "
              f"lower bound is above 2 - {MIN_SAVING:g} (no real saving) or above dense-gn's "
              "lower bound, and inconclusive otherwise; *~ m^k* is supported when the whole "
              f"interval lies within k +- {TOLERANCE:g}, not supported when it lies wholly "
              "outside, inconclusive otherwise. Either becomes inconclusive when the fit has "
              f"fewer than {MIN_FIT_POINTS} widths or spans less than {MIN_DECADES:g} decade, "
              "and wall-clock verdicts also when the calibration self-check flagged the run."]
    return "\n".join(lines) + "\n" + _variants_table(data, scope)


def _variants_table(data: RunData, scope) -> str:
    """Per-iteration exponents of every method and option variant in the claims' context."""
    if scope is None or data.fits is None:
        return ""
    f = data.fits[(data.fits["phase"] == "iteration") & (data.fits["axis"] == "m")]
    pairs = sorted(set(zip(f["method"], f["options"], strict=True)))
    rows = []
    for method, options in pairs:
        if method.startswith("calib"):
            continue
        sec = find_fit(data.fits, method, options, "iteration", "seconds", "m", scope.fixed)
        work = find_fit(data.fits, method, options, "iteration", "work", "m", scope.fixed)
        if sec is not None or work is not None:
            rows.append(f"| {series_label(method, options)} | {exponent_text(sec) or '-'} | "
                        f"{exponent_text(work) or '-'} |")
    if not rows:
        return ""
    return ("\n### Per-iteration exponent of every variant\n\n"
            "| method (options) | seconds | counted work |\n|---|---|---|\n"
            + "\n".join(rows) + "\n")


def _speedup_from_fit(data: RunData, scope: Scope) -> str | None:
    """The speed-up at the largest common m from crossover.csv (bootstrap interval), if there."""
    cx = data.crossover
    if cx is None or "speedup_at_max_m" not in cx:
        return None
    wanted = {"quantity": "seconds", "options": scope.sub_options,
              "machine": str(scope.fixed.get("machine", ""))}
    sel = cx
    for col, value in wanted.items():
        if col in sel and value:
            sel = sel[sel[col] == value]
    if "context" in sel:
        sel = sel[[context_matches(c, scope.fixed) for c in sel["context"]]]
    if sel.empty or not _finite(float(sel["speedup_at_max_m"].iloc[0])):
        return None
    r = sel.iloc[0]
    return (f"Speed-up at the largest width both were measured at, m = {float(r['max_m']):.0f}: "
            f"dense-gn / subquad = **{float(r['speedup_at_max_m']):.3g}x** (95% interval "
            f"[{float(r['speedup_ci_low']):.3g}, {float(r['speedup_ci_high']):.3g}])")


def _speedup_from_runs(data: RunData, scope: Scope) -> str | None:
    """The speed-up at the largest common m from the medians of runs.csv (order-statistic CI)."""
    series = [("dense-gn", ""), ("subquad", scope.sub_options)]
    m = _largest_common_m(data.runs, scope.fixed, series)
    if m is None:
        return None
    stats = []
    for method, options in series:
        sel = select_rows(data.runs[(data.runs["method"] == method)
                                & (data.runs["options"] == options)
                                & (data.runs["phase"] == "iteration")], scope.fixed)
        stats.append(median_ci(sel.loc[np.isclose(sel["m"].astype(float), m), "seconds"]))
    (d_med, d_lo, d_hi), (s_med, s_lo, s_hi) = stats
    if not (_finite(d_med, s_med) and s_med > 0):
        return None
    return (f"Speed-up at the largest width both were measured at, m = {m:.0f}: dense-gn "
            f"{fmt_seconds(d_med)} [{fmt_seconds(d_lo)}, {fmt_seconds(d_hi)}] vs subquad "
            f"{fmt_seconds(s_med)} [{fmt_seconds(s_lo)}, {fmt_seconds(s_hi)}] per iteration: "
            f"dense-gn / subquad = **{d_med / s_med:.3g}x** (conservative 95% interval "
            f"[{d_lo / s_hi:.3g}, {d_hi / s_lo:.3g}])")


def _speedup(data: RunData, scope: Scope | None) -> str:
    """dense-gn / subquad per-iteration time at the largest width both reached in this run."""
    if scope is None:
        return f"Speed-up dense-gn / subquad: {NOT_MEASURED}."
    text = _speedup_from_fit(data, scope) or _speedup_from_runs(data, scope)
    if text is None:
        return (f"Speed-up dense-gn / subquad: {NOT_MEASURED} (no width where both were "
                "measured in the same context).")
    text += (f". Baseline: **dense-gn** (dense Gauss-Newton on BLAS GEMM), measured in this run "
             f"on the same machine and context as subquad "
             f"({options_label(scope.sub_options) or 'default options'}).")
    sub_max = select_rows(data.runs[data.runs["method"] == "subquad"], scope.fixed)["m"].max()
    dense_max = select_rows(data.runs[data.runs["method"] == "dense-gn"], scope.fixed)["m"].max()
    if _finite(float(sub_max), float(dense_max)) and float(sub_max) > float(dense_max):
        text += f" subquad alone went on to m = {float(sub_max):.0f}."
    return text


CROSSOVER_KINDS = {
    "interpolated": "interpolated between measured widths",
    "below range": "subquad is already cheaper at the smallest measured width",
    "extrapolated": "extrapolated from the fitted power laws, outside the measured range",
    "none in range": "no crossing in the measured range",
}


def _crossover_line(row: pd.Series) -> str:
    """One bullet of the crossover section."""
    m_star, lo, hi = crossover_value(row)
    who = series_label(str(row.get("method", "") or "subquad"), str(row.get("options", "")))
    base = str(row.get("baseline", "") or "dense-gn")
    head = (f"- {who} vs {base}, {row.get('quantity', '') or 'seconds'} "
            f"({row.get('context', '')})")
    kind = str(row.get("kind", "") or "")
    kind = CROSSOVER_KINDS.get(kind, kind)
    if not np.isfinite(m_star):
        return f"{head}: no crossover in or near the measured range" + (
            f" ({kind})" if kind else "")
    hi_text = _fmt_width(hi) if np.isfinite(hi) else "beyond the measured range"
    interval = f" (95% interval [{_fmt_width(lo)}, {hi_text}])" if np.isfinite(lo) else ""
    return f"{head}: m* = **{_fmt_width(m_star)}**{interval}" + (f", {kind}" if kind else "")


def _fmt_width(m: float) -> str:
    """A width in full up to a million, in scientific notation beyond (extrapolations)."""
    return f"{m:.0f}" if m < 1e6 else f"{m:.2e}"


def crossover_section(data: RunData) -> str:
    """Crossover widths m* with intervals, and the measured speed-up."""
    scope = _scope(data) if data.runs is not None else None
    lines = ["## Crossover and speed-up", ""]
    cx = data.crossover
    if cx is None or cx.empty:
        lines.append(f"Crossover m*: {NOT_MEASURED} (no crossover.csv).")
    else:
        if "quantity" in cx:
            cx = cx.sort_values("quantity", key=lambda q: q != "seconds", kind="stable")
        lines += [_crossover_line(row) for _, row in cx.iterrows()]
    lines += ["", _speedup(data, scope)]
    return "\n".join(lines) + "\n"


def _selfcheck_frame(data: RunData) -> pd.DataFrame | None:
    """selfcheck.csv, or the calibration fits of fits.csv when it is absent."""
    if data.selfcheck is not None:
        return data.selfcheck
    if data.fits is None:
        return None
    rows = []
    for method, expected in (("calib-axpy", 1.0), ("calib-gemv", 2.0)):
        f = data.fits[(data.fits["method"] == method) & (data.fits["axis"] == "m")
                      & (data.fits["quantity"] == "seconds")]
        for _, r in f.iterrows():
            rows.append({"kernel": method, "expected": expected, "exponent": r["exponent"],
                         "ci_low": r["ci_low"], "ci_high": r["ci_high"]})
    return pd.DataFrame(rows) if rows else None


def _selfcheck_ok(row: pd.Series) -> bool | None:
    """Whether one self-check row passed (from its own verdict column, else recomputed)."""
    for col in ("ok", "pass", "passed", "trustworthy"):
        if col in row and pd.notna(row[col]) and str(row[col]) != "":
            return str(row[col]).strip().lower() in ("true", "1", "yes", "ok", "pass")
    for col in ("flagged", "untrustworthy"):
        if col in row and pd.notna(row[col]) and str(row[col]) != "":
            return str(row[col]).strip().lower() not in ("true", "1", "yes")
    exp = next((row[c] for c in ("expected", "expected_exponent", "target") if c in row), None)
    if exp is None or not _finite(float(row.get("exponent", math.nan)), float(exp)):
        return None
    return abs(float(row["exponent"]) - float(exp)) <= TOLERANCE


def _calibration_rows(data: RunData) -> pd.DataFrame | None:
    """The self-check rows of kernels that were actually run (None when there are none)."""
    frame = _selfcheck_frame(data)
    if frame is not None and "kernel" in frame:
        frame = frame[frame["kernel"] != "not run"]
    return frame if frame is not None and not frame.empty else None


def trustworthy(data: RunData) -> bool | None:
    """False when a calibration kernel failed, True when all passed, None when unknown."""
    frame = _calibration_rows(data)
    oks = [] if frame is None else [_selfcheck_ok(r) for _, r in frame.iterrows()]
    if any(o is False for o in oks):
        return False
    return True if oks and all(o is True for o in oks) else None


def selfcheck_section(data: RunData) -> str:
    """Calibration kernels on the same grid: is the timing of this run trustworthy?"""
    frame = _calibration_rows(data)
    head = "## Self-check\n\n"
    if frame is None:
        return head + (f"Self-check {NOT_MEASURED} (no selfcheck.csv and no fitted calibration "
                       f"kernels; `subquad fit {data.run_dir}` writes them).\n")
    trust = trustworthy(data)
    if trust is False:
        verdict = (f"**flagged**: a known kernel's exponent is off by more than {TOLERANCE:g}, "
                   "so this run's wall-clock exponents are untrustworthy (the wall-clock "
                   "verdicts above are inconclusive for that reason).")
    elif trust:
        verdict = (f"**trustworthy**: every calibration kernel's exponent is within "
                   f"{TOLERANCE:g} of its known value.")
    else:
        verdict = "inconclusive: the self-check rows carry no pass/fail information."
    cols = [c for c in frame.columns if c not in ("message",)]
    table = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in frame.iterrows():
        table.append("| " + " | ".join(_fmt_cell(r[c]) for c in cols) + " |")
    return head + verdict + "\n\n" + "\n".join(table) + "\n"


def _fmt_cell(v: object) -> str:
    """A table cell: floats to 4 significant digits, NaN as '-'."""
    if isinstance(v, float | np.floating):
        return "-" if not np.isfinite(v) else f"{v:.4g}"
    return str(v).replace("|", "/")


def status_section(run_dir: Path) -> str:
    """Counts of cells that did not finish ok (censored, nan, oom, ...)."""
    raw = read_table(run_dir / "runs.csv")
    if raw is None or "status" not in raw:
        return ""
    bad = raw[~raw["status"].isin(["ok", ""])].drop_duplicates("cell")
    if bad.empty:
        return "## Cells not measured\n\nEvery cell finished with status ok.\n"
    lines = ["## Cells not measured", "", "| method | options | m | status | cells |",
             "|---|---|---|---|---|"]
    for (method, options, status), g in bad.groupby(["method", "options", "status"]):
        ms = ", ".join(f"{m:.0f}" for m in sorted(g["m"].astype(float).unique()))
        lines.append(f"| {method} | {options_label(options) or '-'} | {ms} | {status} | "
                     f"{len(g)} |")
    return "\n".join(lines) + "\n"


def figures_section(run_dir: Path) -> str:
    """Relative links to the figures that exist in ``run_dir/figures``."""
    present = [n for n in FIGURES if (run_dir / "figures" / f"{n}.png").is_file()]
    if not present:
        return (f"## Figures\n\nFigures {NOT_MEASURED} or not plotted yet "
                f"(`subquad plot {run_dir}`).\n")
    blocks = [f"### {FIGURE_CAPTIONS.get(n, n)}\n\n![{n}](figures/{n}.png)\n" for n in present]
    return "## Figures\n\n" + "\n".join(blocks)


def _read_optional(path: Path) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path, keep_default_na=False, na_values=[""]) if path.is_file() \
            else None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return None


def model_section(run_dir: Path) -> str:
    """'Why is the measured exponent what it is' from ``subquad model``'s tables (if run)."""
    summ = _read_optional(run_dir / "model_summary.csv")
    if summ is None or summ.empty:
        return ""
    f = "{:.3f}".format
    lines = ["## Why is the measured exponent what it is (machine model)\n",
             "From `subquad model` (docs/MACHINE_MODEL.md): every phase predicted as "
             "t = o + W/F + B/BW(S) from counted work and bytes and this machine's "
             "calibration.json, no fitted parameter. Exponents are least-squares slopes over "
             "the same widths; *asymptotic* evaluates every working set beyond the last cache "
             "level at widths past the measured range (extrapolated counts).\n",
             "| series | widths | measured | model (predict) | model (fit) | counted work | "
             "asymptotic (extrapolation) |", "|---|---|---|---|---|---|---|"]
    for r in summ.itertuples():
        meas = f(r.measured_exponent)
        if pd.notna(r.measured_ci_low):
            meas += f" [{f(r.measured_ci_low)}, {f(r.measured_ci_high)}]"
        label = series_label(r.method, "" if pd.isna(r.options) else str(r.options))
        lines.append(f"| {label} n={r.n:g} | {r.fit_range} | {meas} | {f(r.model_exponent)} | "
                     f"{f(r.fitted_exponent)} | {f(r.work_exponent)} | "
                     f"{f(r.asymptotic_exponent)} (m {r.asymptotic_range}) |")
    model = _read_optional(run_dir / "model.csv")
    if model is not None and not model.empty:
        it = model[model["phase"] == "iteration"]
        for meth, g in it.groupby("method"):
            lines.append(f"\n{meth}: predicted / measured iteration seconds "
                         f"{g['ratio'].min():.2f}..{g['ratio'].max():.2f} (predict mode), "
                         f"{g['fit_ratio'].min():.2f}..{g['fit_ratio'].max():.2f} (fit mode) "
                         f"over {len(g)} cells; per phase in model.csv.")
        if (run_dir / "figures" / "model.png").is_file():
            lines.append("\n![measured vs predicted seconds](figures/model.png)")
    fac = _read_optional(run_dir / "model_factors.csv")
    if fac is not None and not fac.empty:
        lines += ["\nEfficiency factors (measured / predicted per phase, log-space fit, 95% "
                  "bootstrap interval over cells; 1 = at the calibrated machine limit):\n",
                  "| method | phase | factor | interval | cells |", "|---|---|---|---|---|"]
        for r in fac.dropna(subset=["factor"]).itertuples():
            lines.append(f"| {r.method} | {r.phase} | {r.factor:.2f} | "
                         f"[{r.ci_low:.2f}, {r.ci_high:.2f}] | {r.n_cells} |")
    sp = _read_optional(run_dir / "model_speedup.csv")
    if sp is not None and not sp.empty:
        from subquad.analysis.model_run import crossover_m  # noqa: PLC0415

        for opts, g in sp.groupby("sub_options"):
            m_star, kind = crossover_m(g)
            where = f"m* = {m_star:.0f}" if np.isfinite(m_star) else "no crossover"
            lines.append(f"\nPredicted crossover (subquad [{opts}] faster than dense-gn): "
                         f"{where} ({kind}).")
        ext = sp[sp["kind"] == "extrapolation"]
        if not ext.empty:
            lines.append("\nPredicted speed-up dense-gn / subquad beyond the measured widths "
                         "(**extrapolation** of counted work and bytes, predict mode): "
                         + ", ".join(f"m = {r.m:g}: {r.speedup:.1f}x" for r in ext.itertuples())
                         + ".")
    return "\n".join(lines) + "\n"


def write_report(run_dir: Path) -> Path:
    """Write ``run_dir/report.md`` from the run's tables and figures; returns its path."""
    run_dir = Path(run_dir)
    data = load_run(run_dir)
    title = f"# subquad run report: {run_dir.name}\n\n" + (
        "Empirical check of Song, Zhang, Zhang, *Training multi-layer over-parametrized neural "
        "network in subquadratic time* (arXiv 2112.07628): m^2 work only at initialisation and "
        "m^(2 - Omega(1)) per training iteration.\n")
    sections = [title, environment_section(data.environment), reproduce_section(data),
                claims_section(data), crossover_section(data), model_section(run_dir),
                selfcheck_section(data),
                status_section(run_dir), figures_section(run_dir)]
    path = run_dir / "report.md"
    atomic_write_text(path, "\n".join(s for s in sections if s))
    return path
