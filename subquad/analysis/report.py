"""The Markdown report of a run: environment, how to reproduce it, the claims (from
``claims.csv``, written by ``claims.catalog``), crossover and speed-up, the self-check, the run's
completeness (planned, measured, censored, failed, missing cells; every dropped row) and the
figures. ``write_report`` has the claims evaluated (``verdicts.write_claims``) and renders
them with the run's other tables; it draws nothing (no matplotlib).

An input that is absent turns its section into "not measured" instead of an error.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from subquad.analysis.claims.catalog import scope_text, write_claims
from subquad.analysis.claims.engine import Scope
from subquad.analysis.claims.engine import finite as _finite
from subquad.analysis.claims.paper import largest_common_m
from subquad.analysis.fit import trustworthy
from subquad.analysis.limits import load_limits
from subquad.analysis.rundata import (
    RunData,
    context_matches,
    exponent_text,
    find_fit,
    load_run,
    select_rows,
    series_rows,
)
from subquad.analysis.stats import coverage_text, median_ci
from subquad.errors import ConfigError
from subquad.memory import fmt_bytes
from subquad.results.format import fmt_number, fmt_seconds, options_label, series_label
from subquad.results.rundir import RunDir
from subquad.results.schema import ENVIRONMENT
from subquad.vocabulary import CROSSOVER_KINDS, NOT_MEASURED, REJECTED, SUPPORTED

#: cells listed individually in the completeness section before the rest is counted
LIST_LIMIT = 200

FIGURE_CAPTIONS = {
    "time_vs_m": "Per-iteration time vs width, with fitted power laws, references and m*",
    "phases_vs_m": "Per-phase time vs width (phases that do no work are not drawn)",
    "init_vs_iteration": "Initialisation vs one iteration",
    "work_vs_m": "Counted multiply-adds and bytes vs width",
    "time_vs_n_d": "Per-iteration time vs n and d",
    "training": "Loss, active fraction per layer and flips over training",
    "exponent_vs_c": "Per-iteration exponent and convergence vs c",
    "ablation": "Update modes and solvers vs dense Gauss-Newton",
    "local_slopes": "Local slopes between neighbouring widths (update-mode switches marked)",
}


# -- sections --------------------------------------------------------------------------------

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


FORMATTERS = {"blas": _fmt_blas, "git": _fmt_git}


def environment_section(env: dict) -> str:
    """The environment table in the order of ``schema.ENVIRONMENT``; keys it does not declare
    are listed after the declared ones."""
    if not env:
        return "## Environment\n\nEnvironment " + NOT_MEASURED + " (no environment.json).\n"
    lines = ["## Environment", "", "| item | value |", "|---|---|"]
    for path, label in ENVIRONMENT.items():
        found, value = _env_lookup(env, path)
        top, leaf = path.split(".")[0], path.split(".")[-1]
        text = FORMATTERS.get(top, lambda v, k=leaf: _fmt_env(v, k))(value) if found \
            else "not recorded"
        lines.append(f"| {label} | {text} |")
    declared = {path.split(".")[0] for path in ENVIRONMENT}
    lines += [f"| {k} | {_fmt_env(v, k)} |" for k, v in env.items() if k not in declared]
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


def claims_section(data: RunData, scope: Scope | None, claims: pd.DataFrame) -> str:
    """The table claim | predicted | measured | interval | verdict | reason, from claims.csv."""
    lim = load_limits()
    lines = ["## Claims of the paper", "",
             scope_text(scope) + "Exponents are of m with 95% bootstrap intervals from "
             "`fits.csv`; every row is `claims.csv`."
             + ("" if data.fits is not None else
                " **No exponent fitted in this run** (no series with 3 or more widths, or "
                f"`subquad fit {data.run_dir}` not run yet)."), "",
             *_md_table(("claim", "predicted", "measured", "interval", "verdict", "reason"),
                        ([c.claim, c.predicted, c.measured or "-", c.interval or "-",
                          f"**{c.verdict}**" if c.verdict in (SUPPORTED, REJECTED) else c.verdict,
                          c.reason or "-"] for c in claims.itertuples()))]
    lines += ["", "Verdicts: *m^(2 - Omega(1))* is **supported** when the upper bound of the "
              "interval is below 2 and below dense-gn's lower bound, **not supported** when the "
              f"lower bound is above 2 - {lim.claim_min_saving:g} (no real saving) or above "
              "dense-gn's lower bound, and inconclusive otherwise; *~ m^k* is supported when "
              f"the whole interval lies within k +- {lim.claim_tolerance:g}, not supported when "
              "it lies wholly outside, inconclusive otherwise. Either is downgraded to "
              f"inconclusive when the fit has fewer than {lim.claim_min_points} widths or spans "
              f"less than {lim.claim_min_decades:g} decade, and wall-clock verdicts also when "
              "the calibration self-check flagged the run (limits.toml, `[claims]`). Training "
              "claims are judged per variant (method, label, options, threshold; in brackets)."]
    return "\n".join(lines) + "\n" + _variants_table(data, scope)


def _md(text: object) -> str:
    return str(text).replace("|", "/").replace("\n", " ")


def _md_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """The lines of a Markdown table: header, rule, one line per row (cells through ``_md``)."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(_md(x) for x in row) + " |" for row in rows)]


