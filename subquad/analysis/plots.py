"""Figures of a run directory: scaling in m, n, d, phases, counted work, training, ablation.

Every figure reads the tidy tables of DESIGN.md (``runs.csv``, ``training.csv``, ``fits.csv``,
``local_slopes.csv``, ``crossover.csv``) and is skipped when its data is absent from the run.
Figures are drawn on plain :class:`matplotlib.figure.Figure` objects with the Agg canvas, so no
global pyplot state or interactive backend is involved.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator

from subquad.analysis.rundata import (
    RunData,
    context_matches,
    context_title,
    context_values,
    default_options,
    exponent_text,
    find_fit,
    load_run,
    main_context,
    parse_range,
    same_context,
    select_rows,
    series_rows,
    summarise,
    sweeps,
)
from subquad.analysis.stats import coverage_text, median_ci
from subquad.files import atomic_savefig
from subquad.model.methods import method_names
from subquad.results.format import fmt_number, fmt_seconds, options_label, series_label
from subquad.results.rundir import RunDir
from subquad.vocabulary import ITERATION_PHASES

# -- constants ---------------------------------------------------------------------------------

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
PHASE_MARKERS = {"forward": "o", "backward": "s", "gram": "^", "solve": "D", "update": "v",
                 "fold": "P", "iteration": "x"}
HATCHES = (None, "//", "..", "xx", "\\\\", "++", "oo", "--")

# -- styles ------------------------------------------------------------------------------------


def _assign_styles(data: RunData) -> dict[tuple[str, str], dict]:
    """One colour per method; option variants get shades, markers and line styles."""
    counts: dict[tuple[str, str], int] = {}
    for df in (data.runs, data.training, data.fits, data.local_slopes):
        if df is not None and {"method", "options"} <= set(df.columns):
            for key, n in df.groupby(["method", "options"]).size().items():
                counts[key] = counts.get(key, 0) + int(n)
    styles = {}
    for method in sorted({k[0] for k in counts}):
        # the most frequent variant (the default configuration) gets the method's own colour
        variants = sorted((o for mm, o in counts if mm == method),
                          key=lambda o, mm=method: (-counts[(mm, o)], o))
        base = METHOD_COLOURS.get(method, "#666666")
        for i, opt in enumerate(variants):
            colour = SUBQUAD_SHADES[i % len(SUBQUAD_SHADES)] if method == "subquad" else base
            styles[(method, opt)] = {"color": colour, "marker": MARKERS[i % len(MARKERS)],
                                     "linestyle": LINESTYLES[i % len(LINESTYLES)]}
            if method == "dense-gn":  # the baseline is drawn wide, so curves on it stay visible
                styles[(method, opt)] |= {"linewidth": 3.0, "markersize": 7.0, "alpha": 0.8}
    return styles


def style(data: RunData, method: str, options: str) -> dict:
    """Matplotlib keyword arguments of one (method, options) series."""
    return dict(data.styles.get((method, options),
                                {"color": METHOD_COLOURS.get(method, "#666666"), "marker": "o",
                                 "linestyle": "-"}))


# -- drawing helpers -------------------------------------------------------------------------


def _yerr(g: pd.DataFrame, mid: str = "median", lo: str = "lo", hi: str = "hi") -> np.ndarray:
    """Error bar lengths (below, above) of column ``mid`` from its interval columns."""
    return np.vstack([g[mid] - g[lo], g[hi] - g[mid]]).clip(min=0)


def _errorbar(ax: Axes, data: RunData, grp: pd.DataFrame, x: str, method: str, options: str,
              label: str, **kw) -> None:
    """Medians with CI error bars of one series, in its style."""
    grp = grp.sort_values(x)
    st = {"capsize": 2.5, "markersize": 4.5, "linewidth": 1.2} | style(data, method, options)
    st.update({k: v for k, v in kw.items() if v is not None})
    ax.errorbar(grp[x], grp["median"], yerr=_yerr(grp), label=label, **st)


def _fitted_series(ax: Axes, data: RunData, groups: dict[tuple[str, str], pd.DataFrame],
                   axis: str, quantity: str, fixed: dict[str, object], lines: bool = True
                   ) -> None:
    """Each series' medians vs ``axis``, labelled with its fitted per-iteration exponent of
    ``quantity``, and (``lines``) the fitted power law under it."""
    for (method, options), g in groups.items():
        row = find_fit(data.fits, method, options, "iteration", quantity, axis, fixed)
        fit = exponent_text(row)
        _errorbar(ax, data, g, axis, method, options,
                  series_label(method, options) + (f": {axis}^{fit}" if fit else ""))
        if lines:
            _fit_line(ax, g, axis, row, style(data, method, options)["color"])


def _fit_line(ax: Axes, grp: pd.DataFrame, x: str, row: pd.Series | None, colour: str) -> None:
    """The fitted power law of ``row`` over its fit range (thick translucent line)."""
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
    log_c = row.get("intercept", np.nan)
    if not np.isfinite(pd.to_numeric(log_c, errors="coerce")):
        log_c = float(np.mean(np.log(ys[keep]) - k * np.log(xs[keep])))
    grid = np.geomspace(xs[keep].min(), xs[keep].max(), 50)
    ax.plot(grid, np.exp(float(log_c)) * grid**k, color=colour, linewidth=4.0, alpha=0.25,
            solid_capstyle="round", zorder=1)


def _references(ax: Axes, groups: dict[tuple[str, str], pd.DataFrame], x: str,
                fixed: dict[str, object]) -> None:
    """Reference slopes 2 and 2 - c anchored at the dense baseline's first point: dashed grey
    power laws up to the largest x."""
    anchor = _anchor(groups, x)
    if anchor is None:
        return
    x0, y0 = anchor
    c = float(fixed.get("c", math.nan))
    refs = {"reference slope 2": 2.0}
    if np.isfinite(c):
        refs[f"reference slope 2 - c = {2 - c:g}"] = 2.0 - c
    grid = np.geomspace(x0, max(float(g[x].max()) for g in groups.values()), 20)
    for (label, k), grey in zip(refs.items(), ("#333333", "#999999")):
        ax.plot(grid, y0 * (grid / x0) ** k, linestyle=(0, (5, 3)), linewidth=1.0,
                color=grey, label=label, zorder=0)


def _anchor(groups: dict[tuple[str, str], pd.DataFrame], x: str) -> tuple[float, float] | None:
    """The dense baseline's first point (else the first series' first point)."""
    order = sorted(groups, key=lambda k: (k[0] != "dense-gn", k[0] != "dense-gd", k))
    for key in order:
        g = groups[key].sort_values(x)
        g = g[g["median"] > 0]
        if not g.empty:
            return float(g[x].iloc[0]), float(g["median"].iloc[0])
    return None


def _tick_label(value: float, _pos: object = None) -> str:
    """Axis tick text: integers in full (1024, 32768), other values compactly."""
    if value >= 1 and abs(value - round(value)) < 1e-9:
        return f"{int(round(value))}"
    return f"{value:g}"


def _log_x(ax: Axes) -> None:
    """Base-2 log x axis with plain-number ticks (512, 1024, ...) and no minor ticks."""
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(LogLocator(base=2, numticks=9))
    ax.xaxis.set_major_formatter(FuncFormatter(_tick_label))
    ax.xaxis.set_minor_locator(NullLocator())


def _decorate(ax: Axes, grid: str = "both", **labels) -> None:
    """Axis labels and title (``ax.set`` keywords), a medium-size title and a light grid."""
    ax.set(**labels)
    ax.title.set_fontsize("medium")
    ax.grid(True, axis=grid, alpha=0.3)


def _loglog(ax: Axes, xlabel: str, ylabel: str, title: str) -> None:
    """Log-log axes (x base 2) with labels, title and a light grid."""
    _log_x(ax)
    ax.set_yscale("log")
    lo, hi = ax.get_ylim()
    if lo > 0 and hi / lo > 100:  # several decades: major ticks suffice (and draw much faster)
        ax.yaxis.set_minor_locator(NullLocator())
    _decorate(ax, xlabel=xlabel, ylabel=ylabel, title=title)


def _legend(ax: Axes, below: bool = False, ncol: int = 1, top: float = -0.16, **kw) -> None:
    """Legend outside the axes, so it never covers data: on the right, or (``below``) under
    the axes in ``ncol`` columns with its top at ``top`` axes heights. Data series come
    first, then reference slopes, then markers such as m*."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        rank = [2 if s.startswith("crossover") else int(s.startswith("reference")) for s in labels]
        order = sorted(range(len(labels)), key=lambda i: rank[i])
        place = ({"loc": "upper center", "bbox_to_anchor": (0.5, top), "ncol": ncol} if below
                 else {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0)})
        ax.legend([handles[i] for i in order], [labels[i] for i in order], fontsize="small",
                  frameon=False, **place, **kw)


