"""The results schema and what the analysis layer must never hide: dropped rows, missing and
failed cells, variants, honest intervals, undecidable checks, self-explaining figures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom, bootstrap

from subquad import cli
from subquad.analysis.check import factor_checks
from subquad.analysis.claims import engine as verdicts
from subquad.analysis.fit import fit_run, fit_slope
from subquad.analysis.limits import load_limits
from subquad.analysis.report import write_report
from subquad.analysis.rundata import load_run
from subquad.analysis.stats import median_ci, min_samples
from subquad.errors import ConfigError
from subquad.harness.sweep import run_sweep
from subquad.results.cells import atomic_write_csv, read_cell
from subquad.results.format import options_string, parse_context
from subquad.results.rundir import RunDir
from subquad.results.schema import SCHEMA_VERSION, TABLES, VERSION_COLUMN
from subquad.vocabulary import INCONCLUSIVE, NOT_MEASURED, REJECTED, SUPPORTED
from tests.experiment_text import grid
from tests.test_fit import synth

ROOT = Path(__file__).resolve().parents[1]

VARIANTS = """
name = "variants"
dtype = "float64"

[[methods]]
method = "subquad"
label = "per-example"
update = "scatter"
forward_kernel = "per-example"

[[methods]]
method = "subquad"
label = "input-major"
update = "scatter"
forward_kernel = "input-major"

[[methods]]
method = "dense-gd"
label = "gd-slow"
lr = 0.001

