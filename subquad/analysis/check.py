"""``subquad check DIR --baseline BASE``: scaling and constant-factor gates of a fitted run.

Rules of docs MEASUREMENT.md, "Gating regressions", with every number from ``limits.toml``:

- limit: a fitted exponent fails when its interval leaves its declared bounds (ci_high > max);
- baseline: it fails when it rose beyond the intervals (new ci_low > base ci_high + slack);
  series are matched by machine-independent keys, so exponents compare across machines;
- factor: a cell is slower when median(new) / median(base) > ratio AND the difference is
  significant. Which rule decides significance depends on the sample sizes, and the detail
  says which one did: a one-sided Mann-Whitney U test (p < p_value) when the sizes can reach
  p_value at all (exactly: 1 / C(n1 + n2, n1) < p_value, i.e. >= 6 samples per side for
  0.002), otherwise non-overlap of the two medians' order-statistic intervals (with their true
  coverage, ``stats.median_ci``). A cell with fewer than 2 samples on a side, or timed on
  another machine than its baseline, cannot be decided: it is reported as UNDECIDED, which
  fails under ``--strict``. Too few samples never make a check pass by default.

Prints one table row per check; exit status 1 when any check fails (or, with ``--strict``, is
undecided), 0 otherwise.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu

from subquad.analysis.gates import GateResult
from subquad.analysis.limits import Limits, load_limits
from subquad.analysis.stats import median_ci
from subquad.errors import ConfigError
from subquad.files import atomic_write_bytes
from subquad.harness.environment import fingerprint, machine_id
from subquad.results.rundir import RunDir
from subquad.vocabulary import SIZES, VARIANT

#: what identifies a fitted series independently of the machine it ran on
FIT_KEYS = [*VARIANT, "phase", "quantity", "axis", "fit", "context"]
#: what identifies a timed cell (seconds are compared only where machine also agrees)
CELL_KEYS = [*VARIANT, *SIZES, "seed"]


# ----------------------------------------------------------------------------- loading


def load_fits(run_dir: RunDir | Path, arg: str) -> pd.DataFrame:
    """The slope rows of ``run_dir/fits.csv`` (schema-checked); ConfigError naming ``arg``."""
    rd = RunDir.of(run_dir)
    df = rd.table("fits")
    if df is None:
        raise ConfigError(arg, f"no fits table at {rd.file('fits')}; run `subquad fit "
                          f"{rd.path}` first")
    return df[df["fit"] == "slope"].drop_duplicates(FIT_KEYS, keep="first")


def load_samples(run_dir: RunDir | Path, arg: str, phase: str) -> pd.DataFrame:
    """The timing rows of one phase from ``run_dir/runs.csv`` (all statuses, validated)."""
    rd = RunDir.of(run_dir)
    if not rd.has("runs"):
        raise ConfigError(arg, f"no runs table at {rd.file('runs')}; run `subquad sweep` into "
                          "it first")
    runs = rd.runs().frame
    return runs[runs["phase"] == phase]


# ----------------------------------------------------------------------------- exponents


def _series_name(row: pd.Series) -> str:
    opts = f" [{row['options']}]" if row["options"] else ""
    return (f"{row['method']}{opts} {row['phase']} {row['quantity']} ~ {row['axis']}"
            f" ({row['context']})")


def _interval(row: pd.Series) -> str:
    return f"CI [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"


#: phases whose content depends on the resolved update mode (fused moves the update's and the
#: top backward's work into the forward): their exponents compare only between equal modes
MODE_PHASES = ("forward", "backward", "update")


def update_modes(run_dir: RunDir | Path) -> dict[tuple, dict[tuple, str]]:
    """(method, options) -> {(n, d, L, c, m): resolved update mode} of a run's cells."""
    rd = RunDir.of(run_dir)
    if not rd.has("runs"):
        return {}
    runs = rd.runs().frame
    if "update_resolved" not in runs:
        return {}
    out: dict[tuple, dict[tuple, str]] = {}
    cols = ["n", "d", "L", "c", "m"]
    first = runs.drop_duplicates(["method", "options", *cols])
    for r in first.itertuples():
        point = tuple(float(getattr(r, c)) for c in cols)
        out.setdefault((r.method, r.options), {})[point] = str(r.update_resolved)
    return out