def _new_figure(rows: int, cols: int, width: float, height: float) -> tuple[Figure, list[Axes]]:
    """A constrained-layout figure with rows x cols axes, returned as a flat list."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def _trained(summary: pd.DataFrame) -> pd.DataFrame:
    """Rows of the trained methods only (no calibration kernels)."""
    return summary[summary["method"].isin(method_names())]


def _method_rank(method: str) -> int:
    """Drawing order of methods: dense-gn, dense-gd, subquad, then anything else."""
    return method_names().index(method) if method in method_names() else len(method_names())


def _series(df: pd.DataFrame, x: str | None = None, min_points: int = 1
            ) -> dict[tuple[str, str], pd.DataFrame]:
    """Split a frame by (method, options), dense first; drop series with too few x values."""
    out = {k: g for k, g in df.groupby(["method", "options"], sort=True)
           if x is None or g[x].nunique() >= min_points}
    return dict(sorted(out.items(), key=lambda kv: (_method_rank(kv[0][0]), kv[0])))


def _switches(data: RunData, fixed: dict[str, object], method: str, options: str
              ) -> list[tuple[float, float, str, str]]:
    """Where a series' resolved update mode changes along m: (m before, m after, from, to).

    ``update=auto`` picks rowdense or scatter by Q(beta) at each width; runs.csv records what
    ran (``update_resolved``), so the figure can say why the curve bends there.
    """
    if data.runs is None or "update_resolved" not in data.runs:
        return []
    sel = series_rows(data.runs, method, options, fixed, "iteration")
    by_m = sel.groupby("m")["update_resolved"].agg(lambda v: "+".join(sorted(set(v) - {""})))
    by_m = by_m[by_m != ""].sort_index()
    return [(float(a), float(b), str(ma), str(mb))
            for (a, ma), (b, mb) in zip(by_m.items(), list(by_m.items())[1:]) if ma != mb]


def _switch_rule(to: str) -> str:
    """The auto rule that picks update mode ``to`` (constants from model/subquadratic.py)."""
    from subquad.model.subquadratic import (  # noqa: PLC0415
        AUTO_DENSITY_SPLIT,
        AUTO_FUSED_MIN_W_BYTES,
    )

    if to == "fused":
        return f"one W_l >= {AUTO_FUSED_MIN_W_BYTES / 2**20:g} MiB"
    return f"Q(beta) = {AUTO_DENSITY_SPLIT:g}"


def _mark_switches(ax: Axes, data: RunData, fixed: dict[str, object],
                   series: Iterable[tuple[str, str]], x_of: Callable[[float, float], float]
                   ) -> None:
    """A dotted vertical line where ``update=auto`` switches mode, named in the legend."""
    for method, options in series:
        for lo, hi, a, b in _switches(data, fixed, method, options):
            ax.axvline(x_of(lo, hi), color="#555555", linestyle=":", linewidth=1.2,
                       label=f"update=auto switches {a} -> {b}\n  between m = "
                             f"{fmt_number(lo)} and {fmt_number(hi)} ({_switch_rule(b)})")


def _crossover_rows(data: RunData, fixed: dict[str, object], options: str | None
                    ) -> pd.DataFrame:
    """Crossover rows (seconds) of this panel's context and subquad configuration."""
    cx = data.crossover
    if cx is None:
        return pd.DataFrame()
    sel = same_context(cx, fixed)
    if "quantity" in sel:
        sel = sel[sel["quantity"].isin(["seconds", ""])]
    if options is not None and "options" in sel:
        sel = sel[sel["options"] == options]
    return sel


