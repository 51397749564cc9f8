"""The axis claims, a family of the claims engine: exponents in n and d per phase, depth L,
the solver at growing n, and real data, each with a prediction, the measurement and a verdict
by the engine's rules and downgrades. A claim whose axis the run does not vary is left out,
not invented. Every run's claims.csv has them after the paper's; ``python -m
subquad.analysis.claims.axes DIR...`` also writes ``DIR/axis_claims.csv`` and
``DIR/axis_claims.md``. Models (ALGORITHM.md section 5,
s = m Q(beta) active neurons per layer and sample; d enters only h_0 = sigma(A x), computed
once before the iterations):

| phase | in n | in d |
|---|---|---|
| forward, backward, update | n (n L m s sparse, n L m^2 dense) | d^0 (d enters h_0 only) |
| gram | n^2 (L n^2 s) | d^0 |
| solve, Cholesky | n^3/3 + 2 n^2 (slope over the run's own n grid) | d^0 |
| solve, PCG | n^3 (QR of the L k x n sketch, k = 8 n) | d^0 |
| iteration | n (the linear phases dominate while n^2 < L m s and n^3/3 < n L m s) | d^0 |
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from subquad.analysis.claims import engine
from subquad.analysis.claims.engine import Claim, Scope
from subquad.analysis.fit import fit_slope
from subquad.analysis.limits import Limits
from subquad.analysis.rundata import RunData, load_run
from subquad.results.format import parse_context
from subquad.results.rundir import RunDir
from subquad.vocabulary import INCONCLUSIVE, NOT_MEASURED, REJECTED, SUPPORTED

FAMILY = "axes"


def _near(lo: float, hi: float, target: float, limits: Limits) -> dict[str, str]:
    """verdict, interval and reason of ``~ x^target`` by the engine's ``near`` rule."""
    verdict, reason = engine.verdict_near(lo, hi, target, limits.claim_tolerance)
    finite = bool(np.isfinite(lo) and np.isfinite(hi))
    return {"verdict": verdict, "interval": f"[{lo:.3f}, {hi:.3f}]" if finite else "-",
            "reason": reason}


PHASES_N = {"forward": 1.0, "backward": 1.0, "update": 1.0, "gram": 2.0, "iteration": 1.0}
QUANTITIES = ("work", "seconds")


def _solver_of(options: str) -> str:
    return parse_context(str(options)).get("solver", "cholesky")  # dense-gn: Cholesky


def _grid(fit_range: str, n_points: int | None) -> np.ndarray:
    """The n values of a geometric fit range: 'n=4..256' with n_points points, or the n part of
    a joint range 'm=256..16384;n=4..64;d=4..64' (ratio 2 assumed there)."""
    lo, hi = engine.fit_span(fit_range, "n")
    count = int(n_points) if n_points else int(round(np.log2(hi / lo))) + 1
    return np.geomspace(lo, hi, max(count, 2))


def _predicted_n(phase: str, options: str, fit_range: str, n_points: int | None
                 ) -> float | None:
    if phase in PHASES_N:
        return PHASES_N[phase]
    if phase != "solve":
        return None
    if _solver_of(options) == "cholesky":
        x = _grid(fit_range, n_points)
        return float(np.polyfit(np.log(x), np.log(x**3 / 3 + 2 * x**2), 1)[0])
    return 3.0


def _series_name(row: pd.Series) -> str:
    solver = _solver_of(row["options"]) if str(row["options"]) not in ("", "nan") else ""
    who = f"{row['method']} ({solver})" if row["method"] == "subquad" else str(row["method"])
    data = str(row.get("data", "synthetic"))
    return f"{who}, {row['context']}" + (f", {data}" if data not in ("synthetic", "nan") else "")


def _interval_text(e: float, lo: float, hi: float, axis: str, extra: str = "") -> str:
    return f"{axis}^{e:.3f} [{lo:.3f}, {hi:.3f}]" + (f" ({extra})" if extra else "")


