"""The fitter recovers known exponents, crossovers and calibration flags from synthetic runs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from subquad.analysis.fit import (
    FitOptions,
    crossover,
    fit_exponents,
    fit_run,
    fit_slope,
    local_slopes,
    read_benchmark_json,
    selfcheck,
)
from subquad.errors import ConfigError
from subquad.results.schema import SCHEMA_VERSION, TABLES, VERSION_COLUMN

FITS_COLUMNS, LOCAL_SLOPE_COLUMNS, CROSSOVER_COLUMNS, SELFCHECK_COLUMNS = (
    [*TABLES[n].columns, VERSION_COLUMN] for n in ("fits", "local_slopes", "crossover",
                                                   "selfcheck"))

GRID = np.round(1000 * 10 ** (np.arange(7) * 0.2))  # 7 geometric points over 1.2 decades
SIGMA = 0.05  # lognormal timing noise per sample


def synth(
    k: float,
    *,
    C: float = 1e-9,
    seed: int = 0,
    method: str = "subquad",
    machine: str = "host-a",
    phase: str = "iteration",
    ms: np.ndarray = GRID,
    samples: int = 5,
    sigma: float = SIGMA,
    t0: float = 0.0,
    n: int = 16,
    d: int = 16,
) -> pd.DataFrame:
    """A runs.csv-shaped frame with seconds = (t0 + C m^k) * lognormal noise, work = 3 m^k."""
    rng = np.random.default_rng(seed)
    m = np.repeat(np.asarray(ms, dtype=float), samples)
    return pd.DataFrame(
        {
            "machine": machine, "method": method, "phase": phase, "backend": "numpy",
            "dtype": "float64", "m": m, "n": n, "d": d, "L": 2, "c": 0.2, "seed": 0,
            "sample": np.tile(np.arange(samples), len(ms)),
            "seconds": (t0 + C * m**k) * np.exp(rng.normal(0.0, sigma, m.size)),
            "work": 3.0 * m**k, "bytes": 8.0 * m**k, "status": "ok",
            "cell": [f"{method}-{machine}-{n}-{d}-{v:g}" for v in m],
            VERSION_COLUMN: SCHEMA_VERSION,
        }
    )  # fmt: skip


def one(df: pd.DataFrame, **where) -> pd.Series:
    """The single row of ``df`` matching ``where``."""
    mask = np.ones(len(df), dtype=bool)
    for col, val in where.items():
        mask &= df[col] == val
    assert mask.sum() == 1, f"{mask.sum()} rows match {where}"
    return df[mask].iloc[0]


def slope_row(df: pd.DataFrame, quantity: str = "seconds", **where) -> pd.Series:
    """The m-axis slope fit of one quantity."""
    return one(fit_exponents(df), fit="slope", axis="m", quantity=quantity, **where)


# ------------------------------------------------------------------------------- exponents


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("k", [1.0, 1.76, 2.0])
def test_recovers_exponent_with_interval(k, seed):
    row = slope_row(synth(k, seed=seed))
    assert abs(row["exponent"] - k) <= 0.05
    assert row["ci_low"] <= k <= row["ci_high"]
    for wrong in (k - 0.15, k + 0.15):
        assert not row["ci_low"] <= wrong <= row["ci_high"]
    assert row["n_points"] == 7 and row["fit_range"] == "m=1000..15849"
    assert row["context"] == "n=16;d=16;L=2;c=0.2" and row["window"] == "all"


def test_interval_coverage_rate():
    # 95% intervals: over 40 seeded data sets the true exponent is covered at least 34 times
    covered = 0
    for seed in range(40):
        rng = np.random.default_rng(1000 + seed)
        samples = [1e-9 * m**1.76 * np.exp(rng.normal(0, SIGMA, 5)) for m in GRID]
        fit = fit_slope(GRID, samples, n_boot=500, seed=seed)
        covered += fit.ci_low <= 1.76 <= fit.ci_high
    assert covered >= 34


def test_deterministic_counts_collapse_interval():
    row = slope_row(synth(1.76), quantity="work")
    assert row["ci_low"] == row["exponent"] == row["ci_high"]
    assert row["exponent"] == pytest.approx(1.76, abs=1e-12)
    assert row["intercept"] == pytest.approx(np.log(3.0), abs=1e-9)


def test_bootstrap_is_seeded_and_seed_matters():
    df = synth(2.0, seed=5)
    a, b = slope_row(df), one(fit_exponents(df, seed=1), fit="slope", quantity="seconds")
    assert a["ci_low"] == slope_row(df)["ci_low"]
    assert a["exponent"] == b["exponent"] and a["ci_low"] != b["ci_low"]


def test_only_ok_rows_and_three_points_are_fitted():
    df = synth(1.0)
    bad = df.iloc[:5].assign(seconds=1e3, status="censored")
    assert slope_row(pd.concat([df, bad]))["exponent"] == pytest.approx(slope_row(df)["exponent"])
    two = synth(1.0, ms=GRID[:2])
    assert fit_exponents(two).empty
    assert len(fit_exponents(synth(1.0, ms=GRID[:3]))) == 3  # seconds, work, bytes


def test_machines_are_never_pooled():
    df = pd.concat([synth(1.76, machine="a", seed=1), synth(2.0, machine="b", C=1e-8, seed=2)])
    fits = fit_exponents(df)
    fits = fits[(fits["quantity"] == "seconds") & (fits["fit"] == "slope")]
    assert sorted(fits["machine"]) == ["a", "b"]
    assert one(fits, machine="a")["exponent"] == pytest.approx(1.76, abs=0.05)
    assert one(fits, machine="b")["exponent"] == pytest.approx(2.0, abs=0.05)


def test_other_axes_and_contexts_are_separate_series():
    rows = [synth(1.0, n=n, ms=[4096.0], seed=n) for n in (8, 16, 32, 64)]
    df = pd.concat(rows + [synth(1.76, n=32, seed=9)])
    fits = fit_exponents(df)
    n_fit = one(fits, fit="slope", axis="n", quantity="work")
    assert n_fit["context"] == "m=4096;d=16;L=2;c=0.2" and n_fit["exponent"] == pytest.approx(0)
    m_fits = fits[(fits["axis"] == "m") & (fits["quantity"] == "work") & (fits["fit"] == "slope")]
    assert list(m_fits["context"]) == ["n=32;d=16;L=2;c=0.2"]


def test_auto_window_drops_overhead_points():
    df = synth(2.0, t0=5e-3, sigma=0.0)
    plain = slope_row(df)
    auto = one(fit_exponents(df, window="auto"), fit="slope", quantity="seconds", axis="m")
    assert plain["exponent"] < 1.7 and plain["window"] == "all"
    assert auto["window"] == "auto" and auto["n_points"] < 7
    assert auto["exponent"] > plain["exponent"] + 0.15
    assert auto["fit_range"].endswith("..15849") and not auto["fit_range"].startswith("m=1000.")
    clean = one(fit_exponents(synth(2.0, sigma=0.0), window="auto"), fit="slope",
                quantity="seconds")
    assert clean["n_points"] == 7  # a pure power law keeps every point


def test_min_axis_window():
    row = one(fit_exponents(synth(1.0), min_axis={"m": 2500}), quantity="work", axis="m")
    assert row["fit_range"] == "m=2512..15849" and row["window"] == "min" and row["n_points"] == 5


# ------------------------------------------------------------------------------- joint fit


def factorial(a: float, b: float, e: float, seed: int) -> pd.DataFrame:
    """A 3 x 3 x 2 factorial in (m, n, d) with t = 1e-10 m^a n^b d^e."""
    rng = np.random.default_rng(seed)
    cells = [(m, n, d) for m in (1000, 2000, 4000) for n in (8, 16, 32) for d in (16, 64)]
    frames = [
        synth(a, C=1e-10 * n**b * d**e, ms=[m], n=n, d=d, seed=int(rng.integers(1 << 30)))
        for m, n, d in cells
    ]
    return pd.concat(frames, ignore_index=True)


@pytest.mark.parametrize("seed", [0, 2])  # intervals cover in ~98% of seeds (measured over 150)
def test_joint_fit_recovers_each_exponent(seed):
    truth = {"m": 1.76, "n": 1.0, "d": 0.5}
    fits = fit_exponents(factorial(truth["m"], truth["n"], truth["d"], seed))
    joint = fits[(fits["fit"] == "joint") & (fits["quantity"] == "seconds")]
    assert sorted(joint["axis"]) == ["d", "m", "n"]
    for axis, k in truth.items():
        row = one(joint, axis=axis)
        assert abs(row["exponent"] - k) <= 0.05 and row["ci_low"] <= k <= row["ci_high"]
        assert not row["ci_low"] <= k + 0.2 <= row["ci_high"]
        assert row["n_points"] == 18 and row["context"] == "L=2;c=0.2"
    assert one(fits, fit="joint", quantity="work", axis="n")["exponent"] == pytest.approx(0.0)


def test_single_axis_sweep_has_no_joint_fit():
    kinds = set(fit_exponents(synth(1.0))["fit"])
    assert "joint" not in kinds and "slope" in kinds
    assert kinds <= {"slope", "segment-1", "segment-2"}  # no cache sizes: no regime fit


# ---------------------------------------------------------------------------- local slopes


def test_local_slopes_show_a_kink():
    # t ~ m below 4000 and ~ m^2 above (continuous at 3981)
    kink = GRID[3]
    df = synth(1.0, sigma=SIGMA)
    df["seconds"] *= np.maximum(1.0, df["m"] / kink)
    df["work"] *= np.maximum(1.0, df["m"] / kink)
    loc = local_slopes(df)
    assert list(loc.columns) == LOCAL_SLOPE_COLUMNS
    work = loc[loc["quantity"] == "work"]
    assert np.allclose(work["slope"], [1, 1, 1, 2, 2, 2])
    assert (work["ci_low"] == work["slope"]).all()
    secs = loc[loc["quantity"] == "seconds"].reset_index()
    assert list(secs["x_lo"]) == list(GRID[:-1]) and list(secs["x_hi"]) == list(GRID[1:])
    assert secs.loc[:2, "ci_high"].max() < 1.5 and secs.loc[3:, "ci_low"].min() > 1.5


# ------------------------------------------------------------------------------- crossover


def pair(k_sub: float, c_sub: float, k_dense: float = 2.0, c_dense: float = 1e-9, seed=0):
    """A subquad series and a dense-gn series of the same machine and context."""
    sub = synth(k_sub, C=c_sub, seed=seed).assign(
        method="subquad", options="solver=cg;update=lazy;rank_max=64"
    )
    return pd.concat([sub, synth(k_dense, C=c_dense, method="dense-gn", seed=seed + 100)])


def crossing(df: pd.DataFrame, quantity: str = "seconds") -> pd.Series:
    """The one crossover row of a quantity."""
    return one(crossover(df), quantity=quantity)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crossover_interpolated_within_interval(seed):
    m_star = 4000.0
    c_sub = 1e-9 * m_star**0.24  # equal times at m*
    row = crossing(pair(1.76, c_sub, seed=seed))
    assert row["kind"] == "interpolated"
    assert row["ci_low"] <= m_star <= row["ci_high"]
    assert abs(np.log(row["m_star"] / m_star)) < 0.3
    speedup = (GRID[-1] / m_star) ** 0.24
    assert row["speedup_ci_low"] <= speedup <= row["speedup_ci_high"]
    assert row["max_m"] == GRID[-1] and row["options"].startswith("solver=cg")


def test_crossover_of_counts_is_exact():
    df = pair(1.76, 1e-9 * 4000.0**0.24)
    df.loc[df["method"] == "subquad", "work"] *= 4000.0**0.24  # work m* = 4000 as well
    row = crossing(df, "work")
    assert row["kind"] == "interpolated" and row["m_star"] == pytest.approx(4000.0, rel=1e-9)
    assert row["ci_low"] == row["ci_high"] == row["m_star"]


def test_crossover_below_range():
    row = crossing(pair(1.76, 1e-9 * 500.0**0.24))
    assert row["kind"] == "below range" and row["m_star"] == GRID[0]
    assert row["speedup_at_max_m"] > 1


def test_crossover_beyond_range_is_extrapolated():
    m_star = 1e5
    row = crossing(pair(1.76, 1e-9 * m_star**0.24))
    assert row["kind"] == "extrapolated"
    assert row["ci_low"] <= m_star <= row["ci_high"] and row["m_star"] > GRID[-1]
    assert abs(np.log(row["m_star"] / m_star)) < np.log(2)
    assert row["speedup_at_max_m"] < 1


def test_crossover_none_in_range_when_exponents_agree():
    row = crossing(pair(2.0, 2e-9))
    assert row["kind"] == "none in range" and np.isnan(row["m_star"])
    assert row["speedup_ci_low"] <= 0.5 <= row["speedup_ci_high"]


def test_crossover_pairs_only_the_same_machine_and_context():
    df = pair(1.76, 1e-9 * 4000.0**0.24)
    other = synth(2.0, method="dense-gn", machine="host-b")
    other_n = synth(2.0, method="dense-gn", n=64)
    out = crossover(pd.concat([df, other, other_n]))
    assert list(out.columns) == CROSSOVER_COLUMNS
    assert len(out) == 2 and set(out["quantity"]) == {"seconds", "work"}


# ------------------------------------------------------------------------------ self-check


def calibration(k_gemv: float) -> pd.DataFrame:
    """Calibration kernels: axpy with exponent 1, gemv with exponent ``k_gemv``."""
    return pd.concat(
        [
            synth(1.0, method="calib-axpy", phase="kernel", seed=11),
            synth(k_gemv, method="calib-gemv", phase="kernel", seed=12),
        ]
    )


def test_selfcheck_trustworthy_when_kernels_match():
    check = selfcheck(calibration(2.0))
    assert list(check.columns) == SELFCHECK_COLUMNS
    assert sorted(check["kernel"]) == ["calib-axpy", "calib-gemv"]
    assert check["ok"].all() and check["trustworthy"].all()
    assert one(check, kernel="calib-gemv")["expected"] == 2.0


@pytest.mark.parametrize("k_gemv", [1.7, 2.25])
def test_selfcheck_flags_an_exponent_off_by_more_than_tolerance(k_gemv):
    check = selfcheck(calibration(k_gemv))
    assert not one(check, kernel="calib-gemv")["ok"] and one(check, kernel="calib-axpy")["ok"]
    assert (~check["trustworthy"]).all()


def test_selfcheck_not_run():
    check = selfcheck(synth(1.0))
    assert list(check["kernel"]) == ["not run"] and check["trustworthy"].isna().all()


# ------------------------------------------------------------------------- files and input


def test_fit_run_writes_tables_and_prints_nothing(tmp_path, capsys):
    runs = pd.concat([pair(1.76, 1e-9 * 4000.0**0.24), calibration(2.0)])
    runs.to_csv(tmp_path / "runs.csv", index=False)
    paths = fit_run(tmp_path, n_boot=200)
    assert capsys.readouterr() == ("", "")
    assert set(paths) == {"fits", "local_slopes", "crossover", "selfcheck", "dropped"}
    assert paths.dropped == {}
    assert paths["fits"] == tmp_path / "fits.csv" and paths.trustworthy is True
    fits = pd.read_csv(paths["fits"], keep_default_na=False)
    assert list(fits.columns) == FITS_COLUMNS
    assert set(fits["method"]) == {"subquad", "dense-gn", "calib-axpy", "calib-gemv"}
    cross = pd.read_csv(paths["crossover"])
    assert one(cross, quantity="seconds")["kind"] == "interpolated"
    assert one(cross, quantity="work")["kind"] == "below range"  # work 3 m^k on both sides


def test_fit_run_untrustworthy_and_missing_input(tmp_path):
    calibration(1.5).to_csv(tmp_path / "runs.csv", index=False)
    assert fit_run(tmp_path, n_boot=50).trustworthy is False
    with pytest.raises(ConfigError, match="run_dir"):
        fit_run(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="runs"):
        fit_run(tmp_path / "empty")


@pytest.mark.parametrize(
    "bad", [{"confidence": 1.0}, {"n_boot": 0}, {"window": "offset"}, {"min_axis": {"L": 2}}]
)
def test_bad_options_are_config_errors(bad):
    with pytest.raises(ConfigError):
        FitOptions(**bad)


def benchmark_doc(rng: np.random.Generator) -> dict:
    """A small pytest-benchmark document: gemv with raw rounds, axpy with only a median."""
    benches = [
        {"name": f"test_gemv[{m}]", "fullname": f"t.py::test_gemv[{m}]",
         "extra_info": {"kernel": "calib-gemv", "m": m, "dtype": "float32"},
         "stats": {"data": list(1e-9 * m**2 * np.exp(rng.normal(0, 0.02, 4))), "iterations": 3,
                   "median": 1e-9 * m**2}}
        for m in (256, 512, 1024, 2048)
    ] + [
        {"name": f"test_axpy[{m}]", "extra_info": {"kernel": "calib-axpy", "m": m, "n": 1},
         "stats": {"median": 1e-9 * m}}
        for m in (256, 512, 1024, 2048)
    ]  # fmt: skip
    info = {"cpu": {"brand_raw": "Test CPU", "count": 2}, "machine": "x86_64", "node": "box"}
    return {"machine_info": info, "benchmarks": benches, "version": "4.0.0"}


def test_read_benchmark_json(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(benchmark_doc(np.random.default_rng(0))))
    runs = read_benchmark_json(path).frame
    assert len(runs) == 4 * 4 + 4
    assert (runs["phase"] == "kernel").all() and (runs["status"] == "ok").all()
    assert runs["machine"].nunique() == 1 and runs["machine"].iloc[0].startswith("bench-")
    gemv = runs[runs["method"] == "calib-gemv"]
    assert (gemv["dtype"] == "float32").all() and (gemv["iters"] == 3).all()
    axpy = runs[runs["method"] == "calib-axpy"]
    assert (axpy["dtype"] == "float64").all() and (axpy["backend"] == "numpy").all()
    assert list(axpy["seconds"]) == pytest.approx([1e-9 * m for m in (256, 512, 1024, 2048)])
    assert axpy["d"].isna().all() and (axpy["n"] == 1).all()


def test_fit_run_on_benchmark_json(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(benchmark_doc(np.random.default_rng(1))))
    paths = fit_run(path, n_boot=100)
    assert paths["selfcheck"] == tmp_path / "bench-selfcheck.csv" and paths.trustworthy is True
    check = pd.read_csv(paths["selfcheck"])
    assert one(check, kernel="calib-axpy")["exponent"] == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="benchmark"):
        bad = tmp_path / "bad.json"
        bad.write_text("{}")
        read_benchmark_json(bad)


# --------------------------------------------------------------------------------- helpers


def test_fit_slope_validates_and_recovers_a_long_series():
    rng = np.random.default_rng(3)
    x = np.geomspace(100, 1e5, 300)
    samples = [1e-9 * v**1.5 * np.exp(rng.normal(0, SIGMA, 5)) for v in x]
    fit = fit_slope(x, samples, n_boot=1000)
    assert fit.ci_low <= 1.5 <= fit.ci_high and fit.ci_high - fit.ci_low < 0.02
    with pytest.raises(ConfigError, match="samples"):
        fit_slope([1, 2, 3], [[1.0], [], [3.0]])
    with pytest.raises(ConfigError, match="x"):
        fit_slope([3, 2, 1], [[1.0], [2.0], [3.0]])


def test_single_sample_points_get_a_residual_interval():
    import pandas as pd

    from subquad.analysis.fit import fit_exponents

    rng = np.random.default_rng(0)
    m = np.array([1024, 1448, 2048, 2896, 4096, 5792, 8192])
    t = 1e-9 * m**2.0 * np.exp(0.05 * rng.standard_normal(m.size))
    runs = pd.DataFrame({"machine": "x", "method": "dense-gn", "options": "", "backend": "numpy",
                         "dtype": "float32", "threshold": "adaptive", "data": "synthetic",
                         "m": m, "n": 16, "d": 16, "L": 2, "c": 0.2, "seed": 0, "sample": 0,
                         "phase": "init", "seconds": t, "work": m * m, "bytes": m * m,
                         "status": "ok", "cell": [f"c{i}" for i in range(m.size)],
                         "label": "dense-gn"})
    fits = fit_exponents(runs)
    sec = fits[(fits["quantity"] == "seconds") & (fits["fit"] == "slope")].iloc[0]
    assert sec["ci_low"] < sec["exponent"] < sec["ci_high"]  # one sample per cell: not a point
    assert sec["ci_low"] < 2.0 < sec["ci_high"]
    work = fits[(fits["quantity"] == "work") & (fits["fit"] == "slope")].iloc[0]
    assert work["ci_high"] - work["ci_low"] < 1e-9  # exact counts: no spread
