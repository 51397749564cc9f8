"""``subquad model DIR`` and ``subquad predict RUN``: the machine model applied to a run.

From each cell's counted work and bytes (runs.csv: work, bytes, line_bytes, working_set,
access, shape, calls per phase) and a calibration, predict every phase's seconds
(``machine.Machine.phase_seconds``), fit one efficiency factor per (method, options, phase),
and explain the measured exponent: measured vs model exponent over the same widths, the
counted-work exponent, the asymptotic exponent once every working set is beyond the last
cache level, and the extrapolated speed-up and crossover (labelled as extrapolation).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from subquad.analysis.perfmodel.machine import Machine, fit_factor, load_calibration, slope
from subquad.errors import ConfigError
from subquad.harness.config import fit_options, tomllib
from subquad.model.kernels.numba_common import INPUT_MAJOR_TILE_BYTES
from subquad.results.rundir import RunDir
from subquad.results.schema import TABLES
from subquad.vocabulary import ITERATION_PHASES as PHASES

SERIES = ["method", "options", "backend", "dtype", "n", "d", "L", "c"]
#: fit mode's factors are per series, phase and the update mode the cell resolved to: an auto
#: series switches kernels (scatter -> fused moves the update's work into the forward), and
#: one factor across two kernels would be right for neither
FACTOR_KEY = [*SERIES, "update_resolved"]
CELL = ["cell", *SERIES, "update_resolved", "m"]
#: extrapolation: the measured widths, then the largest times these factors
EXTRAPOLATE = (2.0, 4.0, 8.0, 16.0)
_NUM = ["work", "bytes", "line_bytes", "working_set", "calls", "seconds"]


def cell_phases(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (cell, phase) of the trainers' ok rows: medians over samples."""
    df = runs[(runs["status"] == "ok") & runs["method"].isin(["dense-gd", "dense-gn",
                                                              "subquad"])].copy()
    for col in ("update_resolved", "forward_kernel_resolved", "access", "shape"):
        df[col] = df[col].fillna("").astype(str) if col in df else ""
    for col in _NUM:
        df[col] = pd.to_numeric(df.get(col), errors="coerce")
    phases = df[df["phase"].isin([*PHASES, "iteration"])]
    if phases.empty:
        raise ConfigError("DIR", "runs.csv has no ok trainer rows to model")
    agg = {c: "median" for c in _NUM} | {"access": "first", "shape": "first",
                                         "machine": "first", "forward_kernel_resolved": "first"}
    return phases.groupby(CELL + ["phase"], dropna=False, sort=True).agg(agg).reset_index()


def _missing_counts(cells: pd.DataFrame) -> None:
    body = cells[cells["phase"] != "iteration"]
    if body["working_set"].isna().all():
        raise ConfigError("DIR", "runs.csv has no per-phase working sets (columns line_bytes, "
                          "working_set, access): re-measure it with this version of subquad")


def predict_cells(cells: pd.DataFrame, machine: Machine, asymptotic: bool = False
                  ) -> pd.DataFrame:
    """``cells`` with ``predicted`` and ``level`` per phase and the iteration as their sum."""
    out = cells.copy()
    pred, level = [], []
    for r in out.itertuples():
        if r.phase == "iteration":
            pred.append(math.nan)
            level.append("")
            continue
        acc, acc_set = accumulator_traffic(r.phase, getattr(r, "forward_kernel_resolved", ""),
                                           _f(r.work), str(r.dtype))
        pred.append(machine.phase_seconds(
            r.phase, r.access, _f(r.work), _f(r.bytes), _f(r.line_bytes), _f(r.working_set),
            r.shape, _f(r.calls), float(r.m), asymptotic, acc, acc_set))
        level.append(machine.level(_f(r.working_set)) if r.access in ("stream", "random",
                                                                       "gemm") else "cache")
    out["predicted"], out["level"] = pred, level
    _sum_phases(out, "predicted")
    return out


def _sum_phases(out: pd.DataFrame, column: str) -> pd.Series:
    """Set ``column`` of every iteration row to the sum over its cell's phases (in place);
    returns the mask of the iteration rows."""
    it = out["phase"] == "iteration"
    sums = out[~it].groupby("cell")[column].sum()
    if it.any():
        out.loc[it, column] = out.loc[it, "cell"].map(sums).to_numpy(float)
    return it