def n_d_claims(fits: pd.DataFrame, limits: Limits) -> list[Claim]:
    """Exponent of every phase in n and in d against its model (table in the module doc)."""
    out = []
    f = fits[fits["fit"].isin(["slope", "joint"]) & fits["axis"].isin(["n", "d"])
             & fits["quantity"].isin(QUANTITIES)
             & fits["method"].isin(["subquad", "dense-gn"])].fillna({"options": ""})
    for _, row in f.sort_values(["fit", "axis", "method", "options", "context", "phase",
                                 "quantity"], ascending=[False, True, True, True, True, True,
                                                         True]).iterrows():
        if row["phase"] in ("init", "fold"):
            continue
        axis, joint = row["axis"], row["fit"] == "joint"
        pred = 0.0 if axis == "d" else _predicted_n(row["phase"], row["options"],
                                                     row["fit_range"],
                                                     None if joint else row["n_points"])
        if pred is None:
            continue
        lo, hi = float(row["ci_low"]), float(row["ci_high"])
        how = "joint fit in m, n, d; " if joint else ""
        out.append(Claim(f"{row['phase']} {row['quantity']} ~ {axis}^{pred:.3g} "
                         f"[{how}{_series_name(row)}]", f"{pred:.3g}",
                         _interval_text(float(row["exponent"]), lo, hi, axis,
                                        f"{int(row['n_points'])} points, {row['fit_range']}"),
                         **_near(lo, hi, pred, limits), fits=(row,),
                         quantity=row["quantity"]))
    return out


def _axis_fit(df: pd.DataFrame, axis: str, col: str) -> tuple[float, float, float, int] | None:
    pts = [(x, g[col].dropna().to_numpy(float)) for x, g in df.groupby(axis)]
    pts = [(x, v[v > 0]) for x, v in pts if len(v[v > 0])]
    if len(pts) < 3:
        return None
    fit = fit_slope([p[0] for p in pts], [p[1] for p in pts])
    return fit.exponent, fit.ci_low, fit.ci_high, len(pts)


def depth_claims(runs: pd.DataFrame, training: pd.DataFrame | None, limits: Limits
                 ) -> list[Claim]:
    """Cost ~ L^1, activity near Q(beta) at every layer, convergence at every L."""
    out: list[Claim] = []
    if runs["L"].nunique() < 2:
        return out
    keys = ["method", "options", "threshold"]
    for key, g in runs.fillna({"options": ""}).groupby(keys):
        name = f"{key[0]} ({_solver_of(key[1]) if key[1] else 'dense'}, {key[2]} threshold)"
        bad = g[g["status"] != "ok"].drop_duplicates("L")
        failed = (f"; cells at L = {sorted(bad['L'].astype(int).tolist())} ended "
                  f"{'/'.join(sorted(set(bad['status'])))}") if len(bad) else ""
        ok = g[(g["phase"] == "iteration") & (g["status"] == "ok")]
        for q in QUANTITIES:
            fit = _axis_fit(ok, "L", q)
            if fit is None:
                out.append(Claim(f"per-iteration {q} ~ L^1 [{name}]", "1",
                                 NOT_MEASURED + failed, quantity=q))
                continue
            e, lo, hi, k = fit
            med = ok.groupby("L")[q].median().sort_index()
            step = med.diff().dropna()
            inc = (f"; cost per added layer {step.min():.3g} .. {step.max():.3g} "
                   f"(affine in L when these agree)") if len(step) else ""
            out.append(Claim(f"per-iteration {q} ~ L^1 [{name}]", "1",
                             _interval_text(e, lo, hi, "L", f"{k} depths") + inc + failed,
                             **_near(lo, hi, 1.0, limits), quantity=q))
    if training is None or training.empty:
        return out
    t, band = training.fillna({"options": ""}), limits.claim_activity_ratio
    for key, g in t.groupby(keys):
        name = f"{key[0]} ({key[2]} threshold)"
        worst = g.assign(r=engine.activity_ratio(g)).groupby("L")["r"].agg(["min", "max"])
        detail = "; ".join(f"L={int(L)}: [{r['min']:.2f}, {r['max']:.2f}]"
                           for L, r in worst.iterrows())
        out.append(Claim(f"active fraction within {band:g}x of Q(beta) at every "
                         f"layer and step [{name}]", f"ratio in [{1 / band:.2f}, {band:g}]",
                         detail, verdict=engine.verdict_band(worst["min"].min(), worst["max"].max(),
                                                      band)))
        last = g[g["layer"] == 0].sort_values("iteration").groupby("L")
        conv = (last["loss"].last() / last["loss"].first()).sort_index()
        steps = last["iteration"].max()
        out.append(Claim(f"Gauss-Newton converges at every depth [{name}]",
                         f"loss ratio <= {limits.claim_converged_ratio:g} after the last step",
                         "; ".join(f"L={int(L)}: {v:.2g} after {int(steps[L])} steps"
                                   for L, v in conv.items()),
                         verdict=SUPPORTED if (conv <= limits.claim_converged_ratio).all()
                         else REJECTED))
    return out


