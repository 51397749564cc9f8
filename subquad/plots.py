"""Figures of a run directory: scaling in m, n, d, phases, counted work, training, ablation.

Every figure reads the tidy tables of DESIGN.md (``runs.csv``, ``training.csv``, ``fits.csv``,
``local_slopes.csv``, ``crossover.csv``) and is skipped when its data is absent from the run.
Figures are drawn on plain :class:`matplotlib.figure.Figure` objects with the Agg canvas, so no
global pyplot state or interactive backend is involved.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy.stats import binom

# -- constants ---------------------------------------------------------------------------------

AXES = ("m", "n", "d", "L", "c")
#: columns that never pool: a fit or a curve lives inside one value of each
CONTEXT_COLS = ("machine", "backend", "dtype", "threshold", "data")
STRING_COLS = ("experiment", "cell", "machine", "method", "backend", "dtype", "threshold",
               "data", "solver", "update", "options", "phase", "status", "message")
TRAINED_METHODS = ("dense-gn", "dense-gd", "subquad")
ITER_PHASES = ("forward", "backward", "gram", "solve", "update", "fold")
MIN_POINTS = 3
LEVEL = 0.95
DPI = 150

#: Okabe-Ito colours (colour-blind safe), one per method, identical in every figure
METHOD_COLOURS = {"dense-gn": "#D55E00", "dense-gd": "#E69F00", "subquad": "#0072B2",
                  "calib-axpy": "#999999", "calib-gemv": "#000000"}
#: shades of a method's colour for its option variants (first = the method colour)
SUBQUAD_SHADES = ("#0072B2", "#56B4E9", "#003F63", "#009E73", "#4B9CD3", "#1B5E8C", "#7FC4EE")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<")
LINESTYLES = ("-", "--", "-.", ":")
PHASE_COLOURS = {"forward": "#1f77b4", "backward": "#2ca02c", "gram": "#9467bd",
                 "solve": "#e377c2", "update": "#ff7f0e", "fold": "#8c564b",
                 "iteration": "#000000", "init": "#7f7f7f"}
QUANTITY_LABELS = {"seconds": "seconds per iteration", "work": "multiply-adds per iteration",
                   "bytes": "bytes of weights read per iteration"}


# -- loading -----------------------------------------------------------------------------------


@dataclass
class RunData:
    """The tables of one run directory; a table that is absent is ``None``."""

    run_dir: Path
    runs: pd.DataFrame | None = None
    training: pd.DataFrame | None = None
    fits: pd.DataFrame | None = None
    local_slopes: pd.DataFrame | None = None
    crossover: pd.DataFrame | None = None
    selfcheck: pd.DataFrame | None = None
    environment: dict = field(default_factory=dict)
    styles: dict[tuple[str, str], dict] = field(default_factory=dict)


def _read_csv(path: Path) -> pd.DataFrame | None:
    """Read a CSV with string columns kept as strings ('' for empty); None if absent/empty."""
    if not path.is_file() or path.stat().st_size == 0:
        return None
    try:
        df = pd.read_csv(path, keep_default_na=True, low_memory=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError):
        return None
    if df.empty:
        return None
    for col in df.columns:
        if col in STRING_COLS or col in ("options", "context", "quantity", "axis", "fit",
                                         "fit_range", "baseline", "kernel", "verdict"):
            df[col] = df[col].fillna("").astype(str)
    return df


def load_run(run_dir: Path) -> RunData:
    """Load every table of ``run_dir`` that exists, and assign each series its style."""
    run_dir = Path(run_dir)
    data = RunData(run_dir=run_dir)
    data.runs = _read_csv(run_dir / "runs.csv")
    if data.runs is not None and "status" in data.runs:
        data.runs = data.runs[data.runs["status"].isin(["ok", ""])].copy()
    data.training = _read_csv(run_dir / "training.csv")
    data.fits = _read_csv(run_dir / "fits.csv")
    data.local_slopes = _read_csv(run_dir / "local_slopes.csv")
    data.crossover = _read_csv(run_dir / "crossover.csv")
    data.selfcheck = _read_csv(run_dir / "selfcheck.csv")
    env = run_dir / "environment.json"
    if env.is_file():
        try:
            data.environment = json.loads(env.read_text())
        except (OSError, ValueError):
            data.environment = {}
    data.styles = _assign_styles(data)
    return data


def _assign_styles(data: RunData) -> dict[tuple[str, str], dict]:
    """One colour per method; option variants get shades, markers and line styles."""
    keys: set[tuple[str, str]] = set()
    for df in (data.runs, data.training, data.fits, data.local_slopes):
        if df is not None and {"method", "options"} <= set(df.columns):
            keys |= set(zip(df["method"], df["options"], strict=True))
    styles = {}
    for method in sorted({k[0] for k in keys}):
        variants = sorted(o for mm, o in keys if mm == method)
        base = METHOD_COLOURS.get(method, "#666666")
        for i, opt in enumerate(variants):
            colour = SUBQUAD_SHADES[i % len(SUBQUAD_SHADES)] if method == "subquad" else base
            styles[(method, opt)] = {"color": colour, "marker": MARKERS[i % len(MARKERS)],
                                     "linestyle": LINESTYLES[i % len(LINESTYLES)]}
    return styles


def style(data: RunData, method: str, options: str) -> dict:
    """Matplotlib keyword arguments of one (method, options) series."""
    return dict(data.styles.get((method, options),
                                {"color": METHOD_COLOURS.get(method, "#666666"), "marker": "o",
                                 "linestyle": "-"}))


# -- small statistics ------------------------------------------------------------------------


def median_ci(values: Iterable[float], level: float = LEVEL) -> tuple[float, float, float]:
    """Median and its distribution-free confidence interval from order statistics."""
    x = np.sort(np.asarray(list(values), dtype=float))
    x = x[np.isfinite(x)]
    s = x.size
    if s == 0:
        return math.nan, math.nan, math.nan
    k = max(int(binom.ppf((1.0 - level) / 2.0, s, 0.5)), 1)
    return float(np.median(x)), float(x[k - 1]), float(x[s - k])


def summarise(runs: pd.DataFrame, phase: str, quantity: str = "seconds") -> pd.DataFrame:
    """Median and CI of ``quantity`` per (series, context, sizes) for one phase (seeds pooled)."""
    cols = [c for c in ("method", "options", *CONTEXT_COLS, *AXES) if c in runs.columns]
    sub = runs[(runs["phase"] == phase) & runs[quantity].notna()] if quantity in runs else None
    if sub is None or sub.empty:
        return pd.DataFrame(columns=[*cols, "median", "lo", "hi", "samples"])
    rows = []
    for key, grp in sub.groupby(cols, sort=True, dropna=False):
        med, lo, hi = median_ci(grp[quantity])
        rows.append((*key, med, lo, hi, len(grp)))
    return pd.DataFrame(rows, columns=[*cols, "median", "lo", "hi", "samples"])


def parse_context(text: str) -> dict[str, object]:
    """'n=16;d=16;L=2;c=0.2' -> {'n': 16.0, ...} (numbers as floats, the rest as strings)."""
    out: dict[str, object] = {}
    for part in str(text or "").split(";"):
        if "=" not in part:
            continue
        key, val = (s.strip() for s in part.split("=", 1))
        try:
            out[key] = float(val)
        except ValueError:
            out[key] = val
    return out


def _same(a: object, b: object) -> bool:
    """Equality that treats 16 and 16.0 (and '16') alike."""
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    except (TypeError, ValueError):
        return str(a) == str(b)


def context_matches(context: str, fixed: dict[str, object]) -> bool:
    """True when every key the context string and ``fixed`` share has the same value."""
    ctx = parse_context(context)
    return all(_same(v, fixed[k]) for k, v in ctx.items() if k in fixed)


def parse_range(text: str) -> tuple[float, float] | None:
    """'1024-32768', '[1024, 32768]' or '1024..32768' -> (1024.0, 32768.0); None if unparseable."""
    nums = re.findall(r"\d+(?:\.\d+)?(?:[eE][+-]?\d+)?", str(text or ""))
    if len(nums) < 2:
        return None
    lo, hi = float(nums[0]), float(nums[-1])
    return (min(lo, hi), max(lo, hi))


def options_label(options: str) -> str:
    """Short human label of a canonical options string ('' for dense methods)."""
    opts = parse_context(options)
    parts = [str(opts[k]) for k in ("solver", "update") if opts.get(k) not in (None, "")]
    if opts.get("update") == "lazy" and opts.get("rank_max") not in (None, "", 0.0):
        parts[-1] = f"lazy r={int(float(opts['rank_max']))}"
    return ", ".join(parts)


def series_label(method: str, options: str) -> str:
    """'subquad (cholesky, scatter)' or 'dense-gn'."""
    short = options_label(options)
    return f"{method} ({short})" if short else method


def find_fit(fits: pd.DataFrame | None, method: str, options: str | None, phase: str,
             quantity: str, axis: str, fixed: dict[str, object]) -> pd.Series | None:
    """The fitted row of one series (slope fit preferred) whose context matches ``fixed``."""
    if fits is None:
        return None
    sel = fits[(fits["method"] == method) & (fits["phase"] == phase)
               & (fits["quantity"] == quantity) & (fits["axis"] == axis)]
    if options is not None and "options" in sel:
        sel = sel[sel["options"] == options]
    for col in ("machine", "backend", "dtype"):
        if col in sel and col in fixed:
            sel = sel[sel[col] == str(fixed[col])]
    if "context" in sel:
        sel = sel[[context_matches(c, fixed) for c in sel["context"]]]
    if sel.empty:
        return None
    if "fit" in sel and (sel["fit"] == "slope").any():
        sel = sel[sel["fit"] == "slope"]
    return sel.iloc[0]


def exponent_text(row: pd.Series | None) -> str:
    """'m^1.76 [1.70, 1.82]' style text of a fitted row ('' when absent)."""
    if row is None or not np.isfinite(row.get("exponent", np.nan)):
        return ""
    return f"{row['exponent']:.2f} [{row['ci_low']:.2f}, {row['ci_high']:.2f}]"


def sweeps(summary: pd.DataFrame, axis: str, min_points: int = MIN_POINTS
           ) -> list[tuple[dict[str, object], pd.DataFrame]]:
    """Groups where ``axis`` varies and everything else is fixed, most points first."""
    keys = [c for c in (*CONTEXT_COLS, *AXES) if c in summary.columns and c != axis]
    out = []
    if summary.empty:
        return out
    for key, grp in summary.groupby(keys, sort=True, dropna=False):
        if grp[axis].nunique() >= min_points:
            out.append((dict(zip(keys, key, strict=True)), grp))
    out.sort(key=lambda kv: (-kv[1][axis].nunique(), -len(kv[1])))
    return out


def main_context(runs: pd.DataFrame | None, axis: str = "m") -> dict[str, object] | None:
    """The fixed values of the longest ``axis`` sweep of the trained methods (None if none)."""
    if runs is None:
        return None
    summ = summarise(runs[runs["method"].isin(TRAINED_METHODS)], "iteration")
    found = sweeps(summ, axis)
    return found[0][0] if found else None


def context_title(fixed: dict[str, object], skip: Iterable[str] = ()) -> str:
    """'n=16, d=16, L=2, c=0.2; numpy float64' for a panel title."""
    sizes = [f"{k}={_fmt_num(fixed[k])}" for k in AXES if k in fixed and k not in skip]
    extra = [str(fixed[k]) for k in ("backend", "dtype", "threshold") if fixed.get(k)]
    return ", ".join(sizes) + ("; " + " ".join(extra) if extra else "")


def _fmt_num(v: object) -> str:
    """16.0 -> '16', 0.2 -> '0.2'."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return str(int(f)) if f.is_integer() else f"{f:g}"