def _mark_crossover(ax: Axes, data: RunData, fixed: dict[str, object], options: str | None,
                    xrange: tuple[float, float]) -> None:
    """Vertical line at m* and a shaded band over its interval, clipped to the data range;
    an m* far outside the range is only named in the legend."""
    if options is None:
        return
    xmin, xmax = xrange
    for _, row in _crossover_rows(data, fixed, options).iterrows():
        m_star, lo, hi = (float(row[k]) for k in ("m_star", "ci_low", "ci_high"))  # inf: open
        if not np.isfinite(m_star):
            continue
        who = options_label(str(row["options"]), "subquad") or "subquad"
        if row["kind"] == "below range":
            ax.plot([], [], color="#009E73", linewidth=1.3,
                    label=f"crossover m* below the measured range:\n  subquad {who} is "
                          f"cheaper from the smallest width m = {fmt_number(row['min_m'])}")
            continue
        label = (f"crossover m* = {_tick_label(round(m_star))} [{_tick_label(round(lo))}, "
                 f"{_tick_label(round(hi)) if np.isfinite(hi) else 'beyond range'}], "
                 f"{row['kind']}\n  (subquad {who} overtakes dense-gn)")
        if not xmin / 2 <= m_star <= 2 * xmax:
            ax.plot([], [], color="#009E73", linewidth=1.3, label=label + ", off the plot")
            continue
        if np.isfinite(lo) and not np.isnan(hi):
            ax.axvspan(max(lo, xmin), min(hi, xmax), color="#009E73", alpha=0.12, linewidth=0)
        ax.axvline(m_star, color="#009E73", linewidth=1.3, label=label)


# -- figures ---------------------------------------------------------------------------------


def fig_time_vs_m(data: RunData) -> Figure | None:
    """Per-iteration seconds vs m, fitted power laws, reference slopes 2 and 2 - c, m*."""
    if data.runs is None:
        return None
    panels = sweeps(_trained(summarise(data.runs, "iteration")), "m")[:6]
    if not panels:
        return None
    fig, axes = _new_figure(len(panels), 1, 11.0, 4.2 * len(panels))
    for ax, (fixed, grp) in zip(axes, panels, strict=True):
        groups = _series(grp, "m", 2)
        _fitted_series(ax, data, groups, "m", "seconds", fixed)
        _references(ax, groups, "m", fixed)
        _mark_crossover(ax, data, fixed, default_options(grp, "subquad"),
                        (float(grp["m"].min()), float(grp["m"].max())))
        _mark_switches(ax, data, fixed, groups, lambda a, b: math.sqrt(a * b))
        _loglog(ax, "width m (neurons per layer)",
                f"seconds per iteration (median, {coverage_text(grp['coverage'])})",
                f"Per-iteration time vs width ({context_title(fixed, skip=('m',))})")
        _legend(ax)
    return fig