def _variants_table(data: RunData, scope: Scope | None) -> str:
    """Per-iteration exponents of every method and variant in the claims' context."""
    if scope is None or data.fits is None:
        return ""
    f = data.fits[(data.fits["phase"] == "iteration") & (data.fits["axis"] == "m")]
    keys = sorted(set(zip(f["method"], f["label"], f["options"], strict=True)))
    rows = []
    for method, label, options in keys:
        if method.startswith("calib"):
            continue
        fl = f[f["label"] == label]
        sec = find_fit(fl, method, options, "iteration", "seconds", "m", scope.fixed)
        work = find_fit(fl, method, options, "iteration", "work", "m", scope.fixed)
        modes = "" if sec is None else str(sec.get("update_resolved", ""))
        if sec is not None or work is not None:
            rows.append([series_label(method, options, label), exponent_text(sec) or "-",
                         exponent_text(work) or "-", modes or "-"])
    if not rows:
        return ""
    return "\n".join(["\n### Per-iteration exponent of every variant\n", *_md_table(
        ("variant", "seconds", "counted work", "update that ran"), rows)]) + "\n"


def _speedup_from_fit(data: RunData, scope: Scope) -> str | None:
    """The speed-up at the largest common m from crossover.csv (bootstrap interval), if there."""
    cx = data.crossover
    if cx is None:
        return None
    sel = cx[(cx["quantity"] == "seconds") & (cx["options"] == scope.options.get("subquad"))
             & (cx["baseline_options"] == scope.options.get("dense-gn"))]
    machine = str(scope.fixed.get("machine", ""))
    if machine:
        sel = sel[sel["machine"] == machine]
    sel = sel[[context_matches(c, scope.fixed) for c in sel["context"]]]
    if sel.empty or not _finite(float(sel["speedup_at_max_m"].iloc[0])):
        return None
    r = sel.iloc[0]
    return (f"Speed-up at the largest width both were measured at, m = {r['max_m']:.0f}: "
            f"dense-gn / subquad = **{r['speedup_at_max_m']:.3g}x** (95% bootstrap interval "
            f"[{r['speedup_ci_low']:.3g}, {r['speedup_ci_high']:.3g}])")


def _speedup_from_runs(data: RunData, scope: Scope) -> str | None:
    """The speed-up at the largest common m from the medians of runs.csv (order statistics)."""
    series = [("dense-gn", scope.options.get("dense-gn")),
              ("subquad", scope.options.get("subquad"))]
    if any(o is None for _, o in series):
        return None
    m = largest_common_m(data.runs, scope.fixed, series)
    if m is None:
        return None
    d, s = (median_ci(series_rows(data.runs, *key, scope.fixed, "iteration", m)["seconds"])
            for key in series)
    if not (_finite(d.median, s.median) and s.median > 0):
        return None
    return (f"Speed-up at the largest width both were measured at, m = {m:.0f}: dense-gn "
            f"{fmt_seconds(d.median)} [{fmt_seconds(d.lo)}, {fmt_seconds(d.hi)}] vs subquad "
            f"{fmt_seconds(s.median)} [{fmt_seconds(s.lo)}, {fmt_seconds(s.hi)}] per "
            f"iteration ({coverage_text([d.coverage, s.coverage])} of each median): dense-gn "
            f"/ subquad = **{d.median / s.median:.3g}x** (conservative interval "
            f"[{d.lo / s.hi:.3g}, {d.hi / s.lo:.3g}])")