[[methods]]
method = "dense-gd"
label = "gd-fast"
lr = 0.01
""" + grid("64, 96, 128")


@pytest.fixture(scope="module")
def variants_run(tmp_path_factory) -> Path:
    """A real sweep: two subquad variants differing only in forward_kernel, two dense-gd
    variants differing only in lr, three widths each (12 cells)."""
    tmp = tmp_path_factory.mktemp("variants")
    (tmp / "exp.toml").write_text(VARIANTS)
    out = tmp / "out"
    run_sweep(tmp / "exp.toml", out, progress=False)
    return out


# --------------------------------------------------------------------------- variants


def test_variants_differing_in_one_option_are_separate_series(variants_run: Path) -> None:
    assert cli.main(["fit", str(variants_run)]) == 0
    fits = RunDir(variants_run).table("fits")
    it = fits[(fits["phase"] == "iteration") & (fits["quantity"] == "work")
              & (fits["fit"] == "slope")]
    sub = it[it["method"] == "subquad"]
    gd = it[it["method"] == "dense-gd"]
    assert sorted(sub["label"]) == ["input-major", "per-example"]
    assert sorted(parse_context(o)["forward_kernel"] for o in sub["options"]) == [
        "input-major", "per-example"]
    assert sorted(gd["label"]) == ["gd-fast", "gd-slow"]
    assert sorted(float(parse_context(o)["lr"]) for o in gd["options"]) == [0.001, 0.01]
    runs = RunDir(variants_run).runs().frame
    assert set(runs.loc[runs["method"] == "subquad", "forward_kernel_resolved"]) == {
        "per-example", "input-major"}
    assert set(runs.loc[runs["method"] == "subquad", "update_resolved"]) == {"scatter"}


def test_schema_1_runs_are_migrated_from_experiment_toml(variants_run: Path, tmp_path) -> None:
    """Drop every column schema 1 lacked: the library refuses it naming `subquad upgrade`, and
    `subquad fit` upgrades it first (the variant columns from the copied experiment.toml)."""
    new = pd.read_csv(variants_run / "runs.csv", dtype=str, keep_default_na=False)
    old_cols = ["experiment", "cell", "machine", "method", "backend", "dtype", "m", "n", "d",
                "L", "c", "threshold", "data", "solver", "update", "rank_max", "options",
                "seed", "sample", "iters", "phase", "seconds", "work", "bytes",
                "active_fraction", "loss", "cg_iters", "status", "message"]
    run = tmp_path / "old"
    run.mkdir()
    new[old_cols].assign(options="").to_csv(run / "runs.csv", index=False)
    (run / "experiment.toml").write_text((variants_run / "experiment.toml").read_text())
    with pytest.raises(ConfigError, match="subquad upgrade"):
        fit_run(run, n_boot=20)
    assert cli.main(["fit", str(run)]) == 0
    again = pd.read_csv(run / "runs.csv", dtype=str, keep_default_na=False)
    assert set(again[VERSION_COLUMN]) == {str(SCHEMA_VERSION)}
    for col in ("label", "options", "forward_kernel", "update_resolved"):
        assert list(again[col]) == list(new[col]), col
    assert np.allclose(again["lr"].astype(float), new["lr"].astype(float))
    (run / "experiment.toml").unlink()
    new[old_cols].to_csv(run / "runs.csv", index=False)
    assert cli.main(["upgrade", str(run)]) == 2


def test_derived_table_of_an_older_schema_is_refused(tmp_path) -> None:
    pd.DataFrame({"method": ["subquad"], "phase": ["iteration"], "exponent": [1.7]}).to_csv(
        tmp_path / "fits.csv", index=False)
    with pytest.raises(ConfigError, match="subquad fit"):
        RunDir(tmp_path).table("fits")


def test_options_string_is_canonical() -> None:
    assert options_string({"method": "calib-axpy", "solver": "x"}) == ""
    dense = options_string({"method": "dense-gd", "solver": "gradient", "lr": 0.001,
                            "damping": 0.0, "update": "dense"})
    assert dense == "solver=gradient;lr=0.001;damping=0"
    pcg = options_string({"method": "subquad", "solver": "pcg-tensorsketch",
                          "update": "auto", "rank_max": 0, "forward_kernel": "auto", "lr": 1,
                          "damping": 0, "sketch_size": None, "cg_tol": 1e-10})
    assert parse_context(pcg) == {"solver": "pcg-tensorsketch", "update": "auto",
                                  "rank_max": "0", "forward_kernel": "auto", "lr": "1",
                                  "damping": "0", "cg_tol": "1e-10"}


# ------------------------------------------------------------------ completeness, failures


def test_partial_run_reports_planned_missing_and_a_nan_cell(variants_run: Path,
                                                            tmp_path) -> None:
    """Keep 8 of 12 cell files (a killed sweep), mark one diverged (status nan), merge, fit,
    report: the completeness section counts them and lists the nan cell."""
    run = tmp_path / "partial"
    (run / "cells").mkdir(parents=True)
    (run / "experiment.toml").write_text((variants_run / "experiment.toml").read_text())
    files = sorted((variants_run / "cells").glob("*.csv"))
    files = [f for f in files if not f.name.endswith(".training.csv")]
    for f in files[:8]:
        (run / "cells" / f.name).write_bytes(f.read_bytes())
    diverged = read_cell(run / "cells" / files[0].name)
    diverged["status"], diverged["message"] = "nan", "DivergenceError: loss became NaN"
    atomic_write_csv(run / "cells" / files[0].name, diverged.to_dict("records"),
                     list(diverged.columns))  # a sound (checksummed) cell file
    assert cli.main(["sweep", "--merge", str(run)]) == 0
    assert cli.main(["fit", str(run)]) == 0
    report = write_report(run).read_text()
    section = report.split("## Completeness")[1].split("\n## ")[0]
    assert "cells planned (experiment.toml): **12**" in section
    assert "measured with status ok: **7**" in section
    assert "failed: **1** (nan: 1)" in section
    assert "missing (planned, no cell file merged): **4**" in section
    assert "Every cell finished with status ok" not in report
    nan_cell = diverged["cell"].iloc[0]
    line = next(ln for ln in section.splitlines() if ln.startswith(f"| {nan_cell} "))
    assert "| nan |" in line and "DivergenceError" in line


def test_complete_run_says_so(variants_run: Path) -> None:
    cli.main(["fit", str(variants_run)])
    report = write_report(variants_run).read_text()
    assert "Every cell finished with status ok and every planned cell was measured" in report
    assert "missing (planned, no cell file merged): **0**" in report


def test_doctored_seconds_are_dropped_counted_and_reported(tmp_path, capsys) -> None:
    runs = pd.concat([synth(1.76, seed=1), synth(2.0, method="dense-gn", seed=2)])
    runs = runs.astype({"seconds": object}).reset_index(drop=True)
    bad = {0: "nan", 1: "-1e-3", 2: "0", 3: "abc"}
    for i, v in bad.items():
        runs.loc[i, "seconds"] = v
    runs.to_csv(tmp_path / "runs.csv", index=False)
    assert cli.main(["fit", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "dropped 4 row(s) of runs.csv" in out
    for reason in ("seconds is NaN", "seconds is negative",
                   "seconds is zero although work was done", "seconds is not a number"):
        assert reason in out
    dropped = RunDir(tmp_path).table("dropped")
    assert int(dropped["rows"].sum()) == 4 and set(dropped["value"]) == set(bad.values())
    report = write_report(tmp_path).read_text()
    assert "Rows dropped by the loader" in report and "seconds is negative" in report
    assert "rows dropped by the loader: **4**" in report
    assert "Every cell finished with status ok" not in report
    # a gate run names them too, for the run and for its baseline
    cli.main(["check", str(tmp_path), "--baseline", str(tmp_path)])
    out = capsys.readouterr().out
    assert out.count("4 row(s) of runs.csv are not in its fits") == 2
    assert "seconds is not a number" in out


def test_empty_fit_window_exits_2(tmp_path, capsys) -> None:
    synth(1.76).to_csv(tmp_path / "runs.csv", index=False)
    assert cli.main(["fit", str(tmp_path), "--min-m", "100000"]) == 2
    err = capsys.readouterr().err
    assert "min-m" in err and "no series" in err


# ------------------------------------------------------------------------------ statistics


@pytest.mark.parametrize("s", [1, 2, 3, 5, 6, 9, 20, 51])
def test_median_interval_has_its_exact_coverage(s: int) -> None:
    x = np.arange(1.0, s + 1)
    ci = median_ci(x)
    k = int(ci.lo)  # x_(k) = k
    assert ci.hi == s - k + 1
    exact = 1 - 2 * binom.cdf(k - 1, s, 0.5)
    assert ci.coverage == pytest.approx(exact)
    if s >= min_samples():
        assert ci.coverage >= 0.95 and not ci.short
        assert k == (s + 1) // 2 or 1 - 2 * binom.cdf(k, s, 0.5) < 0.95  # k is the largest
    else:
        assert k == 1 and ci.short and ci.coverage < 0.95
    assert median_ci([1, 2, 3]).coverage == pytest.approx(0.75)
    assert median_ci([1, 2, 3, 4, 5]).coverage == pytest.approx(0.9375)
    assert min_samples() == 6


def test_bootstrap_slope_interval_agrees_with_scipy() -> None:
    """Our per-point resampling equals scipy.stats.bootstrap resampling each point's sample
    independently, with the statistic 'OLS slope of log medians': same percentile interval."""
    rng = np.random.default_rng(7)
    x = np.array([256.0, 512, 1024, 2048, 4096, 8192])
    samples = [1e-9 * v**1.7 * np.exp(rng.normal(0, 0.15, 7)) for v in x]
    ours = fit_slope(x, samples, n_boot=4000, seed=1)
    lx = np.log(x)

    def slope(*points: np.ndarray) -> float:
        return float(np.polyfit(lx, np.log([np.median(p) for p in points]), 1)[0])

    ref = bootstrap(tuple(samples), slope, n_resamples=4000, method="percentile",
                    vectorized=False, random_state=np.random.default_rng(2))
    assert ours.exponent == pytest.approx(slope(*samples))
    assert ours.ci_low == pytest.approx(ref.confidence_interval.low, abs=0.02)
    assert ours.ci_high == pytest.approx(ref.confidence_interval.high, abs=0.02)


# ------------------------------------------------------------------------------ check


def _cells(seconds: list[float], machine: str = "box") -> pd.DataFrame:
    return pd.DataFrame({"method": "subquad", "label": "subquad", "options": "o",
                         "backend": "numpy", "dtype": "float32", "threshold": "adaptive",
                         "data": "synthetic", "m": 1024.0, "n": 16.0, "d": 16.0, "L": 2.0,
                         "c": 0.2, "seed": 0.0, "machine": machine, "status": "ok",
                         "seconds": seconds})


@pytest.mark.parametrize("new, passed, rule", [
    ([2.0, 2.1, 2.2], False, "rule interval overlap"),  # 2x slower, disjoint: fails
    ([1.0, 1.3, 2.2], True, "rule interval overlap"),  # slower median, overlapping: passes
])
def test_factor_check_with_three_samples_decides_by_intervals(new, passed, rule) -> None:
    lim = load_limits()
    (res,) = factor_checks(_cells(new), _cells([1.0, 1.05, 1.1]), lim)
    assert res.decided and res.passed is passed and rule in res.detail
    assert "coverage 75.0%" in res.detail


def test_factor_check_uses_mann_whitney_when_it_can_reach_p() -> None:
    base = [1.0 + 0.01 * i for i in range(6)]
    (res,) = factor_checks(_cells([2.0 + 0.01 * i for i in range(6)]), _cells(base),
                           load_limits())
    assert res.decided and not res.passed and "rule Mann-Whitney" in res.detail


def test_undecidable_factor_check_fails_only_under_strict(tmp_path) -> None:
    (res,) = factor_checks(_cells([5.0]), _cells([1.0, 1.1]), load_limits())
    assert not res.decided and res.verdict == "UNDECIDED"
    (other,) = factor_checks(_cells([1.0, 1.1], "a"), _cells([1.0, 1.1], "b"), load_limits())
    assert not other.decided and "another machine" in other.detail


# ------------------------------------------------------------------------------ verdicts


@pytest.mark.parametrize("lo, hi, base, expected", [
    (1.70, 1.80, None, SUPPORTED),
    (1.70, 2.00, None, INCONCLUSIVE),  # hi == 2 is not below 2
    (1.90, 2.10, None, INCONCLUSIVE),
    (1.95, 2.10, None, REJECTED),  # lo == 2 - min_saving
    (1.70, 1.80, 1.80, INCONCLUSIVE),  # hi == baseline lo: not below it
    (1.70, 1.80, 1.79, INCONCLUSIVE),
    (1.80, 1.85, 1.80, REJECTED),  # lo >= baseline lo
    (np.nan, np.nan, None, NOT_MEASURED),
])
def test_verdict_below_at_each_boundary(lo, hi, base, expected) -> None:
    assert verdicts.verdict_below(lo, hi, 2.0, 0.05, base)[0] == expected


@pytest.mark.parametrize("lo, hi, expected", [
    (1.85, 2.15, SUPPORTED),  # exactly the band
    (1.84, 2.00, INCONCLUSIVE),
    (2.00, 2.16, INCONCLUSIVE),
    (2.16, 2.30, REJECTED),
    (1.50, 1.84, REJECTED),
])
def test_verdict_near_at_each_boundary(lo, hi, expected) -> None:
    assert verdicts.verdict_near(lo, hi, 2.0, 0.15)[0] == expected


@pytest.mark.parametrize("n_points, lo_m, flagged, quantity, expected", [
    (6, 1000, False, "seconds", SUPPORTED),
    (5, 1000, False, "work", INCONCLUSIVE),  # too few widths
    (6, 1001, False, "work", INCONCLUSIVE),  # under one decade
    (6, 1000, True, "seconds", INCONCLUSIVE),  # self-check flagged the timing
    (6, 1000, True, "work", SUPPORTED),  # counted work does not depend on it
])
def test_every_downgrade(n_points, lo_m, flagged, quantity, expected) -> None:
    scope = verdicts.Scope({}, {}, flagged, load_limits())
    row = pd.Series({"n_points": n_points, "fit_range": f"m={lo_m}..10000"})
    claim = verdicts.Claim("c", "< 2", verdict=SUPPORTED, reason="upper bound 1.8 < 2",
                           fits=(row,), quantity=quantity)
    out = verdicts.downgrade(claim, scope)
    assert out.verdict == expected
    if expected == INCONCLUSIVE:
        assert out.reason.startswith("downgraded from supported")


@pytest.mark.parametrize(("phase", "modes", "expected"), [
    ("backward", "scatter->fused", INCONCLUSIVE),  # block computed by the forward
    ("update", "fused", INCONCLUSIVE),
    ("forward", "scatter->fused", SUPPORTED),  # the forward keeps its own work
    ("backward", "rowdense->scatter", SUPPORTED),
])
def test_fused_widths_cannot_judge_backward_or_update_work(phase, modes, expected) -> None:
    scope = verdicts.Scope({}, {}, False, load_limits())
    row = pd.Series({"n_points": 9, "fit_range": "m=1024..16384", "phase": phase,
                     "update_resolved": modes})
    claim = verdicts.Claim("c", "< 2", verdict=SUPPORTED, reason="upper bound 1.5 < 2",
                           fits=(row,), quantity="work")
    out = verdicts.downgrade(claim, scope)
    assert out.verdict == expected
    if expected == INCONCLUSIVE:
        assert "fused" in out.reason and "forward computes" in out.reason


# ------------------------------------------------------------------------------ figures


def test_report_does_not_load_matplotlib() -> None:
    code = ("import sys, subquad.analysis.report, subquad.analysis.claims.catalog, "
            "subquad.analysis.check; print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def _switch_run(tmp_path: Path) -> Path:
    """A synthetic auto series that resolves rowdense below m = 1024 and scatter from it."""
    rows = []
    for method, options in (("subquad", "solver=cholesky;update=auto"),
                            ("dense-gn", "solver=cholesky;lr=1;damping=0")):
        for m in (256, 512, 1024, 2048, 4096):
            mode = ("rowdense" if m < 1024 else "scatter") if method == "subquad" else "dense"
            for phase, work in (("forward", m**1.7), ("fold", 0.0), ("iteration", m**1.7)):
                for sample in range(3):
                    rows.append({"cell": f"{method}{m}", "machine": "x", "method": method,
                                 "label": method, "options": options, "m": m, "n": 16,
                                 "d": 16, "L": 2, "c": 0.2, "phase": phase,
                                 "sample": sample, "update_resolved": mode, "work": work,
                                 "seconds": 1e-9 * (work if work else 1.0) * (1 + sample / 50)
                                 * (1 if method == "subquad" else m**0.4),
                                 "status": "ok", VERSION_COLUMN: SCHEMA_VERSION})
    pd.DataFrame(rows).to_csv(tmp_path / "runs.csv", index=False)
    fit_run(tmp_path, n_boot=50)
    return tmp_path


def test_figures_mark_the_switch_skip_idle_phases_and_label_crossover(tmp_path) -> None:
    from subquad.analysis import plots

    run = _switch_run(tmp_path)
    data = load_run(run)
    data.styles = plots._assign_styles(data)
    fig = plots.fig_local_slopes(data)
    labels = [t.get_text() for ax in fig.axes for t in (ax.get_legend().get_texts()
                                                          if ax.get_legend() else [])]
    assert any("update=auto switches rowdense -> scatter" in t and "512 and 1024" in t
               and "Q(beta) = 0.05" in t for t in labels)
    fig = plots.fig_phases_vs_m(data)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "forward" in legend and "fold" not in legend
    assert any(t.startswith("not drawn (no counted work):") and "fold" in t for t in legend)
    drawn = {tuple(np.round(line.get_ydata(), 12)) for ax in fig.axes for line in ax.lines}
    sub = data.runs[(data.runs["method"] == "subquad") & (data.runs["phase"] == "forward")]
    assert tuple(np.round(sub.groupby("m")["seconds"].median().to_numpy(), 12)) in drawn
    cx = RunDir(run).table("crossover")
    assert set(cx.loc[cx["quantity"] == "seconds", "kind"]) == {"below range"}
    fig = plots.fig_time_vs_m(data)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any(t.startswith("crossover m* below the measured range") for t in labels)
    report = write_report(run).read_text()
    assert "m* **below the measured range**" in report


def test_tables_declare_the_contract() -> None:
    runs = TABLES["runs"].columns
    for col in ("label", "solver", "update", "update_resolved", "rank_max", "lr", "damping",
                "forward_kernel", "forward_kernel_resolved", "sketch_size", "cg_tol",
                "threshold", "options"):
        assert col in runs
    assert set(TABLES) >= {"runs", "training", "fits", "local_slopes", "crossover",
                           "selfcheck", "claims", "dropped"}
    assert TABLES["claims"].columns == ["claim", "predicted", "measured", "interval",
                                        "verdict", "reason"]


def test_switch_legend_names_the_rule_of_each_mode() -> None:
    """The density split explains scatter/rowdense; the weight size explains fused."""
    from subquad.analysis.plots import _switch_rule

    assert _switch_rule("scatter") == "Q(beta) = 0.05"
    assert _switch_rule("fused") == "one W_l >= 64 MiB"