def _select(df: pd.DataFrame, fixed: dict[str, object]) -> pd.DataFrame:
    """Rows of ``df`` whose columns equal the values of ``fixed`` (columns it lacks ignored)."""
    mask = np.ones(len(df), dtype=bool)
    for k, v in fixed.items():
        if k in df.columns:
            mask &= np.array([_same(x, v) for x in df[k]], dtype=bool)
    return df[mask]


# -- drawing helpers -------------------------------------------------------------------------


def _errorbar(ax: Axes, data: RunData, grp: pd.DataFrame, x: str, method: str, options: str,
              label: str, **kw) -> None:
    """Medians with CI error bars of one series, in its style."""
    grp = grp.sort_values(x)
    st = style(data, method, options)
    st.update(kw)
    yerr = np.vstack([grp["median"] - grp["lo"], grp["hi"] - grp["median"]]).clip(min=0)
    ax.errorbar(grp[x], grp["median"], yerr=yerr, label=label, capsize=2.5, markersize=4.5,
                linewidth=1.2, **st)


def _fit_line(ax: Axes, grp: pd.DataFrame, x: str, row: pd.Series | None, colour: str) -> None:
    """The fitted power law of ``row`` through the medians in its fit range (thin line)."""
    if row is None or not np.isfinite(row.get("exponent", np.nan)):
        return
    xs, ys = grp[x].to_numpy(float), grp["median"].to_numpy(float)
    rng = parse_range(row.get("fit_range", ""))
    keep = (xs > 0) & (ys > 0)
    if rng is not None:
        keep &= (xs >= rng[0] * 0.999) & (xs <= rng[1] * 1.001)
    if keep.sum() < 1:
        return
    k = float(row["exponent"])
    log_c = float(np.mean(np.log(ys[keep]) - k * np.log(xs[keep])))
    grid = np.geomspace(xs[keep].min(), xs[keep].max(), 50)
    ax.plot(grid, np.exp(log_c) * grid**k, color=colour, linewidth=2.2, alpha=0.35,
            solid_capstyle="round")


