"""Sweep harness: config validation, the tidy runs table, failures as status rows, SIGKILL + resume.

Configs are tiny copies of experiments/smoke.toml (m <= 256, few samples) so the file runs in
well under a minute on two cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from subquad import cli
from subquad.errors import ConfigError, SingularGramError
from subquad.harness.config import expand_cells, load_experiment
from subquad.harness.measure import classify
from subquad.harness.sweep import run_sweep
from subquad.results.cells import RUNS_COLUMNS, TRAINING_COLUMNS
from tests.experiment_text import DENSE_AND_SCATTER, grid

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("forward", "backward", "gram", "solve", "update", "fold")

TINY = ('\nname = "tiny"\ndtype = "float64"\n' + DENSE_AND_SCATTER + grid("64, 128")
        + "\n[calibration]\nenabled = true\n")


def write(tmp_path: Path, text: str, name: str = "exp.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def runs_of(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "runs.csv")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("tiny")
    return run_sweep(write(tmp, TINY), tmp / "out", progress=False)


def test_runs_table_contract(tiny_run: Path) -> None:
    runs = runs_of(tiny_run)
    assert list(runs.columns) == RUNS_COLUMNS
    assert set(runs["status"]) == {"ok"}
    assert runs["machine"].nunique() == 1
    # 2 widths x 2 methods + 2 calibration kernels x 2 widths
    assert runs["cell"].nunique() == 8
    trained = runs[runs["method"].isin(["dense-gn", "subquad"])]
    for cell, rows in trained.groupby("cell"):
        init = rows[rows["phase"] == "init"]
        assert len(init) == 1 and init["sample"].iloc[0] == 0, cell
        assert init["work"].iloc[0] == 2 * rows["m"].iloc[0] ** 2  # L m^2 weights drawn
        for _, s in rows[rows["phase"] != "init"].groupby("sample"):
            by = s.set_index("phase")
            assert set(by.index) == {*PHASES, "iteration"}
            for q in ("seconds", "work", "bytes"):
                assert by.loc["iteration", q] == pytest.approx(by.loc[list(PHASES), q].sum())
        assert rows[rows["phase"] != "init"]["sample"].nunique() == 2
    sub = trained[trained["method"] == "subquad"]
    assert set(sub["options"]) == {
        "solver=cholesky;update=scatter;rank_max=0;forward_kernel=auto;lr=1;damping=0"}
    dense = trained[trained["method"] == "dense-gn"]
    assert set(dense["options"]) == {"solver=cholesky;lr=1;damping=0"}
    cal = runs[runs["method"].str.startswith("calib")]
    assert set(cal["phase"]) == {"kernel"}
    gemv = cal[cal["method"] == "calib-gemv"]
    assert (gemv["work"] == gemv["m"] ** 2).all()


def test_environment_and_cell_files(tiny_run: Path) -> None:
    env = json.loads((tiny_run / "environment.json").read_text())
    for key in ("cpu_model", "cores", "memory_bytes", "blas", "numba", "omp_wait_policy", "gpu",
                "versions", "python", "platform", "git", "date_utc", "hostname", "machine"):
        assert key in env, key
    assert env["machine"] == runs_of(tiny_run)["machine"].iloc[0]
    assert env["hostname"] not in env["machine"]
    cells = sorted(p.stem for p in (tiny_run / "cells").glob("*.csv"))
    # a cell file is named by its id (the experiment's identity first); its rows by its base id
    ids = {c.cell_id: c.base_id
           for c in expand_cells(load_experiment(tiny_run / "experiment.toml"))}
    assert cells == sorted(ids)
    assert sorted(set(ids.values())) == sorted(runs_of(tiny_run)["cell"].unique())
    assert (tiny_run / "experiment.toml").is_file()


def test_cells_are_deterministic_with_stable_ids(tmp_path: Path) -> None:
    path = write(tmp_path, TINY)
    a = [c.cell_id for c in expand_cells(load_experiment(path))]
    b = [c.cell_id for c in expand_cells(load_experiment(path))]
    assert a == b and len(set(a)) == len(a)
    text = TINY.replace('values = [64, 128]', 'values = {start = 1024, stop = 16384, '
                        'ratio = "sqrt2"}')
    text = text.replace("[calibration]\nenabled = true", "")
    exp = load_experiment(write(tmp_path, text, "g.toml"))
    ms = sorted({c.m for c in expand_cells(exp)})
    assert ms == [1024, 1448, 2048, 2896, 4096, 5792, 8192, 11584, 16384]


def test_factorial_and_per_sweep_overrides(tmp_path: Path) -> None:
    text = TINY.replace("[calibration]\nenabled = true", "") + """