def _mode_difference(key: tuple, new: dict, base: dict) -> str:
    """Where two runs resolved a series' update mode differently ('' when they agree)."""
    a, b = new.get(key, {}), base.get(key, {})
    diff = sorted(p for p in set(a) & set(b) if a[p] != b[p])
    if not diff:
        return ""
    p = diff[0]
    return (f"update mode differs at {len(diff)} width(s), from m = {p[-1]:g}: {a[p]} here, "
            f"{b[p]} in the baseline")


def exponent_checks(new: pd.DataFrame, base: pd.DataFrame, limits: Limits,
                    modes: tuple[dict, dict] | None = None) -> list[GateResult]:
    """Limit checks on every governed series of ``new`` and rise checks against ``base``.

    ``modes`` (this run's and the baseline's ``update_modes``): a forward, backward or update
    series whose cells resolved another update mode than the baseline's is not compared (an
    undecided row that names the widths): its counted content differs, not its scaling.
    """
    out: list[GateResult] = []
    base_by_key = {tuple(r[k] for k in FIT_KEYS): r for _, r in base.iterrows()}
    compared = set()
    for _, row in new.iterrows():
        key = tuple(row[k] for k in FIT_KEYS)
        b = base_by_key.get(key)
        b_exp = float(b["exponent"]) if b is not None else math.nan
        for lim in limits.exponents:
            if lim.matches(row["method"], row["phase"], row["quantity"], row["axis"],
                           row["context"]):
                out.append(GateResult(f"limit: {_series_name(row)}", float(row["exponent"]),
                                      lim.describe(),
                                      not lim.violated(row["ci_low"], row["ci_high"]),
                                      _interval(row), b_exp))
        if b is None or not limits.compared(row["phase"], row["quantity"]):
            continue
        compared.add(key)
        differs = _mode_difference((row["method"], row["options"]), *modes) \
            if modes and row["phase"] in MODE_PHASES else ""
        if differs:
            out.append(GateResult(f"vs baseline: {_series_name(row)}", float(row["exponent"]),
                                  "same update modes", True, differs, b_exp, decided=False))
            continue
        bound = float(b["ci_high"]) + limits.baseline_slack
        rose = not row["ci_low"] <= bound  # NaN counts as a rise: no usable interval
        out.append(GateResult(f"vs baseline: {_series_name(row)}", float(row["exponent"]),
                              f"ci_low <= {bound:.3f}", not rose,
                              f"{_interval(row)}; baseline {_interval(b)}", b_exp))
    for key, b in base_by_key.items():
        if key not in compared and limits.compared(b["phase"], b["quantity"]):
            out.append(GateResult(f"vs baseline: {_series_name(b)}", math.nan, "present",
                                  False, "fitted in the baseline but missing from this run",
                                  float(b["exponent"])))
    return out


# ----------------------------------------------------------------------------- factor


def factor_gate(new: Sequence[float], base: Sequence[float], ratio: float = 1.10,
                p_value: float = 0.002) -> tuple[bool | None, float, str]:
    """(slower, median ratio, how it was decided) of new samples against base samples.

    ``slower`` is None when the samples cannot decide (fewer than 2 on a side).
    """
    a, b = np.asarray(new, dtype=float), np.asarray(base, dtype=float)
    r = float(np.median(a) / np.median(b))
    sizes = f"{a.size} vs {b.size} samples"
    if a.size < 2 or b.size < 2:
        return None, r, f"ratio {r:.3f}; undecided: {sizes}, at least 2 per side are needed"
    # the smallest one-sided p the exact Mann-Whitney test can reach with these sizes
    if 1.0 / math.comb(a.size + b.size, a.size) < p_value:
        p = float(mannwhitneyu(a, b, alternative="greater").pvalue)
        return (r > ratio and p < p_value), r, (f"ratio {r:.3f}, rule Mann-Whitney: p {p:.2g} "
                                                f"({sizes})")
    ca, cb = median_ci(a), median_ci(b)
    apart = ca.lo > cb.hi
    return (r > ratio and apart), r, (
        f"ratio {r:.3f}, rule interval overlap (Mann-Whitney cannot reach p < {p_value:g} with "
        f"{sizes}): new [{ca.lo:.3g}, {ca.hi:.3g}] vs base [{cb.lo:.3g}, {cb.hi:.3g}] "
        f"({'disjoint' if apart else 'overlapping'}; coverage {ca.coverage:.1%} and "
        f"{cb.coverage:.1%})")