def _reference_slopes(ax: Axes, x0: float, y0: float, xmax: float, slopes: dict[str, float]
                      ) -> None:
    """Dashed reference power laws through (x0, y0), one per label -> slope."""
    grid = np.geomspace(x0, xmax, 20)
    greys = ("#444444", "#888888", "#bbbbbb")
    for i, (label, k) in enumerate(slopes.items()):
        ax.plot(grid, y0 * (grid / x0) ** k, linestyle=(0, (5, 3)), linewidth=1.0,
                color=greys[i % len(greys)], label=label)


def _anchor(groups: dict[tuple[str, str], pd.DataFrame], x: str) -> tuple[float, float] | None:
    """The dense baseline's first point (else the first series' first point)."""
    order = sorted(groups, key=lambda k: (k[0] != "dense-gn", k[0] != "dense-gd", k))
    for key in order:
        g = groups[key].sort_values(x)
        g = g[g["median"] > 0]
        if not g.empty:
            return float(g[x].iloc[0]), float(g["median"].iloc[0])
    return None


def _loglog(ax: Axes, xlabel: str, ylabel: str, title: str) -> None:
    """Log-log axes with labels, title and a light grid."""
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize="medium")
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.1)


def _legend_right(ax: Axes, **kw) -> None:
    """Legend outside the axes on the right, so it never covers data."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  fontsize="small", frameon=False, **kw)


def _new_figure(rows: int, cols: int, width: float, height: float) -> tuple[Figure, list[Axes]]:
    """A constrained-layout figure with rows x cols axes, returned as a flat list."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def _trained(summary: pd.DataFrame) -> pd.DataFrame:
    """Rows of the trained methods only (no calibration kernels)."""
    return summary[summary["method"].isin(TRAINED_METHODS)]