def fig_phases_vs_m(data: RunData) -> Figure | None:
    """Per-phase seconds vs m (lines) and each phase's share (stacked), per method."""
    fixed = main_context(data.runs)
    if fixed is None:
        return None
    runs = select_rows(data.runs[data.runs["method"].isin(method_names())], fixed)
    chosen = [(m, o) for m in method_names() if (o := default_options(runs, m)) is not None]
    if not chosen:
        return None
    fig, axes = _new_figure(2, len(chosen), 4.6 * len(chosen) + 1.4, 7.4)
    for col, (method, options) in enumerate(chosen):
        sel = series_rows(runs, method, options)
        phases = {p: summarise(sel, p).set_index("m")["median"] for p in
                  (*working_phases(sel), "iteration")}
        title = series_label(method, options)
        for lo, hi, a, b in _switches(data, fixed, method, options):
            for ax in (axes[col], axes[len(chosen) + col]):
                ax.axvline(math.sqrt(lo * hi), color="#555555", linestyle=":", linewidth=1.2)
            title += f"\n(dotted: auto update {a} -> {b}, m {fmt_number(lo)}-{fmt_number(hi)})"
        _phase_lines(axes[col], phases, title)
        _phase_shares(axes[len(chosen) + col], phases)
    drawn = set(working_phases(runs))
    handles = [Line2D([], [], color=PHASE_COLOURS[p], marker=PHASE_MARKERS[p], markersize=5,
                      linestyle="--" if p == "iteration" else "-",
                      label="whole iteration" if p == "iteration" else p)
               for p in (*ITERATION_PHASES, "iteration") if p in drawn or p == "iteration"]
    idle = [p for p in ITERATION_PHASES if p not in drawn]
    if idle:
        handles.append(Line2D([], [], linestyle="none",
                              label=f"not drawn (no counted work):\n{', '.join(idle)}"))
    fig.legend(handles=handles, loc="outside right upper", fontsize="small", frameon=False,
               title="phase")
    fig.suptitle(f"Where the iteration's time goes, per phase ({context_title(fixed, ('m',))})")
    return fig


def working_phases(runs: pd.DataFrame) -> list[str]:
    """The iteration phases that did counted work somewhere in ``runs``: a phase with zero
    work everywhere (e.g. the fold of a non-lazy update) only times the timer, so it is not
    drawn."""
    work = runs.groupby("phase")["work"].max()
    return [p for p in ITERATION_PHASES if p in work and work[p] > 0]


def _phase_lines(ax: Axes, phases: dict[str, pd.Series], title: str) -> None:
    """Median seconds of each phase vs m (log-log); phases that never cost time are left out."""
    for phase, med in phases.items():
        med = med[med > 0].sort_index()
        if med.empty:
            continue
        total = phase == "iteration"
        ax.plot(med.index, med.to_numpy(), color=PHASE_COLOURS[phase],
                marker=PHASE_MARKERS[phase], markersize=5 if total else 4,
                markerfacecolor="none", linewidth=1.8 if total else 1.1,
                linestyle="--" if total else "-", alpha=0.9)
    _loglog(ax, "width m", "seconds per iteration (median)", title)


def _phase_shares(ax: Axes, phases: dict[str, pd.Series]) -> None:
    """Stacked share of each phase in the sum of the phase medians, vs m."""
    frame = pd.DataFrame({p: phases[p] for p in ITERATION_PHASES if p in phases}).fillna(0.0)
    frame = frame.sort_index()
    total = frame.sum(axis=1).replace(0.0, np.nan)
    shares = frame.div(total, axis=0).fillna(0.0)
    shares = shares.loc[:, shares.max() > 0]
    if not shares.empty:
        ax.stackplot(shares.index.to_numpy(float), *(100 * shares[p].to_numpy() for p in shares),
                     colors=[PHASE_COLOURS[p] for p in shares], alpha=0.85)
    _log_x(ax)
    _decorate(ax, xlabel="width m", ylabel="share of iteration time (%)", ylim=(0, 100),
              title="share of each phase")


def fig_init_vs_iteration(data: RunData) -> Figure | None:
    """Initialisation cost vs per-iteration cost vs m, seconds and counted work."""
    fixed = main_context(data.runs)
    if fixed is None:
        return None
    runs = select_rows(data.runs[data.runs["method"].isin(["dense-gn", "subquad"])], fixed)
    if runs[runs["phase"] == "init"]["m"].nunique() < 2:
        return None
    fig, axes = _new_figure(1, 2, 12.5, 5.6)
    for ax, quantity in zip(axes, ("seconds", "work"), strict=True):
        _init_panel(ax, data, runs, fixed, quantity)
    fig.suptitle("m^2 is paid once at initialisation; an iteration should cost m^(2-c) "
                 f"({context_title(fixed, ('m',))})")
    return fig


def _init_panel(ax: Axes, data: RunData, runs: pd.DataFrame, fixed: dict[str, object],
                quantity: str) -> None:
    """Init (solid) and one iteration (dashed) of dense-gn and subquad, with exponents."""
    for method in ("dense-gn", "subquad"):
        options = default_options(runs[runs["phase"] == "iteration"], method)
        if options is None:
            continue
        sel = series_rows(runs, method, options)
        for phase in ("init", "iteration"):
            g = summarise(sel, phase, quantity) if quantity in sel else pd.DataFrame()
            g = g[g["median"] > 0] if not g.empty else g
            if g.empty or g["m"].nunique() < 2:
                continue
            fit = exponent_text(find_fit(data.fits, method, options, phase, quantity, "m",
                                         fixed))
            init = phase == "init"
            hollow = method == "dense-gn" and init  # dense init lies under subquad's init
            _errorbar(ax, data, g, "m", method, options,
                      f"{method} {'initialisation' if init else 'one iteration'}"
                      + (f": m^{fit}" if fit else ""),
                      linestyle="-" if init else "--", marker="o" if init else "s",
                      markerfacecolor="none" if hollow else None, markersize=7 if hollow else 4.5)
    unit = "seconds" if quantity == "seconds" else "multiply-adds (init: weights drawn)"
    _loglog(ax, "width m", unit, f"Initialisation vs one iteration ({quantity})")
    _legend(ax, below=True)


