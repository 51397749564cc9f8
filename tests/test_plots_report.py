"""Figures and the Markdown report of a small synthetic run directory.

The synthetic run has dense-gn ~ m^2 and subquad ~ m^1.76 per iteration, init ~ m^2 for both,
calibration kernels, n and d sweeps, a c sweep, an ablation of subquad's options and training
curves, written in the current results schema; fits come from ``analysis.fit.fit_run``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import ndtr

from subquad.analysis.fit import fit_run
from subquad.analysis.plots import FIGURES, plot_run
from subquad.analysis.report import write_report
from subquad.errors import ConfigError
from subquad.results.schema import SCHEMA_VERSION, VERSION_COLUMN

MACHINE = "synthetic-box"
SUB = ";forward_kernel=auto;lr=1;damping=0"
DEFAULT = "solver=cholesky;update=scatter;rank_max=0" + SUB
ABLATION = ("solver=cholesky;update=rowdense;rank_max=0" + SUB,
            "solver=cholesky;update=lazy;rank_max=32" + SUB,
            "solver=pcg-tensorsketch;update=scatter;rank_max=0" + SUB)
DENSE = {"dense-gn": "solver=cholesky;lr=1;damping=0",
         "dense-gd": "solver=gradient;lr=0.001;damping=0"}
M_GRID = tuple(2**k for k in range(10, 16))
SAMPLES = 6
#: seconds per counted multiply-add relative to BLAS: sparse gathers are far slower per flop
SLOWER = {"dense-gn": 1.0, "dense-gd": 1.0, "subquad": 80.0}


def _active(m: float, c: float) -> float:
    """s = m Q(sqrt(2 c ln m))."""
    return m * float(ndtr(-np.sqrt(2 * c * np.log(m))))


def _phase_work(method: str, options: str, m: int, n: int, L: int, c: float,
                sub_power: float | None) -> dict[str, float]:
    """Counted multiply-adds per phase of one iteration (ALGORITHM.md section 5)."""
    if method.startswith("dense"):
        w = {"forward": L * n * m**2, "backward": L * n * m**2, "gram": L * n**2 * m,
             "solve": n**3 if method == "dense-gn" else 0, "update": L * n * m**2, "fold": 0}
        return w
    s = _active(m, c) if sub_power is None else m ** (sub_power - 1.0)
    w = {"forward": L * n * m * s, "backward": L * n * s**2, "gram": L * n**2 * s,
         "solve": n**3, "update": L * n * s**2, "fold": 0}
    if "lazy" in options:
        w["update"] = 2 * L * n * m
        w["fold"] = 2 * L * n * m**2 / 32
    return w


def _rows(method: str, options: str, m: int, n: int, d: int, c: float, rng, scale: float,
          sub_power: float | None, experiment: str) -> list[dict]:
    """Init row and per-sample phase rows of one cell, seconds ~ work with noise."""
    L = 2
    opts = dict(p.split("=") for p in options.split(";")) if options else {}
    base = {"experiment": experiment, "cell": f"{method}|{options}|{m}|{n}|{d}|{c}",
            "machine": MACHINE, "method": method, "backend": "numpy", "dtype": "float64",
            "m": m, "n": n, "d": d, "L": L, "c": c, "threshold": "adaptive",
            "data": "synthetic", "solver": opts.get("solver", ""),
            "update": opts.get("update", ""), "rank_max": opts.get("rank_max", ""),
            "update_resolved": opts.get("update", "dense"), "label": method,
            "options": options, "seed": 0, "iters": 3, "status": "ok", "message": "",
            VERSION_COLUMN: SCHEMA_VERSION}
    work = _phase_work(method, options, m, n, L, c, sub_power)
    init_work = L * m**2 + m * d
    rows = [base | {"sample": 0, "phase": "init", "seconds": 4e-9 * init_work + 1e-4,
                    "work": init_work, "bytes": 8 * init_work}]
    for sample in range(SAMPLES):
        sec = {p: scale * 1e-9 * w * rng.lognormal(0, 0.05) + (2e-5 if w else 0.0)
               for p, w in work.items()}
        for phase, w in work.items():
            rows.append(base | {"sample": sample, "phase": phase, "seconds": sec[phase],
                                "work": w, "bytes": 8 * w / n})
        rows.append(base | {"sample": sample, "phase": "iteration",
                            "seconds": sum(sec.values()), "work": sum(work.values()),
                            "bytes": 8 * sum(work.values()) / n, "active_fraction": 0.05,
                            "loss": 1e-3,
                            "cg_iters": 4.0 if "pcg" in options else np.nan})
    return rows


def _calibration(rng, experiment: str) -> list[dict]:
    """calib-axpy ~ m and calib-gemv ~ m^2 on the m grid."""
    rows = []
    for method, power in (("calib-axpy", 1), ("calib-gemv", 2)):
        for m in M_GRID:
            for sample in range(SAMPLES):
                rows.append({"experiment": experiment, "cell": f"{method}|{m}",
                             "machine": MACHINE, "method": method, "backend": "numpy",
                             "dtype": "float64", "m": m, "n": 16, "d": 16, "L": 2, "c": 0.2,
                             "threshold": "adaptive", "data": "synthetic", "options": "",
                             "seed": 0, "sample": sample, "iters": 10, "phase": "kernel",
                             "seconds": 1e-9 * m**power * rng.lognormal(0, 0.03),
                             "work": m**power, "bytes": 8 * m**power, "status": "ok",
                             "message": "", "label": method,
                             VERSION_COLUMN: SCHEMA_VERSION})
    return rows


def _training(sub_power: float | None) -> pd.DataFrame:
    """Geometric loss decay, active fraction near Q(beta), a few flips (section 6)."""
    rows = []
    cells = [("dense-gn", DENSE["dense-gn"], 4096, 0.2), ("subquad", DEFAULT, 4096, 0.2)]
    cells += [("subquad", DEFAULT, 4096, c) for c in (0.1, 0.3, 0.4)]
    for method, options, m, c in cells:
        q = _active(m, c) / m
        rate = 0.05 + 0.5 * c
        for it in range(11):
            loss = 8.0 * rate**it
            for layer in range(3):
                rows.append({"experiment": "default", "cell": f"t|{method}|{m}|{c}",
                             "machine": MACHINE, "method": method, "options": options,
                             "data": "synthetic", "m": m, "n": 16, "d": 16, "L": 2, "c": c,
                             "threshold": "adaptive", "seed": 0, "iteration": it,
                             "loss": loss, "layer": layer,
                             "active_fraction": q * (1 + 0.02 * layer * np.sin(it)),
                             "expected_active_fraction": q,
                             "flips": 0 if it == 0 else int(40 / it) + layer,
                             "label": method, VERSION_COLUMN: SCHEMA_VERSION})
    return pd.DataFrame(rows)


def make_run(run_dir: Path, sub_power: float | None = None, seed: int = 0) -> Path:
    """A synthetic run: ``sub_power`` None -> subquad ~ m s (1.76), else ~ m^sub_power."""
    rng = np.random.default_rng(seed)
    exp = "default"
    rows = _calibration(rng, exp)
    for m in M_GRID:
        for method, options in (("dense-gn", DENSE["dense-gn"]),
                                ("dense-gd", DENSE["dense-gd"]), ("subquad", DEFAULT)):
            rows += _rows(method, options, m, 16, 16, 0.2, rng, SLOWER[method], sub_power, exp)
        if m >= 2**12:
            for options in ABLATION:
                rows += _rows("subquad", options, m, 16, 16, 0.2, rng, 90.0, sub_power, exp)
        for c in (0.1,):
            rows += _rows("subquad", DEFAULT, m, 16, 16, c, rng, 80.0, sub_power, exp)
    for k in (4, 8, 16, 32, 64):
        for method, options in (("dense-gn", DENSE["dense-gn"]), ("subquad", DEFAULT)):
            rows += _rows(method, options, 2048, k, 16, 0.2, rng, SLOWER[method], sub_power, exp)
            rows += _rows(method, options, 2048, 16, k, 0.2, rng, SLOWER[method], sub_power, exp)
    runs = pd.DataFrame(rows).drop_duplicates(["cell", "sample", "phase"])
    run_dir.mkdir(parents=True, exist_ok=True)
    runs.to_csv(run_dir / "runs.csv", index=False)
    _training(sub_power).to_csv(run_dir / "training.csv", index=False)
    env = {"cpu_model": "Synthetic CPU @ 3 GHz", "cores": 2, "usable_cores": 2,
           "memory_bytes": 8 * 2**30,
           "blas": [{"user_api": "blas", "internal_api": "openblas", "version": "0.3.27",
                     "num_threads": 2, "threading_layer": "pthreads"}],
           "numba": {"version": "0.60", "num_threads": 2}, "gpu": None,
           "versions": {"numpy": np.__version__}, "python": "3.11.2",
           "git": {"commit": "abc1234", "dirty": False}, "date_utc": "2024-01-01T00:00:00+00:00",
           "machine": MACHINE}
    (run_dir / "environment.json").write_text(json.dumps(env))
    fit_run(run_dir, n_boot=200)
    return run_dir


def _claims(report: str) -> dict[str, str]:
    """Claim text -> verdict, from the report's claims table."""
    out = {}
    for line in report.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 6 and cells[0] not in ("claim", "---"):
            out[cells[0]] = re.sub(r"[*_]", "", cells[4])
    return out