def _cell_name(key: tuple) -> str:
    k = dict(zip(CELL_KEYS, key))
    opts = f" [{k['options']}]" if k["options"] else ""
    label = f" ({k['label']})" if k["label"] and k["label"] != k["method"] else ""
    return (f"{k['method']}{label}{opts} m={k['m']:g} n={k['n']:g} d={k['d']:g} L={k['L']:g} "
            f"c={k['c']:g} {k['dtype']}")


def _groups(df: pd.DataFrame) -> dict[tuple, pd.DataFrame]:
    return {key: g for key, g in df.groupby(CELL_KEYS, dropna=False, sort=True)}


def machine_drift(new: pd.DataFrame, base: pd.DataFrame, kernel: str) -> float | None:
    """Run-to-run speed factor of the machine: median over m of the calibration kernel's
    median-time ratio (new / base); None unless both runs timed ``kernel`` at a common m."""
    if not kernel:
        return None
    ratios = []
    for m, b in base[(base["method"] == kernel) & (base["status"] == "ok")].groupby("m"):
        n = new[(new["method"] == kernel) & (new["status"] == "ok") & (new["m"] == m)]
        if len(n) and len(b):
            ratios.append(float(np.median(n["seconds"]) / np.median(b["seconds"])))
    return float(np.median(ratios)) if ratios else None


def factor_checks(new: pd.DataFrame, base: pd.DataFrame, limits: Limits,
                  drift: float | None = None) -> list[GateResult]:
    """The constant-factor gate on every cell timed in the baseline.

    With ``drift`` (see ``machine_drift``), new samples are first divided by it, so a run on a
    uniformly slower (or faster) machine state is compared at the same machine speed.
    """
    out = []
    scale = drift if drift else 1.0
    new_cells = _groups(new)
    for key, b in _groups(base).items():
        b_ok = b[b["status"] == "ok"]["seconds"].dropna().to_numpy()
        if b_ok.size == 0:
            continue
        name = f"factor: {_cell_name(key)}"
        limit = f"ratio <= {limits.factor_ratio:g} or not significant"
        n = new_cells.get(key)
        n_ok = (n[n["status"] == "ok"]["seconds"].dropna().to_numpy() if n is not None
                else np.zeros(0))
        if n_ok.size == 0:
            why = "missing from this run" if n is None else f"status {n['status'].iloc[0]}"
            out.append(GateResult(name, math.nan, limit, False, why, float(np.median(b_ok))))
            continue
        if set(n["machine"]) != set(b["machine"]):
            out.append(GateResult(name, float(np.median(n_ok)), "same machine", True,
                                  "undecided: baseline from another machine (seconds are "
                                  "compared only on one machine)", float(np.median(b_ok)),
                                  decided=False))
            continue
        slower, r, detail = factor_gate(n_ok / scale, b_ok, limits.factor_ratio,
                                        limits.factor_p)
        if drift:
            detail += f"; raw ratio {r * scale:.3f} / machine drift {scale:.3f}"
        out.append(GateResult(name, float(np.median(n_ok)), limit, slower is not True, detail,
                              float(np.median(b_ok)), decided=slower is not None))
    return out


# ----------------------------------------------------------------------------- command