def accumulator_traffic(phase: str, kernel: str, work: float, dtype: str
                        ) -> tuple[float, float]:
    """(bytes, working set) of the input-major forward's accumulators: every multiply-add
    reads and writes one accumulator element (2 x work x itemsize bytes), over the n tiles of
    INPUT_MAJOR_TILE_BYTES the kernel keeps in L2. Zero for other phases and kernels: the
    per-example kernel adds 4 rows per pass into one tile in L1, hidden under the stream."""
    if phase != "forward" or "input-major" not in str(kernel):
        return 0.0, 0.0
    isz = 8.0 if str(dtype) == "float64" else 4.0
    return 2.0 * work * isz, float(INPUT_MAJOR_TILE_BYTES)


def _f(x: object) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return 0.0
    return 0.0 if math.isnan(v) else v


def fit_factors(pred: pd.DataFrame, min_m: float = 0.0, n_boot: int = 1000, seed: int = 0
                ) -> pd.DataFrame:
    """One efficiency factor per (series without m, resolved update mode, phase), from cells
    with m >= min_m."""
    rows = []
    body = pred[(pred["phase"] != "iteration") & (pred["m"] >= min_m)]
    if "update_resolved" not in body:
        body = body.assign(update_resolved="")
    for key, g in body.groupby(FACTOR_KEY + ["phase"], dropna=False, sort=True):
        e, lo, hi = fit_factor(g["seconds"].to_numpy(), g["predicted"].to_numpy(), n_boot, seed)
        rows.append(dict(zip(FACTOR_KEY + ["phase"], key)) | {
            "factor": e, "ci_low": lo, "ci_high": hi, "n_cells": int(len(g)), "min_m": min_m})
    return pd.DataFrame(rows, columns=TABLES["model_factors"].columns)


def apply_factors(pred: pd.DataFrame, factors: pd.DataFrame) -> pd.DataFrame:
    """``fitted`` = factor x predicted per phase (factor 1 where none could be fitted)."""
    if "update_resolved" not in pred:
        pred = pred.assign(update_resolved="")
    out = pred.merge(factors[FACTOR_KEY + ["phase", "factor"]], on=FACTOR_KEY + ["phase"],
                     how="left")
    f = out["factor"].where(np.isfinite(out["factor"]), 1.0)
    out["fitted"] = f * out["predicted"]
    it = _sum_phases(out, "fitted")
    if it.any():
        out.loc[it, "factor"] = math.nan
    return out


def _power_law(m: np.ndarray, y: np.ndarray, at: np.ndarray) -> np.ndarray:
    """y extrapolated to ``at`` by its log-log least-squares line (0 where y is all 0)."""
    use = (y > 0) & np.isfinite(y)
    if use.sum() == 0:
        return np.zeros_like(at, dtype=float)
    if use.sum() == 1:
        return np.full_like(at, float(y[use][0]), dtype=float)
    k, b = np.polyfit(np.log(m[use]), np.log(y[use]), 1)
    return np.exp(b + k * np.log(at))


def extrapolate_series(cells: pd.DataFrame, machine: Machine, widths: np.ndarray,
                       asymptotic: bool = False) -> np.ndarray:
    """Predicted iteration seconds of one series at ``widths`` from power laws of its counts.

    Each phase's work, bytes, line bytes, working set and calls are extrapolated separately
    (log-log lines through the measured widths); the access kind and GEMM shape form stay.
    """
    total = np.zeros(len(widths))
    if "update_resolved" in cells and len(cells):
        # extrapolate the kernels the largest widths ran (an auto series switches modes)
        last = cells.loc[cells["m"] == cells["m"].max(), "update_resolved"].iloc[0]
        cells = cells[cells["update_resolved"] == last]
    for phase, g in cells[cells["phase"] != "iteration"].groupby("phase"):
        g = g.sort_values("m")
        m = g["m"].to_numpy(float)
        cols = {c: _power_law(m, g[c].fillna(0).to_numpy(float), widths)
                for c in ("work", "bytes", "line_bytes", "working_set", "calls")}
        access = str(g["access"].iloc[-1])
        shape0 = str(g["shape"].iloc[-1])
        kernel = str(g["forward_kernel_resolved"].iloc[-1]) if "forward_kernel_resolved" in g \
            else ""
        for i, w in enumerate(widths):
            shape = _scaled_shape(shape0, float(g["m"].iloc[-1]), w)
            acc, acc_set = accumulator_traffic(str(phase), kernel, cols["work"][i],
                                               str(g["dtype"].iloc[-1]))
            total[i] += machine.phase_seconds(
                str(phase), access, cols["work"][i], cols["bytes"][i], cols["line_bytes"][i],
                cols["working_set"][i], shape, cols["calls"][i], float(w), asymptotic, acc,
                acc_set)
    return total