def _series(df: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """Split a frame by (method, options), dense first then subquad variants."""
    out = {k: g for k, g in df.groupby(["method", "options"], sort=True)}
    return dict(sorted(out.items(), key=lambda kv: (TRAINED_METHODS.index(kv[0][0])
                                                   if kv[0][0] in TRAINED_METHODS else 9, kv[0])))


def _crossover_rows(data: RunData, fixed: dict[str, object]) -> pd.DataFrame:
    """Crossover rows of this panel's context (empty frame when none)."""
    cx = data.crossover
    if cx is None:
        return pd.DataFrame()
    sel = cx
    for col in ("machine", "backend", "dtype"):
        if col in sel and col in fixed:
            sel = sel[sel[col] == str(fixed[col])]
    if "context" in sel:
        sel = sel[[context_matches(c, fixed) for c in sel["context"]]]
    if "quantity" in sel:
        sel = sel[sel["quantity"].isin(["seconds", ""])]
    return sel


def crossover_value(row: pd.Series) -> tuple[float, float, float]:
    """(m*, low, high) of a crossover row (NaN where absent)."""
    def get(*names: str) -> float:
        for n in names:
            if n in row and pd.notna(row[n]) and str(row[n]) != "":
                try:
                    return float(row[n])
                except (TypeError, ValueError):
                    continue
        return math.nan
    return (get("m_star", "m_cross", "crossover", "mstar"),
            get("ci_low", "m_star_low", "low"), get("ci_high", "m_star_high", "high"))


def _mark_crossover(ax: Axes, data: RunData, fixed: dict[str, object]) -> None:
    """Vertical line at m* and a shaded band over its interval."""
    for _, row in _crossover_rows(data, fixed).iterrows():
        m_star, lo, hi = crossover_value(row)
        if not np.isfinite(m_star):
            continue
        if np.isfinite(lo) and np.isfinite(hi):
            ax.axvspan(lo, hi, color="#009E73", alpha=0.12, linewidth=0)
        base = row.get("baseline", "dense-gn") or "dense-gn"
        who = series_label(str(row.get("method", "subquad")), str(row.get("options", "")))
        ax.axvline(m_star, color="#009E73", linewidth=1.3,
                   label=f"crossover m* = {m_star:.0f} ({who} vs {base})")


# -- figures ---------------------------------------------------------------------------------


def fig_time_vs_m(data: RunData) -> Figure | None:
    """Per-iteration seconds vs m, fitted power laws, reference slopes 2 and 2 - c, m*."""
    if data.runs is None:
        return None
    panels = sweeps(_trained(summarise(data.runs, "iteration")), "m")[:6]
    if not panels:
        return None
    fig, axes = _new_figure(len(panels), 1, 10.5, 4.2 * len(panels))
    for ax, (fixed, grp) in zip(axes, panels, strict=True):
        groups = _series(grp)
        for (method, options), g in groups.items():
            row = find_fit(data.fits, method, options, "iteration", "seconds", "m", fixed)
            fit = exponent_text(row)
            label = series_label(method, options) + (f": m^{fit}" if fit else "")
            _errorbar(ax, data, g, "m", method, options, label)
            _fit_line(ax, g, "m", row, style(data, method, options)["color"])
        anchor = _anchor(groups, "m")
        if anchor is not None:
            c = float(fixed.get("c", math.nan))
            refs = {"slope 2 (dense)": 2.0}
            if np.isfinite(c):
                refs[f"slope 2 - c = {2 - c:g}"] = 2.0 - c
            _reference_slopes(ax, *anchor, float(grp["m"].max()), refs)
        _mark_crossover(ax, data, fixed)
        _loglog(ax, "width m (neurons per layer)", "seconds per iteration (median, 95% CI)",
                f"Per-iteration time vs width: {context_title(fixed, skip=('m',))}")
        _legend_right(ax)
    return fig


def fig_phases_vs_m(data: RunData) -> Figure | None:
    """Per-phase seconds vs m, one panel per method+options of the main m sweep."""
    fixed = main_context(data.runs)
    if fixed is None:
        return None
    runs = _select(data.runs[data.runs["method"].isin(TRAINED_METHODS)], fixed)
    summ = pd.concat([summarise(runs, p) for p in (*ITER_PHASES, "iteration")],
                     keys=[*ITER_PHASES, "iteration"], names=["phase"]).reset_index(0)
    groups = {k: g for k, g in _series(summ).items() if g["m"].nunique() >= MIN_POINTS}
    if not groups:
        return None
    cols = 2 if len(groups) > 1 else 1
    rows = math.ceil(len(groups) / cols)
    fig, axes = _new_figure(rows, cols, 6.0 * cols + 1.6, 3.6 * rows)
    for ax, ((method, options), g) in zip(axes, groups.items(), strict=False):
        for phase, gp in g.groupby("phase", sort=False):
            gp = gp[gp["median"] > 0].sort_values("m")
            if gp.empty:
                continue
            total = phase == "iteration"
            ax.errorbar(gp["m"], gp["median"],
                        yerr=np.vstack([gp["median"] - gp["lo"], gp["hi"] - gp["median"]]),
                        color=PHASE_COLOURS[phase], marker="o", markersize=3.5, capsize=2,
                        linewidth=2.0 if total else 1.2, linestyle="--" if total else "-",
                        label="whole iteration" if total else phase)
        _loglog(ax, "width m", "seconds per iteration", series_label(method, options))
    for ax in axes[len(groups):]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=PHASE_COLOURS[p], marker="o", markersize=4,
                      linestyle="--" if p == "iteration" else "-",
                      label="whole iteration" if p == "iteration" else p)
               for p in (*ITER_PHASES, "iteration")]
    fig.legend(handles=handles, loc="outside right upper", fontsize="small", frameon=False,
               title="phase")
    fig.suptitle(f"Where the iteration's time goes, per phase ({context_title(fixed, ('m',))})")
    return fig