def run_check(run_dir: RunDir | str | Path, baseline: RunDir | str | Path,
              limits: str | Path | None = None) -> list[GateResult]:
    """Every check of a fitted run against its baseline and the declared limits."""
    lim = load_limits(limits)
    run_dir, baseline = RunDir.of(run_dir), RunDir.of(baseline)
    if not run_dir.path.is_dir():
        raise ConfigError("DIR", f"no run directory at {run_dir.path}")
    if not baseline.path.is_dir():
        raise ConfigError("--baseline", f"no baseline directory at {baseline.path}; create it "
                          "with `make check-scaling-baseline`")
    results = exponent_checks(load_fits(run_dir, "DIR"), load_fits(baseline, "--baseline"), lim,
                              (update_modes(run_dir), update_modes(baseline)))
    drift = machine_drift(load_samples(run_dir, "DIR", "kernel"),
                          load_samples(baseline, "--baseline", "kernel"), lim.factor_normalize_by)
    base = load_samples(baseline, "--baseline", lim.factor_phase)
    env, base_env = run_dir.environment(), baseline.environment()
    if env and fingerprint(env) == fingerprint(base_env):  # one machine, maybe an old id
        base = base.replace({"machine": {base_env.get("machine"): env.get("machine")}})
    results += factor_checks(load_samples(run_dir, "DIR", lim.factor_phase), base, lim, drift)
    if drift is not None:
        results.append(GateResult(f"machine drift ({lim.factor_normalize_by}, new / baseline)",
                                  drift, "informational", True,
                                  "cell samples were divided by this before the factor gate"))
    return results


# ----------------------------------------------------------------------------- portable tiers


def find_baseline(root: Path, env: dict) -> Path | None:
    """The baseline under ``root`` (one directory per machine) whose fingerprint equals
    ``env``'s (CPU model, cache sizes, cores, threads, BLAS; any directory name, old ids too);
    None when there is none."""
    want = fingerprint(env)
    for d in sorted(p for p in Path(root).iterdir() if p.is_dir()) if root.is_dir() else []:
        if fingerprint(RunDir(d).environment()) == want:
            return d
    return None


def any_baseline(root: Path) -> Path | None:
    """Some baseline under ``root`` (counted work is machine-independent), None if empty."""
    dirs = sorted(p for p in Path(root).iterdir() if (p / "fits.csv").is_file()) \
        if root.is_dir() else []
    return dirs[0] if dirs else None


def _work_only(fits: pd.DataFrame) -> pd.DataFrame:
    return fits[fits["quantity"] != "seconds"]


def model_checks(run_dir: Path, limits: Limits) -> list[GateResult]:
    """Seconds of ``run_dir`` against the machine model's prediction for its own machine.

    Needs ``run_dir/calibration.json`` (``[calibration] probes = true``); without it one
    failed gate says so (never a silent pass). Per cell (m >= model min_m): measured /
    predicted iteration seconds inside the ratio band; per series: the measured exponent's
    ci_low at most the model exponent + tolerance over the same widths.
    """
    from subquad.analysis.perfmodel.machine import load_calibration, slope  # noqa: PLC0415
    from subquad.analysis.perfmodel.predict import (  # noqa: PLC0415
        SERIES,
        cell_phases,
        fitted_seconds,
        predict_cells,
        series_context,
    )

    rd = RunDir.of(run_dir)
    runs = load_samples(rd, "DIR", "iteration")
    machine = str(runs["machine"].iloc[0]) if len(runs) else ""
    try:
        mach = load_calibration(rd.file("calibration.json"), machine, "DIR")
    except ConfigError as exc:
        return [GateResult("model: calibration of this machine", math.nan, "present", False,
                           f"{exc}; cannot gate seconds without a baseline or it")]
    if mach.id != machine:
        return [GateResult("model: calibration of this machine", math.nan, machine, False,
                           f"calibration.json holds {mach.id}, the run {machine}")]
    pred = predict_cells(cell_phases(rd.runs().frame), mach)
    it = pred[(pred["phase"] == "iteration") & (pred["m"] >= limits.model_min_m)]
    lo, hi = limits.model_ratio
    out = []
    for r in it.sort_values(["method", "options", "m"]).itertuples():
        ratio = r.seconds / r.predicted
        name = f"model: {r.method}{f' [{r.options}]' if r.options else ''} m={r.m:g} n={r.n:g}"
        out.append(GateResult(name, float(ratio), f"measured / predicted in [{lo:g}, {hi:g}]",
                              bool(lo <= ratio <= hi),
                              f"measured {r.seconds:.4g} s, predicted {r.predicted:.4g} s"))
    fits = load_fits(rd, "DIR")
    tol = limits.model_exponent_tolerance
    for key, g in it.groupby(SERIES, dropna=False, sort=True):
        kd = dict(zip(SERIES, key))
        model_exp = slope(g["m"], g["predicted"])
        b = fitted_seconds(fits, kd)
        name = f"model exponent: {kd['method']} iteration seconds ({series_context(kd)})"
        if b is None or len(g) < 3:
            out.append(GateResult(name, math.nan, f"ci_low <= {model_exp:.3f} + {tol:g}",
                                  False, "no fitted seconds exponent over >= 3 widths"))
            continue
        rose = not float(b["ci_low"]) <= model_exp + tol
        out.append(GateResult(name, float(b["exponent"]), f"ci_low <= {model_exp + tol:.3f}",
                              not rose, f"{_interval(b)}; model {model_exp:.3f} over m "
                              f"{g['m'].min():g}-{g['m'].max():g} (calibration {mach.id})"))
    return out