def fig_work_vs_m(data: RunData) -> Figure | None:
    """Counted multiply-adds and bytes per iteration vs m, with fitted exponents."""
    fixed = main_context(data.runs)
    if fixed is None or "work" not in data.runs:
        return None
    runs = select_rows(data.runs[data.runs["method"].isin(method_names())], fixed)
    quantities = [q for q in ("work", "bytes") if q in runs and runs[q].notna().any()
                  and (summarise(runs, "iteration", q).groupby("method")["m"].nunique() >= 2).any()]
    if not quantities:
        return None
    fig, axes = _new_figure(len(quantities), 1, 11.0, 4.0 * len(quantities))
    for ax, quantity in zip(axes, quantities, strict=True):
        summ = summarise(runs, "iteration", quantity)
        groups = _series(summ[summ["median"] > 0], "m", 2)
        _fitted_series(ax, data, groups, "m", quantity, fixed, lines=False)
        _references(ax, groups, "m", fixed)
        what = "multiply-adds" if quantity == "work" else "bytes of weights read"
        _loglog(ax, "width m", f"{what} per iteration", f"Counted {what} per iteration")
        _legend(ax)
    fig.suptitle(f"Counted work per iteration, deterministic ({context_title(fixed, ('m',))})")
    return fig


def fig_time_vs_n_d(data: RunData) -> Figure | None:
    """Per-iteration seconds vs n and vs d (one panel each, longest sweep of each axis)."""
    if data.runs is None:
        return None
    summ = _trained(summarise(data.runs, "iteration"))
    found = [(axis, s[0]) for axis in ("n", "d") if (s := sweeps(summ, axis, 2))]
    if not found:
        return None
    fig, axes = _new_figure(1, len(found), 6.2 * len(found), 5.4)
    for ax, (axis, (fixed, grp)) in zip(axes, found, strict=True):
        _fitted_series(ax, data, _series(grp, axis, 2), axis, "seconds", fixed)
        name = "training samples n" if axis == "n" else "input dimension d"
        _loglog(ax, name, f"seconds per iteration (median, {coverage_text(summ['coverage'])})",
                f"Time vs {axis} ({context_title(fixed, (axis,))})")
        _legend(ax, below=True)
    return fig


def _training_contexts(training: pd.DataFrame, rows: int = 6, limit: int = 6
                       ) -> list[tuple[str, list[pd.DataFrame]]]:
    """Per context (data, threshold, c, n, ...): its widest cell of each (method, options)."""
    keys = [k for k in ("data", "threshold", "c", "n", "d", "L") if k in training]
    meta = training.drop_duplicates("cell")
    varying = [k for k in keys if meta[k].nunique(dropna=False) > 1]
    groups = meta.groupby(varying, dropna=False, sort=True) if varying else [((), meta)]
    out = []
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        g = g.sort_values("m", ascending=False).drop_duplicates(["method", "options"])
        order = sorted(g.itertuples(), key=lambda r: (_method_rank(r.method), r.options))
        title = ", ".join(f"{k}={fmt_number(v) if isinstance(v, float) else v}"
                          for k, v in zip(varying, key, strict=True))
        out.append((title, [training[training["cell"] == r.cell] for r in order[:limit]]))
    return out[:rows]


def fig_training(data: RunData) -> Figure | None:
    """Loss, active fraction per layer (vs Q(beta)) and flips per iteration, one row a context."""
    tr = data.training
    needed = {"iteration", "loss", "cell", "method", "options", "m", "layer", "active_fraction"}
    if tr is None or not needed <= set(tr.columns):
        return None
    if "flips" not in tr:
        tr = tr.assign(flips=np.nan)
    contexts = _training_contexts(tr)
    fig, flat = _new_figure(len(contexts), 3, 16.0, 1.0 + 4.0 * len(contexts))
    for row, (title, cells) in enumerate(contexts):
        axes = flat[3 * row: 3 * row + 3]
        expected: set[float] = set()
        for i, cell in enumerate(cells):
            # earlier cells are drawn wider, so identical curves (same iterates) stay visible
            width = 1.2 + 2.0 * (len(cells) - 1 - i) / max(len(cells) - 1, 1)
            expected |= _draw_training_cell(axes, data, cell, width)
        top = max([*expected, *(float(cell["active_fraction"].max()) for cell in cells)])
        _finish_training_axes(axes, sorted(expected), sorted(tr["layer"].unique()), top)
        if title:
            for ax in axes:
                ax.set_title(f"{ax.get_title()}\n{title}", fontsize="medium")
        axes[0].legend(fontsize="small", loc="upper right", framealpha=0.85)
    fig.suptitle("Training: geometric loss decay, activity near Q(beta), few state changes")
    return fig