def _default_options(runs: pd.DataFrame, method: str) -> str:
    """The options string a method was run with most often (its default configuration)."""
    sub = runs[runs["method"] == method]
    return str(sub["options"].mode().iloc[0]) if not sub.empty else ""


def fig_init_vs_iteration(data: RunData) -> Figure | None:
    """Initialisation cost vs per-iteration cost vs m, seconds and counted work."""
    fixed = main_context(data.runs)
    if fixed is None:
        return None
    runs = _select(data.runs[data.runs["method"].isin(TRAINED_METHODS)], fixed)
    if not (runs["phase"] == "init").any():
        return None
    fig, axes = _new_figure(1, 2, 13.5, 4.6)
    for ax, quantity in zip(axes, ("seconds", "work"), strict=True):
        for method in [m for m in TRAINED_METHODS if m in set(runs["method"])]:
            options = _default_options(runs[runs["phase"] == "init"], method)
            sel = runs[(runs["method"] == method) & (runs["options"] == options)]
            for phase, ls in (("init", "-"), ("iteration", "--")):
                g = summarise(sel, phase, quantity)
                g = g[g["median"] > 0]
                if g["m"].nunique() < 2:
                    continue
                row = find_fit(data.fits, method, options, phase, quantity, "m", fixed)
                fit = exponent_text(row)
                what = "initialisation" if phase == "init" else "one iteration"
                label = f"{method} {what}" + (f": m^{fit}" if fit else "")
                _errorbar(ax, data, g, "m", method, options, label, linestyle=ls,
                          marker="o" if phase == "init" else "s")
        unit = "seconds" if quantity == "seconds" else "multiply-adds (init: weights drawn)"
        _loglog(ax, "width m", unit, f"Init vs one iteration ({quantity})")
        _legend_right(ax)
    fig.suptitle("m^2 is paid at initialisation; each iteration should cost m^(2-c) "
                 f"({context_title(fixed, ('m',))})")
    return fig


def fig_work_vs_m(data: RunData) -> Figure | None:
    """Counted multiply-adds and bytes per iteration vs m, with fitted exponents."""
    fixed = main_context(data.runs)
    if fixed is None or "work" not in data.runs:
        return None
    runs = _select(data.runs[data.runs["method"].isin(TRAINED_METHODS)], fixed)
    quantities = [q for q in ("work", "bytes") if q in runs and runs[q].notna().any()]
    if not quantities:
        return None
    fig, axes = _new_figure(len(quantities), 1, 10.5, 4.0 * len(quantities))
    for ax, quantity in zip(axes, quantities, strict=True):
        summ = summarise(runs, "iteration", quantity)
        groups = {k: g[g["median"] > 0] for k, g in _series(summ).items()}
        groups = {k: g for k, g in groups.items() if g["m"].nunique() >= 2}
        for (method, options), g in groups.items():
            row = find_fit(data.fits, method, options, "iteration", quantity, "m", fixed)
            fit = exponent_text(row)
            _errorbar(ax, data, g, "m", method, options,
                      series_label(method, options) + (f": m^{fit}" if fit else ""))
            _fit_line(ax, g, "m", row, style(data, method, options)["color"])
        anchor = _anchor(groups, "m") if groups else None
        c = float(fixed.get("c", math.nan))
        if anchor is not None:
            refs = {"slope 2": 2.0} | ({f"slope 2 - c = {2 - c:g}": 2 - c} if c == c else {})
            _reference_slopes(ax, *anchor, float(runs["m"].max()), refs)
        _loglog(ax, "width m", QUANTITY_LABELS[quantity], f"Counted {quantity} vs width")
        _legend_right(ax)
    fig.suptitle(f"Counted work per iteration (deterministic) ({context_title(fixed, ('m',))})")
    return fig


def fig_time_vs_n_d(data: RunData) -> Figure | None:
    """Per-iteration seconds vs n and vs d (one panel each, longest sweep of each axis)."""
    if data.runs is None:
        return None
    summ = _trained(summarise(data.runs, "iteration"))
    found = [(axis, sweeps(summ, axis, 2)) for axis in ("n", "d")]
    found = [(axis, s[0]) for axis, s in found if s]
    if not found:
        return None
    fig, axes = _new_figure(1, len(found), 6.8 * len(found) + 1.0, 4.6)
    for ax, (axis, (fixed, grp)) in zip(axes, found, strict=True):
        for (method, options), g in _series(grp).items():
            row = find_fit(data.fits, method, options, "iteration", "seconds", axis, fixed)
            fit = exponent_text(row)
            _errorbar(ax, data, g, axis, method, options,
                      series_label(method, options) + (f": {axis}^{fit}" if fit else ""))
            _fit_line(ax, g, axis, row, style(data, method, options)["color"])
        name = "samples n" if axis == "n" else "input dimension d"
        _loglog(ax, name, "seconds per iteration (median, 95% CI)",
                f"Time vs {axis} ({context_title(fixed, (axis,))})")
        ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.18),
                  frameon=False, ncol=1)
    return fig