def _verdict(claims: dict[str, str], start: str) -> str:
    """The verdict of the claim whose text starts with ``start``."""
    hits = [v for k, v in claims.items() if k.lower().startswith(start.lower())]
    assert hits, f"no claim starting with {start!r} in {list(claims)}"
    return hits[0]


@pytest.fixture(scope="module")
def subquadratic_run(tmp_path_factory) -> Path:
    """A synthetic run where subquad scales like m s ~ m^1.76."""
    return make_run(tmp_path_factory.mktemp("subquad-run"))


def test_plot_run_writes_every_figure(subquadratic_run: Path) -> None:
    """Every figure whose data exists is written as a non-empty PNG and PDF."""
    written = plot_run(subquadratic_run)
    names = {p.stem for p in written}
    expected = set(FIGURES)
    assert names == expected, f"missing figures: {expected - names}"
    for path in written:
        assert path.suffix in (".png", ".pdf") and path.stat().st_size > 1000
    assert (subquadratic_run / "figures" / "time_vs_m.png").read_bytes()[:4] == b"\x89PNG"
    assert (subquadratic_run / "figures" / "time_vs_m.pdf").read_bytes()[:4] == b"%PDF"


def test_report_supports_subquadratic_claims(subquadratic_run: Path) -> None:
    """subquad ~ m^1.76 against dense-gn ~ m^2: the claims are supported."""
    report = write_report(subquadratic_run).read_text()
    claims = _claims(report)
    assert _verdict(claims, "per-iteration time") == "supported"
    assert _verdict(claims, "per-iteration counted work") == "supported"
    assert _verdict(claims, "initialisation") == "supported"
    assert _verdict(claims, "dense-gn per-iteration") == "supported"
    assert _verdict(claims, "fast rectangular") == "not implemented"
    assert "subquad sweep experiments/default.toml --out" in report
    assert "Synthetic CPU" in report and "abc1234" in report
    assert "speed-up" in report.lower() and "dense-gn" in report