def _draw_training_cell(axes: list[Axes], data: RunData, cell: pd.DataFrame, width: float
                        ) -> set[float]:
    """Loss, per-layer activity and flips of one cell; returns its expected activity levels."""
    ax_loss, ax_act, ax_flip = axes
    first = cell.iloc[0]
    method, options = str(first["method"]), str(first["options"])
    st = style(data, method, options)
    line = {"color": st["color"], "linewidth": width, "alpha": 0.85}
    per_iter = cell.groupby("iteration").agg(loss=("loss", "first"), flips=("flips", "sum"))
    ax_loss.plot(per_iter.index, per_iter["loss"].clip(lower=1e-300), marker=st["marker"],
                 markersize=4, label=f"{series_label(method, options)}, "
                 f"m={fmt_number(first['m'])}", **line)
    steps = per_iter[per_iter.index > 0]
    ax_flip.plot(steps.index, steps["flips"], marker=st["marker"], markersize=4, **line)
    expected: set[float] = set()
    for j, (_, gl) in enumerate(cell.groupby("layer")):
        ax_act.plot(gl["iteration"], gl["active_fraction"],
                    linestyle=LINESTYLES[j % len(LINESTYLES)], **line)
        if "expected_active_fraction" in gl:
            expected |= set(np.round(gl["expected_active_fraction"].dropna(), 10))
    return expected


def _finish_training_axes(axes: list[Axes], expected: list[float], layers: list, top: float
                          ) -> None:
    """Scales, expected Q(beta) lines, labels and legends of the three training panels."""
    ax_loss, ax_act, ax_flip = axes
    for q in expected:
        ax_act.axhline(q, color="black", linestyle=(0, (5, 3)), linewidth=1.0, zorder=0)
    # the activity panel's legend: one line style per layer, plus the expected level
    handles = [Line2D([], [], color="#555555", linestyle=LINESTYLES[i % len(LINESTYLES)],
                      label=f"layer {fmt_number(lay)}") for i, lay in enumerate(layers)]
    handles.append(Line2D([], [], color="black", linestyle=(0, (5, 3)),
                          label="expected Q(beta)"))
    ax_act.legend(handles=handles, fontsize="small", loc="upper right", ncol=2, framealpha=0.85)
    ax_act.set_ylim(0, 1.5 * top)
    ax_loss.set_yscale("log")
    ax_loss.set(xlabel="iteration", ylabel="loss (1/2 sum of squared residuals)",
                title="Training loss (Gauss-Newton)")
    ax_act.set(xlabel="iteration", ylabel="fraction of neurons active (mean over samples)",
               title="Active fraction per layer vs Q(beta)")
    ax_flip.set(xlabel="iteration", ylabel="neurons that changed state, all layers",
                title="Flips per iteration")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def fig_exponent_vs_c(data: RunData) -> Figure | None:
    """Fitted per-iteration exponent of subquad vs c (work, seconds) and convergence vs c."""
    if data.fits is None:
        return None
    f = data.fits[(data.fits["method"] == "subquad") & (data.fits["phase"] == "iteration")
                  & (data.fits["axis"] == "m")]
    if "fit" in f:
        f = f[f["fit"] == "slope"]
    main = main_context(data.runs)
    if main is not None:  # the same machine, sizes and settings as the main sweep, except c
        f = same_context(f, {k: v for k, v in main.items() if k != "c"})
    f = f.assign(c=[float(context_values(x).get("c", math.nan)) for x in f["context"]])
    f = f[np.isfinite(f["c"])]
    if f["c"].nunique() < 2:
        return None
    options = f.groupby("options")["c"].nunique().idxmax()
    f = f[f["options"] == options]
    conv = _convergence_vs_c(data.training)
    fig, axes = _new_figure(1, 2 if conv is not None else 1,
                            14.0 if conv is not None else 7.0, 5.0)
    _draw_exponents(axes[0], f, options)
    if conv is not None:
        _draw_convergence(axes[1], data, conv)
    return fig


def _draw_exponents(ax: Axes, f: pd.DataFrame, options: str) -> None:
    """Exponent vs c with CIs for work and seconds, and the 2 - c and 2 references."""
    cs = np.sort(f["c"].unique())
    span = float(cs.max() - cs.min())
    shift = 0.012 * span
    for i, quantity in enumerate(("work", "seconds")):
        g = f[f["quantity"] == quantity].sort_values("c")
        if g.empty:
            continue
        secs = quantity == "seconds"
        ax.errorbar(g["c"] + (i - 0.5) * shift, g["exponent"],
                    yerr=_yerr(g, "exponent", "ci_low", "ci_high"),
                    marker="o" if secs else "s", capsize=3, linestyle="-" if secs else ":",
                    color=METHOD_COLOURS["subquad"] if secs else "#56B4E9",
                    label="subquad, wall-clock seconds" if secs else "subquad, counted work")
    grid = np.linspace(cs.min() - 0.05 * span, cs.max() + 0.05 * span, 10)
    ax.plot(grid, 2 - grid, color="#333333", linestyle=(0, (5, 3)),
            label="reference 2 - c (predicted)")
    ax.axhline(2.0, color=METHOD_COLOURS["dense-gn"], linestyle=(0, (5, 3)), linewidth=1.0,
               label="reference 2 (dense baseline)")
    _decorate(ax, xlabel="sparsity exponent c", ylabel="fitted exponent of m (95% CI)",
              title=f"Per-iteration exponent vs c, {series_label('subquad', options)}")
    _legend(ax, below=True, ncol=2, top=-0.14)


#: iterations after which convergence is compared: Gauss-Newton reaches the float noise floor
#: within a few steps, after which the loss ratio says nothing about c
CONVERGENCE_ITER = 2