def _training_cells(training: pd.DataFrame, limit: int = 6) -> list[pd.DataFrame]:
    """Representative training cells: per (method, options), the widest of the modal context."""
    keys = [k for k in ("c", "n", "d", "L", "threshold", "data") if k in training]
    meta = training.drop_duplicates("cell")
    modal = meta.groupby(keys, dropna=False).size().idxmax() if keys else ()
    modal = modal if isinstance(modal, tuple) else (modal,)
    meta = _select(meta, dict(zip(keys, modal, strict=True)))
    meta = meta.sort_values("m", ascending=False).drop_duplicates(["method", "options"])
    order = sorted(meta.itertuples(), key=lambda r: (TRAINED_METHODS.index(r.method)
                                                    if r.method in TRAINED_METHODS else 9,
                                                    r.options))
    return [training[training["cell"] == r.cell] for r in order[:limit]]


def fig_training(data: RunData) -> Figure | None:
    """Loss, active fraction per layer (vs Q(beta)) and flips per iteration over training."""
    tr = data.training
    if tr is None or "iteration" not in tr:
        return None
    cells = _training_cells(tr)
    fig, axes = _new_figure(1, 3, 16.5, 4.6)
    ax_loss, ax_act, ax_flip = axes
    expected = set()
    for cell in cells:
        first = cell.iloc[0]
        method, options = str(first["method"]), str(first["options"])
        st = style(data, method, options)
        label = f"{series_label(method, options)} m={_fmt_num(first['m'])}"
        per_iter = cell.groupby("iteration").agg(loss=("loss", "first"), flips=("flips", "sum"))
        loss = per_iter["loss"].clip(lower=1e-300)
        ax_loss.plot(per_iter.index, loss, label=label, color=st["color"],
                     marker=st["marker"], markersize=3.5, linestyle=st["linestyle"])
        steps = per_iter[per_iter.index > 0]
        ax_flip.plot(steps.index, steps["flips"], color=st["color"], marker=st["marker"],
                     markersize=3.5, linestyle=st["linestyle"])
        for i, (layer, gl) in enumerate(cell.groupby("layer")):
            ax_act.plot(gl["iteration"], gl["active_fraction"], color=st["color"],
                        linestyle=LINESTYLES[i % len(LINESTYLES)], linewidth=1.2,
                        label=None)
            expected |= set(np.round(gl["expected_active_fraction"].dropna(), 8))
            _ = layer
    for i, q in enumerate(sorted(expected)):
        ax_act.axhline(q, color="black", linestyle=(0, (5, 3)), linewidth=1.0,
                       label="expected Q(beta)" if i == 0 else None)
    layers = sorted(tr["layer"].unique())
    ax_act.legend(handles=[Line2D([], [], color="#555555", linestyle=LINESTYLES[i % 4],
                                  label=f"layer {_fmt_num(lay)}")
                           for i, lay in enumerate(layers)]
                  + [Line2D([], [], color="black", linestyle=(0, (5, 3)),
                            label="expected Q(beta)")],
                  fontsize="small", loc="lower right", framealpha=0.8)
    ax_loss.set_yscale("log")
    ax_loss.set(xlabel="iteration", ylabel="loss (1/2 sum of squared residuals)",
                title="Training loss")
    ax_act.set(xlabel="iteration", ylabel="fraction of neurons active",
               title="Active fraction per layer")
    lo, hi = ax_act.get_ylim()
    ax_act.set_ylim(0, max(hi, 1.6 * max(expected, default=0)))
    _ = lo
    ax_flip.set(xlabel="iteration", ylabel="neurons that changed state (all layers)",
                title="Flips per iteration")
    for ax in axes:
        ax.grid(True, alpha=0.3)
    fig.legend(*ax_loss.get_legend_handles_labels(), loc="outside lower center",
               ncol=min(3, len(cells)), fontsize="small", frameon=False)
    return fig


def fig_exponent_vs_c(data: RunData) -> Figure | None:
    """Fitted per-iteration exponent of subquad vs c (work, seconds) and convergence vs c."""
    if data.fits is None:
        return None
    f = data.fits[(data.fits["method"] == "subquad") & (data.fits["phase"] == "iteration")
                  & (data.fits["axis"] == "m")]
    if "fit" in f:
        f = f[f["fit"] == "slope"]
    f = f.assign(c=[parse_context(x).get("c", math.nan) for x in f["context"]])
    f = f[np.isfinite(f["c"].astype(float))]
    if f["c"].nunique() < 2:
        return None
    options = f.groupby("options")["c"].nunique().idxmax()
    f = f[f["options"] == options]
    conv = _convergence_vs_c(data.training)
    fig, axes = _new_figure(1, 2 if conv is not None else 1,
                            13.5 if conv is not None else 7.5, 4.6)
    ax = axes[0]
    cs = np.sort(f["c"].unique().astype(float))
    width = 0.15 * (cs.max() - cs.min()) / max(len(cs), 1)
    for i, (quantity, mk) in enumerate((("work", "s"), ("seconds", "o"))):
        g = f[f["quantity"] == quantity].sort_values("c")
        if g.empty:
            continue
        x = g["c"].astype(float) + (i - 0.5) * width
        ax.errorbar(x, g["exponent"], yerr=np.vstack([g["exponent"] - g["ci_low"],
                                                      g["ci_high"] - g["exponent"]]),
                    marker=mk, capsize=3, linestyle="-" if quantity == "seconds" else ":",
                    color=METHOD_COLOURS["subquad"] if quantity == "seconds" else "#56B4E9",
                    label=f"subquad, {'wall-clock seconds' if quantity == 'seconds' else 'counted work'}")
    grid = np.linspace(cs.min() - width, cs.max() + width, 10)
    ax.plot(grid, 2 - grid, color="#444444", linestyle=(0, (5, 3)), label="2 - c (predicted)")
    ax.axhline(2.0, color=METHOD_COLOURS["dense-gn"], linestyle=(0, (5, 3)), linewidth=1.0,
               label="2 (dense)")
    ax.set(xlabel="sparsity exponent c", ylabel="fitted exponent of m (95% CI)",
           title=f"Per-iteration exponent vs c ({series_label('subquad', options)})")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="lower left", framealpha=0.85)
    if conv is not None:
        _draw_convergence(axes[1], data, conv)
    return fig