def _speedup(data: RunData, scope: Scope | None) -> str:
    """dense-gn / subquad per-iteration time at the largest width both reached in this run."""
    if scope is None:
        return f"Speed-up dense-gn / subquad: {NOT_MEASURED}."
    text = _speedup_from_fit(data, scope) or _speedup_from_runs(data, scope)
    if text is None:
        return (f"Speed-up dense-gn / subquad: {NOT_MEASURED} (no width where both were "
                "measured in the same context).")
    sub = options_label(scope.options.get("subquad") or "", "subquad") or "default options"
    text += (". Baseline: **dense-gn** (dense Gauss-Newton on BLAS GEMM), measured in this run "
             f"on the same machine and context as subquad ({sub}).")
    sub_max = select_rows(data.runs[data.runs["method"] == "subquad"], scope.fixed)["m"].max()
    dense_max = select_rows(data.runs[data.runs["method"] == "dense-gn"], scope.fixed)["m"].max()
    if _finite(float(sub_max), float(dense_max)) and float(sub_max) > float(dense_max):
        text += f" subquad alone went on to m = {float(sub_max):.0f}."
    return text


def crossover_line(row: pd.Series) -> str:
    """One bullet of the crossover section: m* and how it was found (below range, ...)."""
    who = series_label("subquad", str(row["options"]), str(row["label"]))
    base = series_label("dense-gn", str(row["baseline_options"]), str(row["baseline_label"]))
    head = f"- {who} vs {base}, {row['quantity']} ({row['context']})"
    kind = str(row["kind"])
    text = CROSSOVER_KINDS.get(kind, kind)
    if kind == "below range":
        return (f"{head}: m* **below the measured range** (subquad is already cheaper at the "
                f"smallest common width m = {fmt_number(row['min_m'])})")
    if not np.isfinite(row["m_star"]):
        return f"{head}: no crossover in or near the measured range ({text})"
    hi = _fmt_width(row["ci_high"]) if np.isfinite(row["ci_high"]) else \
        "beyond the measured range"
    interval = f" (95% interval [{_fmt_width(row['ci_low'])}, {hi}])" \
        if np.isfinite(row["ci_low"]) else ""
    return f"{head}: m* = **{_fmt_width(row['m_star'])}**{interval}, {text}"


def _fmt_width(m: float) -> str:
    """A width in full up to a million, in scientific notation beyond (extrapolations)."""
    return fmt_number(m, ".0f" if m < 1e6 else ".2e")


def crossover_section(data: RunData, scope: Scope | None) -> str:
    """Crossover widths m* with intervals, and the measured speed-up."""
    lines = ["## Crossover and speed-up", ""]
    cx = data.crossover
    if cx is None:
        lines.append(f"Crossover m*: {NOT_MEASURED} (no crossover.csv rows).")
    else:
        cx = cx.sort_values("quantity", key=lambda q: q != "seconds", kind="stable")
        lines += [crossover_line(row) for _, row in cx.iterrows()]
    lines += ["", _speedup(data, scope)]
    return "\n".join(lines) + "\n"


def selfcheck_section(data: RunData) -> str:
    """Calibration kernels on the same grid: is the timing of this run trustworthy?"""
    frame = data.selfcheck
    head = "## Self-check\n\n"
    if frame is None or (frame["kernel"] == "not run").all():
        return head + (f"Self-check {NOT_MEASURED} (no calibration kernels; add "
                       "`[calibration]` to the experiment, then `subquad fit "
                       f"{data.run_dir}`).\n")
    frame = frame[frame["kernel"] != "not run"]
    tol = load_limits().calibration_tolerance
    trust = trustworthy(frame)
    if trust is False:
        verdict = (f"**flagged**: a known kernel's exponent is off by more than {tol:g}, "
                   "so this run's wall-clock exponents are untrustworthy (the wall-clock "
                   "verdicts above are inconclusive for that reason).")
    elif trust:
        verdict = (f"**trustworthy**: every calibration kernel's exponent is within {tol:g} "
                   "of its known value.")
    else:
        verdict = ("**could not be decided**: a calibration kernel has fewer than 3 usable "
                   "widths, so no exponent was fitted (this is not a failed check).")
    cols = ["kernel", "expected", "exponent", "ci_low", "ci_high", "tolerance", "ok",
            "n_points", "machine", "dtype", "context"]
    table = _md_table(cols, ([fmt_number(r[c], ".4g" if isinstance(r[c], float)
                                         and not float(r[c]).is_integer() else "", "-")
                              for c in cols] for _, r in frame.iterrows()))
    return head + verdict + "\n\n" + "\n".join(table) + "\n"