def solver_claims(runs: pd.DataFrame, training: pd.DataFrame | None, limits: Limits
                  ) -> list[Claim]:
    """PCG iterations flat in n; PCG solve below Cholesky from some n*; the preconditioner's
    effect on conditioning and on time, per data setting."""
    out: list[Claim] = []
    runs = runs.fillna({"options": ""})
    s = runs[(runs["phase"] == "solve") & (runs["status"] == "ok")].copy()
    s["solver"] = s["options"].map(_solver_of)
    if s["solver"].nunique() < 2 or s["n"].nunique() < 3:
        return out
    for data, g in s.groupby("data"):
        chol = g[g["solver"] == "cholesky"].groupby("n")["seconds"]
        for solver in sorted(set(g["solver"]) - {"cholesky"}):
            p = g[g["solver"] == solver]
            fit = _axis_fit(p, "n", "cg_iters")
            if fit is not None and solver != "cg":
                e, lo, hi, k = fit
                out.append(Claim(f"{solver}: CG iterations flat in n [{data}]", "n^0",
                                 _interval_text(e, lo, hi, "n", f"{k} sizes, median "
                                                f"{p['cg_iters'].median():.0f}"),
                                 **_near(lo, hi, 0.0, limits)))
            if solver == "cg" or chol.ngroups == 0:
                continue
            ps = p.groupby("n")["seconds"]
            both = sorted(set(ps.groups) & set(chol.groups))
            below = [n for n in both if ps.get_group(n).max() < chol.get_group(n).min()]
            above = [n for n in both if ps.get_group(n).min() > chol.get_group(n).max()]
            ratio = {n: ps.get_group(n).median() / chol.get_group(n).median() for n in both}
            ratios = "; ".join(f"n={int(n)}: {r:.3g}x" for n, r in ratio.items())
            n_star = next((n for n in both if all(m in below for m in both if m >= n)), None)
            verdict = (SUPPORTED if n_star is not None else
                       REJECTED if len(above) == len(both) else INCONCLUSIVE)
            out.append(Claim(f"{solver} solve seconds below Cholesky's from some n* [{data}]",
                             "n* exists", f"PCG / Cholesky median solve seconds: {ratios}"
                             + (f"; n* = {int(n_star)}" if n_star is not None else
                                f"; no n* in n = {int(both[0])}..{int(both[-1])}"),
                             verdict=verdict, quantity="seconds"))
        out += _preconditioner_claims(g, training, data)
    return out


def _preconditioner_claims(g: pd.DataFrame, training: pd.DataFrame | None, data: str
                           ) -> list[Claim]:
    """Whether the sketch preconditioner pays, in iterations and in time, against plain CG."""
    out: list[Claim] = []
    cg = g[g["solver"] == "cg"]
    if cg.empty:
        return out
    n_max = int(g["n"].max())
    cond = ""
    if training is not None and "cond_K" in training:
        t = training[(training["data"] == data) & (training["iteration"] > 0)
                     & (training["n"] == n_max)].copy()
        t["solver"] = t["options"].fillna("").map(_solver_of)
        if not t.empty:
            ck = t["cond_K"].median()
            pc = t[t["solver"].str.startswith("pcg")]["cond_preconditioned"].median()
            cond = f"cond(K) {ck:.3g}, preconditioned {pc:.3g} at n = {n_max}; "
    for solver in sorted(s for s in set(g["solver"]) if s.startswith("pcg")):
        p = g[g["solver"] == solver]
        ns = sorted(set(p["n"]) & set(cg["n"]))
        if not ns:
            continue
        it = "; ".join(f"n={int(n)}: {p[p['n'] == n]['cg_iters'].median():.0f} vs "
                       f"{cg[cg['n'] == n]['cg_iters'].median():.0f}" for n in ns)
        faster = [n for n in ns if p[p["n"] == n]["seconds"].max()
                  < cg[cg["n"] == n]["seconds"].min()]
        sec = "; ".join(f"n={int(n)}: {p[p['n'] == n]['seconds'].median():.3g} s vs "
                        f"{cg[cg['n'] == n]['seconds'].median():.3g} s" for n in ns)
        out.append(Claim(f"{solver}: the preconditioner cuts CG iterations [{data}]",
                         "fewer iterations than plain CG", cond + "iterations PCG vs CG: " + it,
                         verdict=SUPPORTED if all(
                             p[p["n"] == n]["cg_iters"].median()
                             < cg[cg["n"] == n]["cg_iters"].median() for n in ns)
                         else REJECTED))
        out.append(Claim(f"{solver}: the preconditioner pays in solve time [{data}]",
                         "PCG solve seconds below plain CG's", "seconds PCG vs CG: " + sec,
                         verdict=SUPPORTED if faster else REJECTED,
                         quantity="seconds"))
    missing = sorted(set(int(n) for n in g["n"]) - set(int(n) for n in cg["n"]))
    if missing:
        out.append(Claim(f"plain CG converges [{data}]", "within cg_maxiter",
                         f"no ok solve at n = {missing} (see the run's status column)",
                         verdict=REJECTED))
    return out