def _convergence_vs_c(training: pd.DataFrame | None) -> pd.DataFrame | None:
    """Final loss / initial loss per subquad cell, for cells spanning >= 2 values of c."""
    if training is None or training["c"].nunique() < 2:
        return None
    per = training.groupby(["cell", "iteration"], as_index=False).first()
    rows = []
    for cell, g in per.groupby("cell"):
        g = g.sort_values("iteration")
        l0, lt = float(g["loss"].iloc[0]), float(g["loss"].iloc[-1])
        if l0 > 0:
            first = g.iloc[0]
            rows.append((cell, first["method"], first["options"], float(first["m"]),
                         float(first["c"]), max(lt / l0, 1e-300), int(g["iteration"].max())))
    df = pd.DataFrame(rows, columns=["cell", "method", "options", "m", "c", "ratio", "T"])
    return df if df["c"].nunique() >= 2 else None


def _draw_convergence(ax: Axes, data: RunData, conv: pd.DataFrame) -> None:
    """Loss ratio after T iterations vs c, one line per (method, options, m)."""
    for (method, options, m), g in conv.groupby(["method", "options", "m"]):
        g = g.groupby("c", as_index=False).agg(ratio=("ratio", "median"), T=("T", "max"))
        st = style(data, method, options)
        ax.plot(g["c"], g["ratio"], color=st["color"], marker=st["marker"],
                linestyle=st["linestyle"],
                label=f"{series_label(method, options)} m={_fmt_num(m)}")
    ax.set_yscale("log")
    ax.set(xlabel="sparsity exponent c",
           ylabel=f"loss after T={int(conv['T'].max())} iterations / initial loss",
           title="Convergence vs c (sparser = slower?)")
    ax.grid(True, alpha=0.3)
    _legend_right(ax)


def fig_ablation(data: RunData) -> Figure | None:
    """Subquad update modes and solvers at each m next to dense-gn: time and phase split."""
    fixed = main_context(data.runs)
    if fixed is None:
        return None
    runs = _select(data.runs[data.runs["method"].isin(TRAINED_METHODS)], fixed)
    summ = summarise(runs, "iteration")
    if summ[summ["method"] == "subquad"]["options"].nunique() < 2:
        return None
    summ = summ[summ["method"].isin(["dense-gn", "subquad"])]
    groups = _series(summ)
    ms = np.sort(summ["m"].unique())
    fig, axes = _new_figure(1, 2, 17.0, 5.0)
    ax = axes[0]
    width = 0.8 / len(groups)
    for i, ((method, options), g) in enumerate(groups.items()):
        pos = np.searchsorted(ms, g["m"].to_numpy()) + (i - (len(groups) - 1) / 2) * width
        st = style(data, method, options)
        ax.bar(pos, g["median"], width=width, color=st["color"], edgecolor="white",
               hatch="//" if st["linestyle"] == "--" else None,
               label=series_label(method, options),
               yerr=np.vstack([g["median"] - g["lo"], g["hi"] - g["median"]]).clip(min=0),
               capsize=2, error_kw={"linewidth": 0.8})
    ax.set_xticks(range(len(ms)), [_fmt_num(m) for m in ms])
    ax.set_yscale("log")
    ax.set(xlabel="width m", ylabel="seconds per iteration (median, 95% CI)",
           title="Update modes and solvers vs dense Gauss-Newton")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", framealpha=0.85)
    _phase_split(axes[1], runs, groups)
    fig.suptitle(f"Ablation of subquad's options ({context_title(fixed, ('m',))})")
    return fig


def _phase_split(ax: Axes, runs: pd.DataFrame, groups: dict[tuple[str, str], pd.DataFrame]
                 ) -> None:
    """Stacked horizontal bars of per-phase seconds at the largest m every series reached."""
    m_common = min(float(g["m"].max()) for g in groups.values())
    labels, left = [], np.zeros(len(groups))
    per_phase = {p: np.zeros(len(groups)) for p in ITER_PHASES}
    for i, (method, options) in enumerate(groups):
        sel = runs[(runs["method"] == method) & (runs["options"] == options)
                   & np.isclose(runs["m"].astype(float), m_common)]
        labels.append(series_label(method, options))
        for p in ITER_PHASES:
            vals = sel.loc[sel["phase"] == p, "seconds"]
            per_phase[p][i] = median_ci(vals)[0] if len(vals) else 0.0
    y = np.arange(len(groups))
    for p in ITER_PHASES:
        vals = np.nan_to_num(per_phase[p])
        if vals.any():
            ax.barh(y, vals * 1e3, left=left * 1e3, color=PHASE_COLOURS[p], label=p, height=0.7)
            left += vals
    ax.set_yticks(y, labels, fontsize="small")
    ax.invert_yaxis()
    ax.set(xlabel="milliseconds per iteration (median per phase)",
           title=f"Phase split at m = {_fmt_num(m_common)}")
    ax.grid(True, axis="x", alpha=0.3)
    _legend_right(ax, title="phase")