def planned_cells(run_dir: Path) -> pd.DataFrame | None:
    """The cells the run's experiment.toml expands to (one per cell id), None without it."""
    toml = Path(run_dir) / "experiment.toml"
    if not toml.is_file():
        return None
    from subquad.harness.config import expand_cells, load_experiment  # noqa: PLC0415

    cells = {c.base_id: c for c in expand_cells(load_experiment(toml))}
    return pd.DataFrame([{"cell": cid, "method": c.method, "label": c.label or c.method,
                          "m": c.m, "n": c.n, "d": c.d, "L": c.L, "c": c.c, "seed": c.seed}
                         for cid, c in cells.items()])


def completeness_section(data: RunData) -> str:
    """Cells planned / measured / censored / failed by status / missing, every cell that did
    not finish ok (status ``nan`` included), and every row the loader dropped."""
    head = "## Completeness\n\n"
    runs = data.all_runs
    planned = planned_cells(data.run_dir)
    if runs is None:
        return head + f"No runs.csv: every cell {NOT_MEASURED}.\n"
    status = runs.drop_duplicates("cell").set_index("cell")["status"]
    # a cell is measured ok only if every one of its rows is ok
    bad_cells = set(runs.loc[runs["status"] != "ok", "cell"])
    per = runs[runs["cell"].isin(bad_cells) & (runs["status"] != "ok")].drop_duplicates("cell")
    n_ok = len(set(status.index) - bad_cells)
    counts = per["status"].value_counts().sort_index()
    censored = int(counts.get("censored", 0))
    failed = {s: int(n) for s, n in counts.items() if s != "censored"}
    present = set(status.index)
    lines = []
    if planned is not None:
        missing = planned[~planned["cell"].isin(present)]
        lines.append(f"- cells planned (experiment.toml): **{len(planned)}**")
    else:
        missing = None
        lines.append("- cells planned: unknown (no experiment.toml in the run directory)")
    lines += [f"- measured with status ok: **{n_ok}**", f"- censored: **{censored}**",
              "- failed: **" + str(sum(failed.values())) + "**"
              + (" (" + ", ".join(f"{s}: {n}" for s, n in failed.items()) + ")"
                 if failed else "")]
    if missing is not None:
        lines.append(f"- missing (planned, no cell file merged): **{len(missing)}**")
    dropped = data.dropped
    n_drop = int(dropped["rows"].sum()) if dropped is not None and not dropped.empty else 0
    lines.append(f"- rows dropped by the loader: **{n_drop}**")
    complete = (not bad_cells and n_drop == 0 and (missing is None or missing.empty))
    out = head + "\n".join(lines) + "\n"
    if complete:
        out += "\nEvery cell finished with status ok" + (
            " and every planned cell was measured.\n" if missing is not None else
            " (the plan is unknown, so missing cells cannot be counted).\n")
    if bad_cells:
        out += _cell_table("Cells that did not finish ok", per, with_status=True)
    if missing is not None and not missing.empty:
        out += _cell_table("Missing cells (planned, never merged: killed or still running; "
                           "`subquad sweep --resume` runs them)", missing, with_status=False)
    if n_drop:
        out += _dropped_table(dropped)
    return out


def _cell_table(title: str, cells: pd.DataFrame, with_status: bool) -> str:
    cols = ["method", "label", "m", "n", "d", "L", "c", "seed"]
    cols += ["status", "message"] if with_status else []
    cells = cells.sort_values(["method", "m"], kind="stable")
    rows = ([r["cell"], *(fmt_number(r.get(c, ""), "", "-") for c in cols)]
            for _, r in cells.head(LIST_LIMIT).iterrows())
    lines = [f"\n### {title}\n", *_md_table(["cell", *cols], rows)]
    if len(cells) > LIST_LIMIT:
        lines.append(f"\n... and {len(cells) - LIST_LIMIT} more.")
    return "\n".join(lines) + "\n"