def _scaled_shape(shape: str, m0: float, m: float) -> str:
    """A GEMM shape with every dimension equal to the width m0 replaced by m."""
    if not shape or shape == "nan":
        return ""
    return "x".join(str(int(m)) if int(d) == int(m0) else d for d in shape.split("x"))


def summary(pred: pd.DataFrame, machine: Machine, min_m: float, fits: pd.DataFrame | None
            ) -> pd.DataFrame:
    """Per series: measured, model, fitted, counted-work and asymptotic exponents."""
    rows = []
    for key, it in pred[pred["phase"] == "iteration"].groupby(SERIES, dropna=False, sort=True):
        kd = dict(zip(SERIES, key))
        it = it[it["m"] >= min_m].sort_values("m")
        if len(it) < 2:
            continue
        m = it["m"].to_numpy(float)
        big = np.array([m.max() * f for f in EXTRAPOLATE])
        asym = extrapolate_series(pred[pred["cell"].isin(it["cell"])], machine, big,
                                  asymptotic=True)
        fitted = fitted_seconds(fits, kd)
        ci = (math.nan, math.nan) if fitted is None else (fitted["ci_low"], fitted["ci_high"])
        rows.append(kd | {
            "fit_range": f"{int(m.min())}-{int(m.max())}", "n_widths": len(m),
            "measured_exponent": slope(m, it["seconds"]), "measured_ci_low": ci[0],
            "measured_ci_high": ci[1], "model_exponent": slope(m, it["predicted"]),
            "fitted_exponent": slope(m, it["fitted"]), "work_exponent": slope(m, it["work"]),
            "asymptotic_exponent": slope(big, asym),
            "asymptotic_range": f"{int(big.min())}-{int(big.max())}"})
    return pd.DataFrame(rows, columns=TABLES["model_summary"].columns)


def series_context(kd: dict) -> str:
    """The fits.csv context of a model series: 'n=16;d=16;L=2;c=0.2'."""
    return f"n={kd['n']:g};d={kd['d']:g};L={kd['L']:g};c={kd['c']:g}"


def fitted_seconds(fits: pd.DataFrame | None, kd: dict) -> pd.Series | None:
    """The fits.csv slope of a model series' iteration seconds in m (None if absent). Options
    compare as text: a typed fits table has '' for none, never NaN (``Table.typed``)."""
    if fits is None or fits.empty:
        return None
    sel = fits[(fits["method"] == kd["method"]) & (fits["options"] == kd["options"])
               & (fits["phase"] == "iteration") & (fits["quantity"] == "seconds")
               & (fits["axis"] == "m") & (fits["fit"] == "slope")
               & (fits["context"] == series_context(kd))]
    return sel.iloc[0] if not sel.empty else None


def speedups(pred: pd.DataFrame, machine: Machine, column: str = "predicted") -> pd.DataFrame:
    """Predicted dense-gn / subquad seconds at the measured widths and beyond (extrapolation)."""
    it = pred[pred["phase"] == "iteration"]
    rows = []
    ctx_keys = ["backend", "dtype", "n", "d", "L", "c"]
    for key, g in it.groupby(ctx_keys, dropna=False, sort=True):
        kd = dict(zip(ctx_keys, key))
        dense = g[g["method"] == "dense-gn"]
        if dense.empty:
            continue
        for opts, sub in g[g["method"] == "subquad"].groupby("options"):
            common = sorted(set(dense["m"]) & set(sub["m"]))
            if not common:
                continue
            big = np.array([max(common) * f for f in EXTRAPOLATE])
            d_big = extrapolate_series(pred[pred["cell"].isin(dense["cell"])], machine, big)
            s_big = extrapolate_series(pred[pred["cell"].isin(sub["cell"])], machine, big)
            measured = [(m, float(dense.loc[dense["m"] == m, column].iloc[0]),
                         float(sub.loc[sub["m"] == m, column].iloc[0])) for m in common]
            for kind, points in (("measured widths", measured),
                                 ("extrapolation", zip(big, d_big, s_big))):
                rows.extend(kd | {"sub_options": opts, "m": m, "dense_seconds": dt,
                                  "subquad_seconds": st, "speedup": dt / st, "kind": kind}
                            for m, dt, st in points)
    return pd.DataFrame(rows, columns=TABLES["model_speedup"].columns)