def fig_local_slopes(data: RunData) -> Figure | None:
    """Local slopes between neighbouring widths, with CIs and references 2 and 2 - c."""
    ls = data.local_slopes
    if ls is None:
        return None
    ls = ls[ls["method"].isin(TRAINED_METHODS)]
    if "phase" in ls:
        ls = ls[ls["phase"] == "iteration"]
    if "axis" in ls:
        ls = ls[ls["axis"] == "m"]
    x = _slope_x(ls)
    y_col = next((c for c in ("slope", "local_slope", "exponent") if c in ls), None)
    if x is None or y_col is None or ls.empty:
        return None
    ls = ls.assign(_x=x)
    if "context" in ls:
        ctx = ls["context"].mode().iloc[0]
        fixed = main_context(data.runs)
        if fixed is not None:
            matching = ls[[context_matches(c, fixed) for c in ls["context"]]]
            ls = matching if not matching.empty else ls[ls["context"] == ctx]
        else:
            ls = ls[ls["context"] == ctx]
        ctx_dict = parse_context(ls["context"].iloc[0])
    else:
        ctx_dict = {}
    quantities = [q for q in ("seconds", "work", "bytes") if (ls.get("quantity") == q).any()]
    quantities = quantities or [""]
    fig, axes = _new_figure(len(quantities), 1, 10.5, 3.8 * len(quantities))
    for ax, quantity in zip(axes, quantities, strict=True):
        g_q = ls[ls["quantity"] == quantity] if quantity else ls
        series = _series(g_q)
        offsets = np.linspace(-0.06, 0.06, max(len(series), 1))
        for off, ((method, options), g) in zip(offsets, series.items(), strict=True):
            g = g.sort_values("_x")
            st = style(data, method, options)
            yerr = (np.vstack([g[y_col] - g["ci_low"], g["ci_high"] - g[y_col]]).clip(min=0)
                    if {"ci_low", "ci_high"} <= set(g.columns) else None)
            ax.errorbar(g["_x"] * 2**off, g[y_col], yerr=yerr, capsize=2.5, markersize=4.5,
                        label=series_label(method, options), **st)
        ax.axhline(2.0, color="#444444", linestyle=(0, (5, 3)), linewidth=1.0, label="2")
        c = ctx_dict.get("c")
        if isinstance(c, float):
            ax.axhline(2 - c, color="#888888", linestyle=(0, (5, 3)), linewidth=1.0,
                       label=f"2 - c = {2 - c:g}")
        ax.set_xscale("log", base=2)
        ax.set(xlabel="width m (geometric midpoint of neighbouring widths)",
               ylabel=f"local slope d log({quantity or 'cost'}) / d log m",
               title=f"Local slopes of {QUANTITY_LABELS.get(quantity, 'cost')}")
        ax.grid(True, alpha=0.3)
        _legend_right(ax)
    fig.suptitle(f"Local slopes between neighbouring widths ({context_title(ctx_dict)})")
    return fig


def _slope_x(ls: pd.DataFrame) -> pd.Series | None:
    """Where to place a local slope on the m axis: the geometric midpoint of its two widths."""
    for lo, hi in (("m_low", "m_high"), ("m_lo", "m_hi"), ("m0", "m1"), ("x_low", "x_high"),
                   ("x0", "x1")):
        if {lo, hi} <= set(ls.columns):
            return np.sqrt(ls[lo].astype(float) * ls[hi].astype(float))
    for col in ("m_mid", "m", "x_mid", "x"):
        if col in ls:
            return ls[col].astype(float)
    return None


# -- driver ----------------------------------------------------------------------------------

FIGURES: dict[str, Callable[[RunData], Figure | None]] = {
    "time_vs_m": fig_time_vs_m,
    "phases_vs_m": fig_phases_vs_m,
    "init_vs_iteration": fig_init_vs_iteration,
    "work_vs_m": fig_work_vs_m,
    "time_vs_n_d": fig_time_vs_n_d,
    "training": fig_training,
    "exponent_vs_c": fig_exponent_vs_c,
    "ablation": fig_ablation,
    "local_slopes": fig_local_slopes,
}


def plot_run(run_dir: Path) -> list[Path]:
    """Write ``run_dir/figures/<name>.png`` and ``.pdf`` for every figure whose data exists."""
    data = load_run(Path(run_dir))
    out_dir = Path(run_dir) / "figures"
    written: list[Path] = []
    for name, make in FIGURES.items():
        fig = make(data)
        if fig is None:
            continue
        out_dir.mkdir(parents=True, exist_ok=True)
        for ext in ("png", "pdf"):
            path = out_dir / f"{name}.{ext}"
            fig.savefig(path, dpi=DPI if ext == "png" else None)
            written.append(path)
    return written