def test_report_rejects_quadratic_subquad(tmp_path: Path) -> None:
    """subquad ~ m^2: the per-iteration claims are not supported."""
    run = make_run(tmp_path / "quadratic", sub_power=2.0, seed=1)
    claims = _claims(write_report(run).read_text())
    assert _verdict(claims, "per-iteration time") == "not supported"
    assert _verdict(claims, "per-iteration counted work") == "not supported"


def test_missing_inputs_do_not_crash(tmp_path: Path) -> None:
    """An empty run directory gives no figures and a report of unmeasured claims; an empty
    runs.csv is a ConfigError naming it."""
    assert plot_run(tmp_path) == []
    report = write_report(tmp_path).read_text()
    assert "not measured" in report
    assert _verdict(_claims(report), "per-iteration time") == "not measured"
    (tmp_path / "runs.csv").write_text("")
    with pytest.raises(ConfigError, match="runs.csv"):
        write_report(tmp_path)


def test_report_without_fits_says_not_measured(subquadratic_run: Path, tmp_path: Path) -> None:
    """Timings without fits.csv or environment.json: claims are not measured, no crash."""
    (tmp_path / "runs.csv").write_bytes((subquadratic_run / "runs.csv").read_bytes())
    report = write_report(tmp_path).read_text()
    assert _verdict(_claims(report), "per-iteration time") == "not measured"
    assert "No exponent fitted in this run" in report
    assert "Environment not measured" in report


def test_same_context_of_an_empty_table_keeps_its_columns() -> None:
    """A run without subquad fits: the exponent-vs-c figure's selection stays a table."""
    from subquad.analysis.rundata import same_context

    empty = pd.DataFrame({"context": [], "machine": [], "exponent": []})
    assert list(same_context(empty, {"n": 16}).columns) == ["context", "machine", "exponent"]