def _dropped_table(dropped: pd.DataFrame) -> str:
    cols = ("cell", "method", "m", "phase", "column", "value", "reason", "rows")
    rows = ([fmt_number(r[c], "", "-") for c in cols] for _, r in dropped.iterrows())
    return "\n".join(["\n### Rows dropped by the loader (not fitted, not drawn)\n",
                      *_md_table(cols, rows)]) + "\n"


def figures_section(run_dir: Path) -> str:
    """Relative links to the figures that exist in ``run_dir/figures``."""
    present = [n for n in FIGURE_CAPTIONS if (run_dir / "figures" / f"{n}.png").is_file()]
    if not present:
        return (f"## Figures\n\nFigures {NOT_MEASURED} or not plotted yet "
                f"(`subquad plot {run_dir}`).\n")
    blocks = [f"### {FIGURE_CAPTIONS[n]}\n\n![{n}](figures/{n}.png)\n" for n in present]
    return "## Figures\n\n" + "\n".join(blocks)


def _read_optional(rd: RunDir, name: str) -> pd.DataFrame | None:
    try:
        return rd.table(name)
    except ConfigError:
        return None


def model_section(rd: RunDir) -> str:
    """'Why is the measured exponent what it is' from ``subquad model``'s tables (if run)."""
    summ = _read_optional(rd, "model_summary")
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
        label = series_label(r.method, str(r.options))
        lines.append(f"| {label} n={r.n:g} | {r.fit_range} | {meas} | {f(r.model_exponent)} | "
                     f"{f(r.fitted_exponent)} | {f(r.work_exponent)} | "
                     f"{f(r.asymptotic_exponent)} (m {r.asymptotic_range}) |")
    model = _read_optional(rd, "model")
    if model is not None and not model.empty:
        for meth, g in model[model["phase"] == "iteration"].groupby("method"):
            lines.append(f"\n{meth}: predicted / measured iteration seconds "
                         f"{g['ratio'].min():.2f}..{g['ratio'].max():.2f} (predict mode), "
                         f"{g['fit_ratio'].min():.2f}..{g['fit_ratio'].max():.2f} (fit mode) "
                         f"over {len(g)} cells; per phase in model.csv.")
        if (rd.path / "figures" / "model.png").is_file():
            lines.append("\n![measured vs predicted seconds](figures/model.png)")
    fac = _read_optional(rd, "model_factors")
    if fac is not None and not fac.empty:
        lines += ["\nEfficiency factors (measured / predicted per phase, log-space fit, 95% "
                  "bootstrap interval over cells; 1 = at the calibrated machine limit):\n",
                  "| method | phase | factor | interval | cells |", "|---|---|---|---|---|"]
        for r in fac.dropna(subset=["factor"]).itertuples():
            lines.append(f"| {r.method} | {r.phase} | {r.factor:.2f} | "
                         f"[{r.ci_low:.2f}, {r.ci_high:.2f}] | {r.n_cells:g} |")
    sp = _read_optional(rd, "model_speedup")
    if sp is not None and not sp.empty:
        from subquad.analysis.perfmodel.predict import crossover_m  # noqa: PLC0415

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


def write_report(run_dir: RunDir | Path) -> Path:
    """Write ``run_dir/claims.csv`` and ``run_dir/report.md``; returns the report's path."""
    rd = RunDir.of(run_dir)
    run_dir = rd.path
    data = load_run(rd)
    scope, claims = write_claims(rd, data)
    title = f"# subquad run report: {run_dir.name}\n\n" + (
        "Empirical check of Song, Zhang, Zhang, *Training multi-layer over-parametrized neural "
        "network in subquadratic time* (arXiv 2112.07628): m^2 work only at initialisation and "
        "m^(2 - Omega(1)) per training iteration.\n")
    sections = [title, environment_section(data.environment), reproduce_section(data),
                completeness_section(data), claims_section(data, scope, claims),
                crossover_section(data, scope), model_section(rd), selfcheck_section(data),
                figures_section(run_dir)]
    return rd.write_document("report.md", "\n".join(s for s in sections if s))