def _convergence_vs_c(training: pd.DataFrame | None) -> pd.DataFrame | None:
    """Loss after CONVERGENCE_ITER steps / initial loss per cell, over at least two c."""
    if training is None or "c" not in training or training["c"].nunique() < 2:
        return None
    per = training.groupby(["cell", "iteration"], as_index=False).first()
    rows = []
    for cell, g in per.groupby("cell"):
        g = g.sort_values("iteration")
        g = g[g["iteration"] <= CONVERGENCE_ITER]
        l0, lt = float(g["loss"].iloc[0]), float(g["loss"].iloc[-1])
        if l0 > 0:
            first = g.iloc[0]
            rows.append((cell, first["method"], first["options"], float(first["m"]),
                         float(first["c"]), max(lt / l0, 1e-300), int(g["iteration"].max())))
    df = pd.DataFrame(rows, columns=["cell", "method", "options", "m", "c", "ratio", "T"])
    return df if df["c"].nunique() >= 2 else None


def _draw_convergence(ax: Axes, data: RunData, conv: pd.DataFrame) -> None:
    """Loss ratio after T early iterations vs c, one line per (method, options, m)."""
    for (method, options, m), g in conv.groupby(["method", "options", "m"]):
        g = g.groupby("c", as_index=False)["ratio"].median()
        st = style(data, method, options)
        single = len(g) == 1  # e.g. the dense baseline at one c: a large open marker
        ax.plot(g["c"], g["ratio"], color=st["color"], marker=st["marker"],
                linestyle=st["linestyle"], markersize=11 if single else 6,
                markerfacecolor="none" if single else st["color"], markeredgewidth=1.6,
                label=f"{series_label(method, options)}, m={fmt_number(m)}")
    ax.set_yscale("log")
    _decorate(ax, xlabel="sparsity exponent c",
              ylabel=f"loss after T = {int(conv['T'].max())} iterations / initial loss "
              "(lower: faster)",
              title="Convergence vs c (larger c: sparser, cheaper, slower to train?)")
    _legend(ax, below=True, ncol=2)


def fig_ablation(data: RunData) -> Figure | None:
    """Subquad update modes and solvers at each m next to dense-gn: time and phase split."""
    fixed = main_context(data.runs)
    if fixed is None:
        return None
    runs = select_rows(data.runs[data.runs["method"].isin(["dense-gn", "subquad"])], fixed)
    summ = summarise(runs, "iteration")
    sub = summ[summ["method"] == "subquad"]
    ms = np.sort(sub.groupby("m")["options"].nunique().loc[lambda s: s >= 2].index)
    if len(ms) == 0:
        return None
    summ = summ[summ["m"].isin(ms)]
    groups = _series(summ)
    fig, axes = _new_figure(1, 2, 16.0, 5.6)
    _ablation_bars(axes[0], data, groups, ms)
    _phase_split(axes[1], runs, groups, float(ms.max()))
    fig.suptitle(f"Ablation of subquad's update modes and solvers "
                 f"({context_title(fixed, ('m',))})")
    return fig


def _ablation_bars(ax: Axes, data: RunData, groups: dict[tuple[str, str], pd.DataFrame],
                   ms: np.ndarray) -> None:
    """Grouped bars: median seconds per iteration with CI, one group per m."""
    width = 0.8 / len(groups)
    for i, ((method, options), g) in enumerate(groups.items()):
        pos = np.searchsorted(ms, g["m"].to_numpy()) + (i - (len(groups) - 1) / 2) * width
        st = style(data, method, options)
        ax.bar(pos, g["median"], width=width, color=st["color"], edgecolor="white",
               hatch=HATCHES[i % len(HATCHES)], label=series_label(method, options),
               yerr=_yerr(g), capsize=2, error_kw={"linewidth": 0.8})
    ax.set_xticks(range(len(ms)), [fmt_number(m) for m in ms])
    ax.set_yscale("log")
    _decorate(ax, "y", xlabel="width m",
              ylabel="seconds per iteration (median, "
                     f"{coverage_text(pd.concat(list(groups.values()))['coverage'])})",
              title="Per-iteration time vs dense Gauss-Newton")
    _legend(ax, below=True, ncol=2)


def _phase_split(ax: Axes, runs: pd.DataFrame, groups: dict[tuple[str, str], pd.DataFrame],
                 m: float) -> None:
    """Stacked horizontal bars: each phase's share of the iteration at width m, total noted."""
    labels, left = [], np.zeros(len(groups))
    per_phase = {p: np.zeros(len(groups)) for p in ITERATION_PHASES}
    for i, (method, options) in enumerate(groups):
        sel = series_rows(runs, method, options, m=m)
        labels.append(series_label(method, options))
        for p in ITERATION_PHASES:
            vals = sel.loc[sel["phase"] == p, "seconds"]
            per_phase[p][i] = median_ci(vals).median if len(vals) else 0.0
    totals = sum(np.nan_to_num(v) for v in per_phase.values())
    y = np.arange(len(groups))
    for p in ITERATION_PHASES:
        share = 100 * np.nan_to_num(per_phase[p]) / np.where(totals > 0, totals, 1)
        if share.any():
            ax.barh(y, share, left=left, color=PHASE_COLOURS[p], label=p, height=0.7)
            left += share
    for yi, total in zip(y, totals, strict=True):
        if total > 0:
            ax.text(101, yi, fmt_seconds(total), va="center", fontsize="small")
    ax.set_yticks(y, labels, fontsize="small")
    ax.invert_yaxis()
    ax.set_xlim(0, 118)
    _decorate(ax, "x", xlabel="share of the iteration's time (%), total per iteration at right",
              title=f"Phase split at m = {fmt_number(m)}")
    _legend(ax, title="phase")