def data_claims(training: pd.DataFrame | None, limits: Limits) -> list[Claim]:
    """On each data set: activity near Q(beta), and subquad reproduces dense-gn's losses
    (``engine.loss_gap`` at most same_iterates_rtol)."""
    out: list[Claim] = []
    if training is None or training.empty or training["data"].nunique() < 2:
        return out
    band, rtol = limits.claim_activity_ratio, limits.claim_same_rtol
    for (data, method), g in training.groupby(["data", "method"]):
        ratio = engine.activity_ratio(g)
        out.append(Claim(f"active fraction within {band:g}x of Q(beta) [{method}, {data}]",
                         f"ratio in [{1 / band:.2f}, {band:g}]",
                         f"[{ratio.min():.2f}, {ratio.max():.2f}] over every layer and step",
                         verdict=engine.verdict_band(ratio.min(), ratio.max(), band)))
    t = training[training["layer"] == 0]
    keys = ["data", "m", "n", "d", "L", "c", "threshold", "seed", "iteration"]
    dense = t[t["method"] == "dense-gn"][[*keys, "loss"]]
    for data, g in t[t["method"] == "subquad"].groupby("data"):
        rel = engine.loss_gap(dense, g[[*keys, "loss"]], keys)
        if rel.empty:
            continue
        final = g.sort_values("iteration")["loss"]
        out.append(Claim(f"subquad reproduces dense-gn's losses [{data}]",
                         f"relative loss difference <= {rtol:g}",
                         f"max relative difference {rel.max():.2g} over {len(rel)} steps; "
                         f"subquad loss {final.iloc[0]:.3g} -> {final.iloc[-1]:.3g}",
                         verdict=SUPPORTED if rel.max() <= rtol else REJECTED))
    return out


@engine.register(FAMILY)
def fitted_axes(data: RunData, scope: Scope) -> list[Claim]:
    """Exponents in n and d of every fitted series."""
    return n_d_claims(data.fits, scope.limits) if data.fits is not None else []


@engine.register(FAMILY)
def depth_and_solver(data: RunData, scope: Scope) -> list[Claim]:
    """Depth and solver claims (on every row, failed ones included: depth names them)."""
    runs = data.all_runs if data.all_runs is not None else data.runs
    if runs is None:
        return []
    return (depth_claims(runs, data.training, scope.limits)
            + solver_claims(runs, data.training, scope.limits))


@engine.register(FAMILY)
def real_data(data: RunData, scope: Scope) -> list[Claim]:
    """Activity and same losses per data set."""
    return data_claims(data.training, scope.limits)


def claims_markdown(claims: list[Claim], run_dir: Path, limits: Limits) -> str:
    """``axis_claims.md``: the rules and one table row per claim."""
    lines = [f"# Claims on n, d, L, the solver and real data ({run_dir})", "",
             f"Rules: `~ x^k` is supported when the whole 95% interval lies within k +- "
             f"{limits.claim_tolerance:g}, not supported when it lies wholly outside, "
             "inconclusive otherwise; downgraded to inconclusive by the claims engine's rules "
             "(`subquad/analysis/claims/engine.py`; models: `subquad/analysis/claims/axes.py`)."
             " Reproduce: `.venv/bin/python -m "
             f"subquad.analysis.claims.axes {run_dir}`.", "",
             "| claim | predicted | measured | verdict |", "|---|---|---|---|"]
    lines += [f"| {c.claim} | {c.predicted} | {c.measured} | **{c.verdict}** |" for c in claims]
    if not claims:
        lines.append(f"| (none: the run varies no axis these claims speak of) | - | - | "
                     f"{NOT_MEASURED} |")
    return "\n".join(lines) + "\n"


def write_axis_claims(run_dir: RunDir | Path | str, data: RunData | None = None,
                      limits: Limits | None = None) -> list[Claim]:
    """Evaluate the axis family on a run; write axis_claims.csv and axis_claims.md."""
    rd = RunDir.of(run_dir)
    scope, claims = engine.evaluate(data or load_run(rd), [FAMILY], limits)
    rd.write_table("axis_claims", engine.claims_frame(claims))
    rd.write_document("axis_claims.md", claims_markdown(claims, rd.path, scope.limits))
    return claims


if __name__ == "__main__":  # pragma: no cover - thin command line
    for arg in sys.argv[1:] or ["."]:
        got = write_axis_claims(arg)
        print(f"{arg}: {len(got)} claims -> {Path(arg) / 'axis_claims.md'}")