def crossover_m(sp: pd.DataFrame) -> tuple[float, str]:
    """(m*, kind): the first width where the predicted speed-up reaches 1, log-interpolated."""
    sp = sp.sort_values("m")
    m, s = sp["m"].to_numpy(float), sp["speedup"].to_numpy(float)
    if len(m) == 0:
        return math.nan, "none"
    if s[0] >= 1:
        return float(m[0]), "at or below the smallest width"
    for i in range(1, len(m)):
        if s[i] >= 1:
            a, b = math.log(s[i - 1]), math.log(s[i])
            t = -a / (b - a) if b != a else 0.0
            mstar = math.exp(math.log(m[i - 1]) + t * (math.log(m[i]) - math.log(m[i - 1])))
            return mstar, str(sp["kind"].iloc[i])
    return math.nan, "beyond the extrapolated range"


# ------------------------------------------------------------------------------- commands


def _min_m(rd: RunDir) -> float:
    exp = rd.file("experiment.toml")
    if exp.is_file():
        mins = fit_options(tomllib.loads(exp.read_text())).get("min_axis") or {}
        return float(mins.get("m", 0.0))
    return 0.0


def _check_setting(rd: RunDir, runs: pd.DataFrame, machine: Machine, force: bool) -> None:
    """A calibration of another dtype is refused (unless ``force``: a warning); another thread
    count is another machine (its id differs), which ``predict`` predicts: it says so."""
    dtypes = sorted(set(runs.loc[~runs["method"].str.startswith("calib-"), "dtype"]) - {""})
    cal = machine.cal.get("dtype")
    if cal and dtypes and dtypes != [cal]:
        text = f"calibration of machine {machine.id} is of {cal}, the run of {', '.join(dtypes)}"
        if not force:
            raise ConfigError("--calibration", f"{text}: its rates do not apply to this run; "
                              f"calibrate with --dtype {dtypes[0]}, or pass --force")
        warnings.warn(f"{text}; predicting anyway (--force)", stacklevel=2)
    exp = rd.file("experiment.toml")
    threads = ((tomllib.loads(exp.read_text()).get("timing") or {}).get("threads")
               if exp.is_file() else None)
    theirs = machine.cal.get("threads")
    if theirs != threads:
        warnings.warn(f"calibration of machine {machine.id} is of {theirs or 'all'} threads, the "
                      f"run of {threads or 'all'}: predicting that thread count", stacklevel=2)


def _run_machine(run_dir: Path, runs: pd.DataFrame) -> str:
    ids = sorted(set(runs.loc[runs["method"] != "", "machine"]) - {""})
    if len(ids) > 1:
        raise ConfigError("DIR", f"{run_dir} mixes machines {', '.join(ids)}; the model is per "
                          "machine")
    return ids[0] if ids else ""


def model_run(run_dir: RunDir | str | Path, calibration: str | Path | None = None,
              n_boot: int = 1000, min_m: float | None = None, force: bool = False
              ) -> dict[str, Path]:
    """``subquad model DIR``: model.csv, model_factors.csv, model_summary.csv,
    model_speedup.csv and figures/model.{png,pdf}; returns their paths by name."""
    rd = RunDir.of(run_dir)
    run_dir = rd.path
    runs = rd.runs().frame
    machine_id = _run_machine(run_dir, runs)
    machine = load_calibration(calibration or rd.file("calibration.json"), machine_id)
    if machine.id != machine_id:
        raise ConfigError("--calibration", f"calibration of machine {machine.id}, run measured "
                          f"on {machine_id}: use `subquad predict` to predict another machine")
    _check_setting(rd, runs, machine, force)
    cells = cell_phases(runs)
    _missing_counts(cells)
    lo = _min_m(rd) if min_m is None else min_m
    pred = predict_cells(cells, machine)
    factors = fit_factors(pred, lo, n_boot)
    pred = apply_factors(pred, factors)
    fits = rd.table("fits")
    written = rd.write_tables({"model": _model_table(pred, machine),
                               "model_factors": factors,
                               "model_summary": summary(pred, machine, lo, fits),
                               "model_speedup": speedups(pred, machine)})
    paths = {name.removeprefix("model_"): path for name, path in written.items()}
    try:
        from subquad.analysis.perfmodel.plots import bandwidth_figure, model_figure  # noqa: PLC0415
    except ImportError:
        return paths
    fig_dir = run_dir / "figures"
    isz = 8 if (pred["dtype"] == "float64").all() else 4
    figures = [*bandwidth_figure(machine.cal, fig_dir / f"bandwidth-{machine.id}"),
               *model_figure(_figure_cells(pred), machine.caches, isz, fig_dir / "model")]
    return paths | {p.name: p for p in figures}