[[sweeps]]
axis = "n"
values = [2, 8]
m = 128
methods = ["dense-gn", {method = "subquad", update = "rowdense", label = "rowdense"}]

[factorial]
m = [64, 128]
n = [4, 8]
methods = ["subquad"]
"""
    cells = expand_cells(load_experiment(write(tmp_path, text)))
    key = {(c.label, c.m, c.n) for c in cells}
    assert ("dense-gn", 128, 2) in key and ("rowdense", 128, 8) in key
    assert {("subquad", m, n) for m in (64, 128) for n in (4, 8)} <= key
    assert len(cells) == len(key) == 4 + 4 + 2  # m sweep, n sweep, factorial's new (m, 8)
    rowdense = [c for c in cells if c.label == "rowdense"]
    assert all(dict(c.options)["update"] == "rowdense" for c in rowdense)


def test_training_rows(tmp_path: Path) -> None:
    text = TINY.replace('values = [64, 128]', 'values = [64]').replace(
        "[calibration]\nenabled = true", "[training]\niterations = 3")
    out = run_sweep(write(tmp_path, text), tmp_path / "out", progress=False)
    tr = pd.read_csv(out / "training.csv")
    assert list(tr.columns) == TRAINING_COLUMNS
    for _, rows in tr.groupby("cell"):
        assert len(rows) == 4 * 3  # iterations 0..3, layers 0..L
        first = rows[rows["iteration"] == 0]
        assert (first["flips"] == 0).all()
        loss = rows.groupby("iteration")["loss"].first()
        assert loss.iloc[-1] < loss.iloc[0]


# ------------------------------------------------------------------------------- failures


def test_failing_cell_is_recorded_and_sweep_goes_on(tmp_path: Path, monkeypatch) -> None:
    import subquad.model.train as train

    real = train.build_trainer

    def flaky(cfg, *a, **kw):
        if cfg.m == 128 and cfg.method == "dense-gn":
            raise RuntimeError("boom at m=128")
        if cfg.m == 64 and cfg.method == "subquad":
            raise SingularGramError("K is singular")
        return real(cfg, *a, **kw)

    monkeypatch.setattr(train, "build_trainer", flaky)
    text = TINY.replace("[calibration]\nenabled = true", "")
    out = run_sweep(write(tmp_path, text), tmp_path / "out", progress=False)
    runs = runs_of(out)
    st = runs.groupby(["method", "m"])["status"].agg(set)
    assert st[("dense-gn", 128)] == {"error"}
    assert st[("subquad", 64)] == {"singular"}
    assert st[("dense-gn", 64)] == {"ok"} and st[("subquad", 128)] == {"ok"}
    msg = runs[(runs["method"] == "dense-gn") & (runs["m"] == 128)]["message"].iloc[0]
    assert "boom at m=128" in msg


def test_classify() -> None:
    from subquad.errors import ConvergenceError, DivergenceError
    from subquad.harness.measure import Censored

    assert classify(DivergenceError("x")) == "nan"
    assert classify(ConvergenceError("x")) == "cg-not-converged"
    assert classify(SingularGramError("x")) == "singular"
    assert classify(np.linalg.LinAlgError("x")) == "singular"
    assert classify(MemoryError()) == "oom"
    assert classify(Censored("x")) == "censored"
    assert classify(ValueError("x")) == "error"


def test_cell_budget_censors_and_stops_the_axis(tmp_path: Path) -> None:
    text = TINY.replace("values = [64, 128]", "values = [64, 96, 128]").replace(
        "cell_budget_seconds = 60", "cell_budget_seconds = 1e-6").replace(
        "[calibration]\nenabled = true", "")
    out = run_sweep(write(tmp_path, text), tmp_path / "out", progress=False)
    runs = runs_of(out)
    assert set(runs["status"]) == {"censored"}
    assert runs["cell"].nunique() == 6  # nothing dropped
    first = runs[runs["m"] == 64]
    assert (first["phase"] == "init").any()  # what it measured is kept
    later = runs[runs["m"] > 64]
    assert later["message"].str.startswith("axis stopped").all()
    assert later["seconds"].isna().all()


def test_sweep_budget_then_resume(tmp_path: Path) -> None:
    text = TINY.replace("[calibration]\nenabled = true", "")
    path = write(tmp_path, text)
    out = run_sweep(path, tmp_path / "out", budget=1e-9, progress=False)
    runs = runs_of(out)
    assert set(runs["status"]) == {"censored"}
    assert runs["message"].str.startswith("sweep budget").all()
    run_sweep(path, out, resume=True, progress=False)
    runs = runs_of(out)
    assert set(runs["status"]) == {"ok"} and runs["cell"].nunique() == 4


# ------------------------------------------------------------------------------- bad configs

BAD = {
    "unknown top key": ("[fixed]", "colour = 1\n[fixed]", "colour"),
    "unknown fixed key": ("[fixed]\n", "[fixed]\nwidth = 3\n", "fixed.width"),
    "unknown timing key": ("[timing]\n", "[timing]\nrepeats = 3\n", "timing.repeats"),
    "m zero": ("values = [64, 128]", "values = [0, 128]", "sweeps[0].values[0]"),
    "m not an integer": ("values = [64, 128]", "values = [64.5, 128]", "sweeps[0].values[0]"),
    "ratio": ("values = [64, 128]", "values = {start = 64, stop = 256, ratio = 3}",
              "sweeps[0].values.ratio"),
    "c out of range": ("seed = 0\n", "seed = 0\nc = 0.7\n", "fixed.c"),
    "c sweep out of range": ('axis = "m"\nvalues = [64, 128]', 'axis = "c"\nvalues = [0.2, 0.6]',
                             "sweeps[0].values[1]"),
    "n > m": ("n = 4", "n = 100", "n: must not exceed"),
    "n > m on the n axis": ('axis = "m"\nvalues = [64, 128]',
                           'axis = "n"\nvalues = [4, 200]\nm = 128', "n: must not exceed"),
    "unknown method": ('method = "dense-gn"', 'method = "dense-lbfgs"', "methods[0].method"),
    "unknown option": ('update = "scatter"', 'update = "scatter"\nwobble = 1', "methods[1].wobble"),
    "bad option value": ('update = "scatter"', 'update = "sideways"', "update"),
    "unknown axis": ('axis = "m"', 'axis = "width"', "sweeps[0].axis"),
    "warmup zero": ("warmup = 1", "warmup = 0", "timing.warmup"),
    "digits needs d = 64": ("seed = 0\n", 'seed = 0\ndata = "digits"\n', "d: digits"),
    "unknown method label": ('axis = "m"', 'axis = "m"\nmethods = ["dense-gm"]',
                             "sweeps[0].methods[0]"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_config_rejected_before_anything_runs(tmp_path: Path, case: str) -> None:
    old, new, needle = BAD[case]
    assert old in TINY
    path = write(tmp_path, TINY.replace(old, new, 1))
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as err:
        run_sweep(path, out, progress=False)
    assert str(path) in str(err.value) and needle in str(err.value)
    assert not out.exists()


def test_digits_sample_count_checked(tmp_path: Path) -> None:
    text = TINY.replace("values = [64, 128]", "values = [512]").replace(
        "n = 4\nd = 8", 'n = 400\nd = 64\ndata = "digits"')
    with pytest.raises(ConfigError, match="digits.*n must be in"):
        load_experiment(write(tmp_path, text))


def test_missing_methods_rejected(tmp_path: Path) -> None:
    text = TINY.split("[fixed]")[1]
    path = write(tmp_path, 'name = "x"\n[fixed]' + text)
    with pytest.raises(ConfigError, match="methods.*missing"):
        load_experiment(path)


def test_cli_bad_config_exits_2(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, TINY.replace("n = 4", "n = 4\nbogus = 1"))
    assert cli.main(["sweep", str(path), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "fixed.bogus" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------- SIGKILL


def test_sigkill_then_resume_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    text = TINY.replace("values = [64, 128]", "values = [64, 96, 128, 192, 256]").replace(
        "min_sample_seconds = 0", "min_sample_seconds = 0.1").replace(
        "[calibration]\nenabled = true", "")
    path = write(tmp_path, text)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "subquad", "sweep", str(path), "--out",
                             str(out), "--quiet"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and proc.poll() is None:
            if list((out / "cells").glob("*.csv")):
                break
            time.sleep(0.02)
        # every later moment is a valid kill point (between cells, inside one, while a file
        # is being written): the assertions below hold for each, so no sleep picks one; ten
        # cells of >= 0.5 s each leave the sweep running when the first file appears
        assert proc.poll() is None, "sweep finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    before = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.csv")}
    assert 1 <= len(before) < 10
    assert cli.main(["sweep", str(path), "--out", str(out), "--resume", "--quiet"]) == 0
    after = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.csv")}
    assert all(after[k] == v for k, v in before.items())  # finished cells were not re-run
    runs = runs_of(out)
    assert runs["cell"].nunique() == 10 and set(runs["status"]) == {"ok"}
    assert not runs.duplicated(["cell", "sample", "phase"]).any()
    assert not list((out / "cells").glob("*.tmp"))
    # a second merge is idempotent
    assert cli.main(["sweep", "--merge", str(out)]) == 0
    pd.testing.assert_frame_equal(runs, runs_of(out))


def test_fit_table_in_experiment_sets_fit_window(tmp_path):
    from subquad.harness.config import fit_options

    assert fit_options({"fit": {"min_m": 1024}}) == {"min_axis": {"m": 1024}}
    assert fit_options({"fit": {"window": "auto"}}) == {"window": "auto"}
    with pytest.raises(ConfigError, match="fit.min_m"):
        fit_options({"fit": {"min_m": 0}})
    with pytest.raises(ConfigError, match="fit"):
        fit_options({"fit": {"windw": "auto"}})


def test_sqrt2_grid_includes_a_printed_stop():
    from subquad.harness.config import Where, geometric

    w = Where(Path("grid.toml"))
    grid = geometric(w, "m", {"start": 1024, "stop": 23168, "ratio": "sqrt2"}, "values")
    assert grid[-1] == 23168 and grid[:3] == [1024, 1448, 2048]


def test_rounds_spread_a_cells_samples_over_the_run(tmp_path):
    cfg = write(tmp_path, TINY.replace("samples = 2", "samples = 4\nrounds = 2"))
    exp = load_experiment(cfg)
    cells = expand_cells(exp)
    half = len(cells) // 2
    assert [c.base_id for c in cells[:half]] == [c.base_id for c in cells[half:]]
    assert len({c.cell_id for c in cells}) == len(cells)  # one file per (cell, round)
    out = run_sweep(cfg, tmp_path / "out", progress=False)
    runs = runs_of(out)
    it = runs[(runs["phase"] == "iteration") & (runs["status"] == "ok")]
    samples = it.groupby("cell")["sample"].apply(sorted)
    assert len(samples) == 4 and all(list(v) == [0, 1, 2, 3] for v in samples)
    assert not runs.duplicated(["cell", "sample", "phase"]).any()
    with pytest.raises(ConfigError, match="timing.rounds"):
        load_experiment(write(tmp_path, TINY.replace("samples = 2", "samples = 2\nrounds = 3"),
                              "bad.toml"))