def fig_local_slopes(data: RunData) -> Figure | None:
    """Local slopes between neighbouring widths, with CIs and references 2 and 2 - c."""
    ls = data.local_slopes
    if ls is None or "method" not in ls:
        return None
    ls = ls[ls["method"].isin(method_names())]
    for col, value in (("phase", "iteration"), ("axis", "m")):
        if col in ls:
            ls = ls[ls[col] == value]
    if ls.empty:  # no m sweep in this run (e.g. only n or d was swept)
        return None
    x, label = _slope_x(ls)
    ls, fixed = _main_slope_context(data, ls.assign(_x=x, _label=label))
    quantities = [q for q in ("seconds", "work") if (ls.get("quantity") == q).any()] or [""]
    fig, axes = _new_figure(len(quantities), 1, 11.0, 3.9 * len(quantities))
    for ax, quantity in zip(axes, quantities, strict=True):
        shown = ls[ls["quantity"] == quantity] if quantity else ls
        _draw_local_slopes(ax, data, shown)
        ax.axhline(2.0, color="#333333", linestyle=(0, (5, 3)), linewidth=1.0,
                   label="reference 2", zorder=0)
        c = fixed.get("c")
        if isinstance(c, float):
            ax.axhline(2 - c, color="#999999", linestyle=(0, (5, 3)), linewidth=1.0,
                       label=f"reference 2 - c = {2 - c:g}", zorder=0)
        _slope_ticks(ax, ls)
        _mark_switches(ax, data, fixed, set(zip(shown["method"], shown["options"])),
                       lambda a, b: math.sqrt(a * b))
        name = {"seconds": "seconds", "work": "multiply-adds"}.get(quantity, "cost")
        _decorate(ax, xlabel="pair of neighbouring widths m (placed at their geometric midpoint)",
                  ylabel=f"local slope of {name} (95% CI)",
                  title=f"Local slopes of per-iteration {name} vs width")
        _legend(ax)
    fig.suptitle(f"Local slopes d log(cost) / d log m ({context_title(fixed)})")
    return fig


def _main_slope_context(data: RunData, ls: pd.DataFrame
                        ) -> tuple[pd.DataFrame, dict[str, object]]:
    """Local-slope rows of the main m sweep (else of the most frequent context) and its values."""
    if "context" not in ls:
        return ls, {}
    fixed = main_context(data.runs)
    matching = (ls[[context_matches(c, fixed) for c in ls["context"]]]
                if fixed is not None else ls.iloc[:0])
    if matching.empty:
        matching = ls[ls["context"] == ls["context"].mode().iloc[0]]
    for col in ("machine", "backend", "dtype"):
        if col in matching and fixed and col in fixed:
            matching = matching[matching[col] == str(fixed[col])]
    ctx = context_values(matching["context"].iloc[0]) if not matching.empty else {}
    return matching, ctx


def _draw_local_slopes(ax: Axes, data: RunData, ls: pd.DataFrame) -> None:
    """One error-bar series per (method, options), shifted slightly apart on x."""
    defaults = {m: default_options(ls, m, x="_x") for m in set(ls["method"])}
    series = {k: g for k, g in _series(ls).items() if defaults.get(k[0]) == k[1]}
    offsets = np.linspace(-0.04, 0.04, len(series)) if len(series) > 1 else [0.0]
    for off, ((method, options), g) in zip(offsets, series.items(), strict=True):
        g = g.sort_values("_x")
        st = {"capsize": 2.5, "markersize": 4.5} | style(data, method, options)
        yerr = (_yerr(g, "slope", "ci_low", "ci_high") if {"ci_low", "ci_high"} <= set(g.columns)
                else None)
        ax.errorbar(g["_x"] * 2**off, g["slope"], yerr=yerr, label=series_label(method, options),
                    **st)


def _slope_x(ls: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Position (geometric midpoint of the two widths) and tick text ('1024-2048') of slopes."""
    a, b = ls["x_lo"].astype(float), ls["x_hi"].astype(float)
    return np.sqrt(a * b), a.map(_tick_label) + "-" + b.map(_tick_label)


def _slope_ticks(ax: Axes, ls: pd.DataFrame) -> None:
    """Log x axis ticked at each pair of widths (default log ticks when there are many)."""
    _log_x(ax)
    pairs = ls.drop_duplicates("_x").sort_values("_x")
    if 0 < len(pairs) <= 12:
        ax.set_xticks(pairs["_x"].to_numpy(), pairs["_label"].tolist(), rotation=25,
                      fontsize="small", ha="right", rotation_mode="anchor")


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


def plot_run(run_dir: RunDir | Path) -> list[Path]:
    """Write ``run_dir/figures/<name>.png`` and ``.pdf`` for every figure whose data exists."""
    data = load_run(run_dir)
    data.styles = _assign_styles(data)
    out_dir = data.run_dir / "figures"
    written: list[Path] = []
    for name, make in FIGURES.items():
        fig = make(data)
        if fig is None:
            continue
        out_dir.mkdir(parents=True, exist_ok=True)
        for ext in ("png", "pdf"):
            path = out_dir / f"{name}.{ext}"
            atomic_savefig(fig, path, dpi=DPI if ext == "png" else None)
            written.append(path)
            fig.set_layout_engine("none")  # keep the layout computed for the PNG (saves time)
    return written