def _model_table(pred: pd.DataFrame, machine: Machine) -> pd.DataFrame:
    out = pred.rename(columns={"seconds": "measured"}).copy()
    out["calibration"] = machine.id
    out["ratio"] = out["predicted"] / out["measured"]
    out["fit_ratio"] = out["fitted"] / out["measured"]
    return out[TABLES["model"].columns]


def _figure_cells(pred: pd.DataFrame) -> pd.DataFrame:
    it = pred[pred["phase"] == "iteration"].copy()
    it["label"] = [f"{r.method}" + (f" [{r.options}]" if r.options else "")
                   + f" n={r.n:g} L={r.L:g} c={r.c:g}" for r in it.itertuples()]
    return it.rename(columns={"seconds": "measured"})[["label", "m", "measured", "predicted",
                                                       "fitted"]]


def predict_run(run_dir: RunDir | str | Path, calibration: str | Path,
                machine: str | None = None, compare: RunDir | str | Path | None = None,
                force: bool = False) -> dict[str, pd.DataFrame]:
    """``subquad predict RUN --calibration OTHER``: another machine's seconds from this run's
    counts. With ``compare`` (a run measured on that machine) the measured medians join in."""
    rd = RunDir.of(run_dir)
    runs = rd.runs().frame
    other = load_calibration(calibration, machine)
    if machine is not None and other.id != machine:
        raise ConfigError("--machine", f"{calibration} holds machine {other.id}, not {machine!r}")
    _check_setting(rd, runs, other, force)
    cells = cell_phases(runs)
    _missing_counts(cells)
    pred = predict_cells(cells, other)
    it = pred[pred["phase"] == "iteration"][SERIES + ["m", "predicted"]].copy()
    if compare is not None:
        meas = cell_phases(RunDir.of(compare).runs().frame)
        meas = meas[meas["phase"] == "iteration"][SERIES + ["m", "seconds"]]
        it = it.merge(meas.rename(columns={"seconds": "measured"}), on=SERIES + ["m"],
                      how="left")
        it["ratio"] = it["predicted"] / it["measured"]
    pred["fitted"] = pred["predicted"]
    lo = _min_m(rd)
    summ = summary(pred, other, lo, None).drop(
        columns=["measured_exponent", "measured_ci_low", "measured_ci_high", "fitted_exponent"])
    if compare is not None:  # exponents over the widths both runs have
        both = it[it["measured"].notna() & (it["m"] >= lo)]
        comp = {key: (slope(g["m"], g["measured"]), slope(g["m"], g["predicted"]),
                      f"{int(g['m'].min())}-{int(g['m'].max())}" if len(g) else "")
                for key, g in both.groupby(SERIES, dropna=False, sort=True)}
        none = (math.nan, math.nan, "")
        keys = [tuple(r[k] for k in SERIES) for _, r in summ.iterrows()]
        summ["measured_exponent"] = [comp.get(k, none)[0] for k in keys]
        summ["compared_model_exponent"] = [comp.get(k, none)[1] for k in keys]
        summ["compared_range"] = [comp.get(k, none)[2] for k in keys]
    sp = speedups(pred, other)
    keys = ["backend", "dtype", "n", "d", "L", "c", "sub_options"]
    cross = [dict(zip(keys, key)) | {"m_star": ms, "kind": k}
             for key, g in sp.groupby(keys, dropna=False, sort=True)
             for ms, k in [crossover_m(g)]]
    return {"cells": it, "summary": summ, "speedup": sp,
            "crossover": pd.DataFrame(cross, columns=[*keys, "m_star", "kind"]),
            "machine": pd.DataFrame([{"machine": other.id,
                                      "backend": other.cal.get("backend"),
                                      "threads": other.cal.get("threads")}])}