def run_portable_check(run_dir: RunDir | str | Path, root: str | Path,
                       limits: str | Path | None = None) -> tuple[list[GateResult], str]:
    """``subquad check DIR --baselines ROOT``: (results, one line naming the tier used).

    Counted work is gated everywhere (limits, and rises over any stored baseline). Seconds:
    against the baseline of this machine's fingerprint when ROOT has one, otherwise against
    the machine model's prediction for this machine (``model_checks``).
    """
    lim = load_limits(limits)
    run_dir, root = RunDir.of(run_dir), Path(root)
    if not run_dir.path.is_dir():
        raise ConfigError("DIR", f"no run directory at {run_dir.path}")
    env = run_dir.environment()
    same = find_baseline(root, env)
    if same is not None:
        note = f"baseline tier: {same} has this machine's fingerprint ({env.get('machine')})"
        return run_check(run_dir, same, limits), note
    new = load_fits(run_dir, "DIR")
    other = any_baseline(root)
    other = RunDir(other) if other else None
    base = _work_only(load_fits(other, "--baselines")) if other else new.iloc[0:0]
    modes = (update_modes(run_dir), update_modes(other)) if other else None
    results = exponent_checks(_work_only(new), base, lim, modes)
    results += model_checks(run_dir, lim)
    note = (f"no baseline for machine {env.get('machine', '?')} under {root}: seconds gated "
            "against the machine model's prediction; record this machine's baseline with "
            "`make check-scaling-baseline`")
    return results, note


def record_baseline(run_dir: RunDir | str | Path, root: str | Path) -> Path:
    """Copy a fitted run to ``root/<machine_id(its environment)>/``: this machine's baseline.

    It replaces the baseline of its fingerprint, also one under an old id (that directory is
    removed: a migration), never another machine's. Every file goes through ``subquad.files``
    (atomic); cell files and figures are left out.
    """
    rd, root = RunDir.of(run_dir), Path(root)
    run_dir, env = rd.path, rd.environment()
    if not env.get("machine"):
        raise ConfigError("DIR", f"{run_dir}/environment.json names no machine")
    load_fits(rd, "DIR")
    dest, same = root / machine_id(env), find_baseline(root, env)
    for old in {dest, same} - {None}:
        if old.exists():
            shutil.rmtree(old)
    for f in sorted(run_dir.rglob("*")):
        rel = f.relative_to(run_dir)
        if f.is_file() and rel.parts[0] not in ("cells", "figures"):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(dest / rel, f.read_bytes())
    return dest
