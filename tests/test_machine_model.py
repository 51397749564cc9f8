"""The machine model on a fake machine with known constants (deterministic, no timing)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from subquad.analysis.check import find_baseline, model_checks, run_portable_check
from subquad.analysis.fit import FitOptions, _regime_rows, _Series, two_segment
from subquad.analysis.limits import load_limits, parse_limits
from subquad.analysis.perfmodel.machine import Machine, fit_factor, load_calibration, slope
from subquad.analysis.perfmodel.predict import apply_factors, fit_factors, predict_cells
from subquad.cli import main
from subquad.errors import ConfigError
from subquad.harness.calibrate import calibrate, size_grid, write_calibration
from subquad.harness.environment import fingerprint, machine_id
from subquad.model.train import TrainConfig, build_trainer
from subquad.model.trainer import lines_touched

KIB, MIB = 1 << 10, 1 << 20
#: a fake machine: L1 32 KiB, L2 1 MiB, L3 32 MiB; streaming 100/50/25 GB/s in cache, 10 beyond
CACHES = [{"level": 1, "size": 32 * KIB}, {"level": 2, "size": MIB}, {"level": 3, "size": 32 * MIB}]
SIZES = [16 * KIB, 512 * KIB, 16 * MIB, 512 * MIB]
STREAM = [100e9, 50e9, 25e9, 10e9]


def fake_calibration(machine: str = "fake") -> dict:
    return {"machine": machine, "backend": "numpy", "dtype": "float32", "threads": 1,
            "caches": CACHES, "stream": {"size": SIZES, "bandwidth": STREAM},
            "random_rows": {"size": SIZES, "read_line_bandwidth": [40e9, 20e9, 10e9, 4e9],
                            "rmw_line_bandwidth": [20e9, 10e9, 5e9, 2e9]},
            "gather": [{"row_length": 1024, "working_set": 4 * MIB, "bandwidth": 30e9},
                       {"row_length": 16384, "working_set": 512 * MIB, "bandwidth": 10e9}],
            "gemm": [{"shape": "16x1024x1024", "rate": 20e9},
                     {"shape": "16x4096x4096", "rate": 40e9},
                     {"shape": "64x1024x1024", "rate": 60e9}],
            "loop_rate": 1e9, "overhead": {"numpy_op": 1e-6, "numba_call": 2e-7}}


def test_fake_machine_constants_are_recovered():
    mach = Machine(fake_calibration())
    assert [mach.level(s) for s in (16 * KIB, 512 * KIB, 16 * MIB, 512 * MIB)] == [
        "L1", "L2", "L3", "DRAM"]
    for s, bw in zip(SIZES, STREAM):
        assert mach.stream_bw(s) == pytest.approx(bw)
    assert mach.stream_bw(1 << 40) == pytest.approx(10e9)  # clamped beyond the last probe
    # log-log interpolation halfway between two probes is their geometric mean
    assert mach.stream_bw(math.sqrt(16 * KIB * 512 * KIB)) == pytest.approx(math.sqrt(100e9 * 50e9))
    assert mach.random_bw(512 * MIB, rmw=True) == pytest.approx(2e9)
    assert mach.gemm_rate("16x4096x4096") == pytest.approx(40e9)
    assert mach.gemm_rate("16x2048x2048") == pytest.approx(math.sqrt(20e9 * 40e9))
    assert mach.gemm_rate("64x1024x1024") == pytest.approx(60e9)
    # gather at the probe's own row length and working set, and scaled to another set
    assert mach.gather_bw(16384, 512 * MIB) == pytest.approx(10e9)
    assert mach.gather_bw(1024, 16 * KIB) == pytest.approx(30e9 * 100e9 / mach.stream_bw(4 * MIB))


def test_phase_seconds_follow_the_model_form():
    mach = Machine(fake_calibration())
    o = 1e-6
    assert mach.phase_seconds("forward", "stream", 0, 1e9, 1e9, 512 * MIB, "", 3, 16384) \
        == pytest.approx(3 * o + 1e9 / 10e9)
    assert mach.phase_seconds("update", "random", 0, 1e8, 8e8, 512 * MIB, "", 2, 8192) \
        == pytest.approx(2 * o + 8e8 / 2e9)
    assert mach.phase_seconds("backward", "random", 0, 1e8, 8e8, 512 * MIB, "", 0, 8192) \
        == pytest.approx(8e8 / 4e9)
    assert mach.phase_seconds("forward", "gemm", 4e9, 0, 0, 0, "16x4096x4096", 1, 4096) \
        == pytest.approx(o + 4e9 / 40e9)
    assert mach.phase_seconds("gram", "compute", 1e6, 0, 0, 0, "", 0, 1024) \
        == pytest.approx(1e6 / 1e9)
    # asymptotic: every working set beyond the last cache level
    assert mach.phase_seconds("update", "random", 0, 0, 8e8, 16 * KIB, "", 0, 64,
                              asymptotic=True) == pytest.approx(8e8 / 2e9)


def _synthetic_cells(mach: Machine, factors: dict[str, float], noise: float, seed: int
                     ) -> pd.DataFrame:
    """Cells of a fake subquad run whose seconds are factor x the model plus lognormal noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for m in (1024, 2048, 4096, 8192, 16384):
        ws = 2.0 * m * m * 4
        phases = {"forward": ("stream", 0.0, 0.2 * m * m, 0.2 * m * m),
                  "update": ("random", 0.0, 0.01 * m * m, 0.2 * m * m),
                  "gram": ("compute", 16 * 0.05 * m, 0.0, 0.0)}
        for phase, (access, work, nbytes, lines) in phases.items():
            t = mach.phase_seconds(phase, access, work, nbytes, lines, ws, "", 2, m)
            rows.append({"cell": f"c{m}", "method": "subquad", "options": "o", "backend": "numpy",
                         "dtype": "float32", "n": 16, "d": 16, "L": 2, "c": 0.2, "m": m,
                         "phase": phase, "access": access, "work": work, "bytes": nbytes,
                         "line_bytes": lines, "working_set": ws, "shape": "", "calls": 2,
                         "seconds": factors[phase] * t * math.exp(noise * rng.standard_normal())})
    df = pd.DataFrame(rows)
    it = df.groupby("cell", as_index=False)["seconds"].sum()
    it = it.merge(df.drop_duplicates("cell").drop(columns=["seconds", "phase"]), on="cell")
    return pd.concat([df, it.assign(phase="iteration", access="")], ignore_index=True)


def test_fit_mode_recovers_known_efficiency_factors():
    mach = Machine(fake_calibration())
    truth = {"forward": 1.3, "update": 0.6, "gram": 4.0}
    cells = _synthetic_cells(mach, truth, noise=0.02, seed=1)
    pred = predict_cells(cells, mach)
    factors = fit_factors(pred, n_boot=300)
    for r in factors.itertuples():  # 2% noise on 5 cells: within 3%, a tight interval
        assert r.factor == pytest.approx(truth[r.phase], rel=0.03)
        assert r.ci_low <= r.factor <= r.ci_high < 1.1 * r.ci_low
    fitted = apply_factors(pred, factors)
    it = fitted[fitted["phase"] == "iteration"]
    assert np.allclose(it["fitted"] / it["seconds"], 1.0, rtol=0.05)
    # predict mode on an exact machine (factors 1, no noise) reproduces every second
    exact = predict_cells(_synthetic_cells(mach, dict.fromkeys(truth, 1.0), 0.0, 0), mach)
    assert np.allclose(exact["predicted"], exact["seconds"], rtol=1e-12)


def test_fit_mode_keeps_one_factor_per_resolved_update_mode():
    """An auto series that switches kernels at m = 4096 gets a factor per kernel: the update
    of the first three widths runs 0.6x its prediction, of the last two 3x (fused: the
    bookkeeping the model barely charges); one factor across both would miss both."""
    mach = Machine(fake_calibration())
    cells = _synthetic_cells(mach, {"forward": 1.3, "update": 0.6, "gram": 4.0}, 0.0, 0)
    cells["update_resolved"] = np.where(cells["m"] >= 4096, "fused", "scatter")
    late = (cells["m"] >= 4096) & (cells["phase"] == "update")
    cells.loc[late, "seconds"] *= 3.0 / 0.6
    body = cells["phase"] != "iteration"
    sums = cells[body].groupby("cell")["seconds"].sum()
    it = ~body
    cells.loc[it, "seconds"] = cells.loc[it, "cell"].map(sums).to_numpy(float)
    factors = fit_factors(predict_cells(cells, mach), n_boot=100)
    got = {(r.update_resolved, r.phase): r.factor for r in factors.itertuples()}
    assert got[("scatter", "update")] == pytest.approx(0.6)
    assert got[("fused", "update")] == pytest.approx(3.0)
    assert got[("fused", "forward")] == pytest.approx(1.3)
    fitted = apply_factors(predict_cells(cells, mach), factors)
    itr = fitted[fitted["phase"] == "iteration"]
    assert np.allclose(itr["fitted"], itr["seconds"], rtol=1e-9)


def test_fit_factor_is_positive_with_interval_and_nan_without_data():
    e, lo, hi = fit_factor(np.array([2.0, 2.0, 2.0]), np.array([1.0, 1.0, 1.0]))
    assert (e, lo, hi) == pytest.approx((2.0, 2.0, 2.0))
    assert all(math.isnan(v) for v in fit_factor(np.array([0.0]), np.array([1.0])))


def test_cache_edge_is_found_by_regime_and_two_segment_fits():
    """A fake machine whose time grows as m^1.5 in cache and m^2 once W exceeds 32 MiB."""
    llc = 32 * MIB
    m = np.array([512, 724, 1024, 1448, 2048, 2896, 4096, 5792, 8192, 11585, 16384], float)
    edge = math.sqrt(llc / 4)  # 2896.3: one float32 matrix fills the last cache
    t = np.where(m <= edge, (m / edge) ** 1.5, (m / edge) ** 2.0)
    rng = np.random.default_rng(0)
    boot = np.log(t)[None, :] + 0.005 * rng.standard_normal((201, len(m)))
    boot[0] = np.log(t)
    bp, s1, s2 = two_segment(m, boot)
    assert bp[0] == pytest.approx(2896)
    assert s1[0] == pytest.approx(1.5, abs=0.01) and s2[0] == pytest.approx(2.0, abs=0.01)
    s = _Series({"machine": "fake", "dtype": "float32", "method": "x", "label": "x", "options": "",
                 "backend": "numpy", "threshold": "", "data": "", "phase": "iteration"},
                "m", "seconds", m, np.exp(boot[:1].T), np.ones(len(m), int), "n=16")
    rows = _regime_rows(s, np.exp(boot), FitOptions(last_cache={"fake": llc}))
    regime = next(r for r in rows if r["fit"] == "regime")
    assert regime["n_points"] == 5 and regime["exponent"] == pytest.approx(2.0, abs=0.01)
    assert regime["ci_low"] <= 2.0 <= regime["ci_high"]
    assert two_segment(m[:4], boot[:, :4]) is None


def test_lines_touched_counts_whole_cache_lines():
    row = 4096 * 4  # 256 lines of 64 bytes
    assert lines_touched(1, row) == pytest.approx(1.0)
    assert lines_touched(10**6, row) == pytest.approx(256.0)
    assert lines_touched(0, row) == pytest.approx(0.0)
    assert 37 < float(lines_touched(41, row)) < 41  # far apart: nearly one line each


@pytest.mark.parametrize("method", ["subquad", "dense-gn"])
def test_trainers_declare_access_kind_and_working_set(method):
    opts = {"update": "scatter"} if method == "subquad" else {}
    tr = build_trainer(TrainConfig(method=method, m=256, n=4, d=8, L=2, c=0.2, seed=0, **opts))
    tr.start()
    st = tr.step()
    ws = 2 * 256 * 256 * 8  # L m^2 float64 weights
    if method == "subquad":
        assert st.model["forward"]["access"] == "stream"
        assert st.model["update"]["access"] == "random"
        assert st.model["backward"]["access"] == "random"
        assert st.model["forward"]["working_set"] == ws
        for p in ("update", "backward"):  # a scattered element moves a whole line
            assert st.model[p]["line_bytes"] >= st.bytes[p] > 0
    else:
        assert st.model["forward"]["access"] == "gemm"
        assert st.model["forward"]["shape"] == "4x256x256"
        assert st.model["update"]["shape"] == "256x4x256"
        assert st.model["update"]["line_bytes"] == 2 * st.bytes["update"]


def test_calibration_file_is_keyed_by_machine(tmp_path):
    path = tmp_path / "calibration.json"
    write_calibration(fake_calibration("a"), path)
    write_calibration(fake_calibration("b"), path)
    assert set(json.loads(path.read_text())["machines"]) == {"a", "b"}
    assert load_calibration(path, "b").id == "b"
    with pytest.raises(ConfigError, match="holds machines a, b"):
        load_calibration(path, "c")
    with pytest.raises(ConfigError, match="--calibration"):
        load_calibration(tmp_path / "missing.json")
    assert size_grid(32 * MIB)[0] == 32 * KIB and size_grid(32 * MIB)[-1] >= 4 * 32 * MIB
    assert size_grid(256 * MIB)[-1] >= 1 << 30


def test_gather_interpolates_between_the_working_sets_of_one_row_length():
    cal = fake_calibration()
    cal["gather"] = [{"row_length": 1024, "working_set": 4 * MIB, "bandwidth": 30e9},
                     {"row_length": 1024, "working_set": 8 * MIB, "bandwidth": 15e9},
                     {"row_length": 4096, "working_set": 64 * MIB, "bandwidth": 12e9}]
    mach = Machine(cal)
    assert mach.gather_bw(1024, 4 * MIB) == pytest.approx(30e9)
    assert mach.gather_bw(1024, 8 * MIB) == pytest.approx(15e9)
    assert mach.gather_bw(1024, math.sqrt(32) * MIB) == pytest.approx(math.sqrt(30e9 * 15e9))
    # beyond its probes a row length follows the streaming curve from the nearest one
    assert mach.gather_bw(1024, 256 * MIB) == pytest.approx(
        15e9 * mach.stream_bw(256 * MIB) / mach.stream_bw(8 * MIB))
    # between row lengths: geometric interpolation of the two evaluated at the same set
    mid = mach.gather_bw(2048, 64 * MIB)
    assert mid == pytest.approx(math.sqrt(mach.gather_bw(1024, 64 * MIB) * 12e9))


def test_calibrate_command_probes_one_and_two_matrices_per_width(tmp_path, capsys):
    assert main(["calibrate", "--quick", "--threads", "1", "--m", "256", "512",
                 "--out", str(tmp_path)]) == 0
    cal = load_calibration(tmp_path)
    sets = {}
    for g in cal.cal["gather"]:
        assert g["bandwidth"] > 0
        sets.setdefault(g["row_length"], []).append(g["working_set"])
    assert sorted(sets) == [256, 512]
    for m, ws in sets.items():
        assert sorted(ws) == [m * m * 4, 2 * m * m * 4]
    assert main(["calibrate", "--quick", "--m", "10", "--out", str(tmp_path)]) == 2
    assert "m" in capsys.readouterr().err


@pytest.mark.parametrize("kwargs, param", [({"backend": "tpu"}, "backend"),
                                           ({"dtype": "int8"}, "dtype"),
                                           ({"threads": 0}, "threads"),
                                           ({"m_grid": [32]}, "m")])
def test_calibrate_rejects_bad_input_early(kwargs, param):
    with pytest.raises(ConfigError, match=param):
        calibrate(**kwargs)


def test_calibrate_on_cupy_without_gpu_is_a_clear_error():
    from subquad.model.backend import gpu_available

    if gpu_available()[0]:
        pytest.skip("a GPU is present: the cupy probes run (test_gpu covers the kernels)")
    with pytest.raises(ConfigError, match="cupy needs a usable GPU"):
        calibrate(backend="cupy")


# ------------------------------------------------------------------------ portable gates

BASELINES = Path(__file__).resolve().parents[1] / "results" / "check-scaling" / "baselines"
RECORDED = BASELINES / "2c-24g-0d940d9a"


def test_fingerprint_matches_only_the_same_machine(tmp_path):
    shutil.copytree(RECORDED, tmp_path / "one")
    env = json.loads((RECORDED / "environment.json").read_text())
    assert find_baseline(tmp_path, env) == tmp_path / "one"
    other = dict(env, cpu_model="another CPU")
    assert find_baseline(tmp_path, other) is None
    assert fingerprint(env) != fingerprint(dict(env, caches=[]))


def _altered_root(tmp_path: Path) -> Path:
    """The committed baselines with this machine's id and CPU model changed (a stand-in)."""
    root = tmp_path / "baselines"
    shutil.copytree(BASELINES, root)
    alt = root / "stand-in"
    (root / RECORDED.name).rename(alt)
    env = json.loads((alt / "environment.json").read_text())
    env.update(machine="2c-24g-00000000", cpu_model="stand-in CPU")
    (alt / "environment.json").write_text(json.dumps(env))
    return root


def test_model_tier_passes_unchanged_run_and_fails_a_doctored_one(tmp_path):
    root = _altered_root(tmp_path)
    results, note = run_portable_check(RECORDED, root)
    assert note.startswith("no baseline for machine") and "make check-scaling-baseline" in note
    assert any(r.name.startswith("model exponent") for r in results)
    assert all(r.passed for r in results), [r for r in results if not r.passed]
    run = tmp_path / "doctored"
    shutil.copytree(RECORDED, run)
    runs = pd.read_csv(run / "runs.csv", keep_default_na=False, dtype=str)
    sel = (runs["method"] == "subquad") & (runs["phase"] != "init") & (runs["seconds"] != "")
    m = runs.loc[sel, "m"].astype(float)
    runs.loc[sel, "seconds"] = (runs.loc[sel, "seconds"].astype(float) * (m / 1024) ** 0.3
                                ).map(repr)
    runs.to_csv(run / "runs.csv", index=False)
    from subquad.analysis.fit import fit_run

    fit_run(run, n_boot=200, min_axis={"m": 1024})
    results, _ = run_portable_check(run, root)
    failed = [r.name for r in results if not r.passed]
    assert any("model exponent: subquad" in f for f in failed)


def test_model_tier_without_calibration_fails_loudly(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(RECORDED, run)
    (run / "calibration.json").unlink()
    results = model_checks(run, load_limits())
    assert len(results) == 1 and not results[0].passed
    assert "calibration" in results[0].detail


def test_model_limits_are_validated():
    base = {"work": {"non_init_max": 1.85}, "baseline": {"slack": 0.01},
            "factor": {"ratio": 1.1, "p_value": 0.002}}
    lim = parse_limits(base)
    assert lim.model_ratio == (0.5, 2.0)
    with pytest.raises(ConfigError, match="ratio_low"):
        parse_limits(base | {"model": {"ratio_low": 1.5}})


def test_slope_of_a_power_law():
    m = np.array([1024.0, 2048.0, 4096.0])
    assert slope(m, 3 * m**1.7) == pytest.approx(1.7)
    assert math.isnan(slope(m[:1], m[:1]))


# ------------------------------------------------------------------ model / predict commands

WIDTH16 = Path(__file__).resolve().parents[1] / "results" / "width16"


def _copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("figures", "cells", "model*"))
    return dst


def test_model_and_report_on_the_committed_width_run(tmp_path):
    from subquad.analysis.perfmodel.predict import model_run
    from subquad.analysis.report import write_report

    run = _copy_run(WIDTH16, tmp_path / "width16")
    paths = model_run(run, n_boot=100)
    model = pd.read_csv(paths["model"])
    assert set(model["phase"]) >= {"forward", "backward", "update", "iteration"}
    it = model[model["phase"] == "iteration"]
    assert len(it) == it["m"].nunique() * 2  # every cell of both methods, none dropped
    summ = pd.read_csv(paths["summary"])
    assert set(summ["method"]) == {"dense-gn", "subquad"}
    assert summ["model_exponent"].notna().all() and summ["asymptotic_exponent"].notna().all()
    text = write_report(run).read_text()
    assert "Why is the measured exponent what it is" in text and "extrapolation" in text


def test_predict_joins_the_measured_run_of_the_other_machine(tmp_path):
    from subquad.analysis.perfmodel.predict import predict_run

    other = WIDTH16.parent / "width16-2threads"
    res = predict_run(WIDTH16, other / "calibration.json", compare=other)
    cells = res["cells"]
    assert cells["predicted"].gt(0).all()
    joined = cells.dropna(subset=["measured"])
    assert set(joined["m"]) == {2048.0, 4096.0, 8192.0, 16384.0}
    assert np.allclose(joined["ratio"], joined["predicted"] / joined["measured"])
    assert {"compared_model_exponent", "measured_exponent"} <= set(res["summary"].columns)
    with pytest.raises(ConfigError, match="--calibration"):
        predict_run(WIDTH16, tmp_path / "none.json")


def test_record_baseline_files_it_under_its_machine_id(tmp_path):
    from subquad.analysis.check import record_baseline

    run = tmp_path / "run"
    shutil.copytree(RECORDED, run)
    (run / "cells").mkdir()
    (run / "cells" / "0123456789abcdef.csv").write_text("x\n")
    dest = record_baseline(run, tmp_path / "baselines")
    env = json.loads((run / "environment.json").read_text())
    assert dest == tmp_path / "baselines" / machine_id(env)  # recomputed, not the stored id
    assert (dest / "fits.csv").read_bytes() == (RECORDED / "fits.csv").read_bytes()
    assert (dest / "machines").is_dir() and not (dest / "cells").exists()
    assert find_baseline(tmp_path / "baselines", env) == dest


def test_predict_names_each_series_and_its_crossover(capsys):
    """Two series of one method (n = 16 and n = 64) stay apart in every line of the output."""
    root = Path(__file__).resolve().parents[1] / "results"
    rc = main(["predict", str(root / "width"), "--calibration",
               str(root / "width16-2threads" / "calibration.json"),
               "--compare", str(root / "width16-2threads")])
    out = capsys.readouterr().out
    assert rc == 0
    for tag in ("subquad n=16", "subquad n=64", "dense-gn n=16", "dense-gn n=64"):
        assert tag in out
    cross = [line for line in out.splitlines() if line.startswith("crossover")]
    assert len(cross) == 2 and cross[0].endswith("n = 16") and cross[1].endswith("n = 64")
    measured = [line for line in out.splitlines() if line.startswith("subquad n=16 ")
                and line.split()[-1] not in ("-", "ratio")]
    assert measured  # the two-thread run's cells joined their predictions


def test_input_major_forward_is_charged_its_accumulator_traffic():
    from subquad.analysis.perfmodel.predict import accumulator_traffic
    from subquad.model.kernels.numba_common import INPUT_MAJOR_TILE_BYTES

    assert accumulator_traffic("forward", "input-major", 1e6, "float32") == (
        8e6, float(INPUT_MAJOR_TILE_BYTES))
    assert accumulator_traffic("forward", "input-major", 1e6, "float64")[0] == 16e6
    assert accumulator_traffic("forward", "per-example", 1e6, "float32") == (0.0, 0.0)
    assert accumulator_traffic("update", "input-major", 1e6, "float32") == (0.0, 0.0)
    mach = Machine(fake_calibration())
    plain = mach.phase_seconds("forward", "stream", 1e6, 1e9, 1e9, 512 * MIB, "", 0, 16384)
    with_acc = mach.phase_seconds("forward", "stream", 1e6, 1e9, 1e9, 512 * MIB, "", 0, 16384,
                                  accum_bytes=8e6, accum_set=512 * KIB)
    assert with_acc - plain == pytest.approx(8e6 / 50e9)  # the L2 point of the fake curve
    cells = _synthetic_cells(mach, {"forward": 1.0, "update": 1.0, "gram": 1.0}, 0.0, 0)
    cells.loc[cells["phase"] == "forward", "work"] = 1e6
    pe = predict_cells(cells.assign(forward_kernel_resolved="per-example"), mach)
    im = predict_cells(cells.assign(forward_kernel_resolved="input-major"), mach)
    fwd = (im["phase"] == "forward").to_numpy()
    assert np.all(im["predicted"].to_numpy()[fwd] > pe["predicted"].to_numpy()[fwd])
    assert np.allclose(im["predicted"].to_numpy()[~fwd & (im["phase"] != "iteration")],
                       pe["predicted"].to_numpy()[~fwd & (pe["phase"] != "iteration")])


def test_extrapolation_follows_the_kernels_of_the_largest_widths():
    """An auto series whose update switches from scatter to fused is extrapolated from its
    fused widths only: the scatter widths' update phase would otherwise bend every law."""
    from subquad.analysis.perfmodel.predict import extrapolate_series

    mach = Machine(fake_calibration())
    cells = _synthetic_cells(mach, {"forward": 1.0, "update": 1.0, "gram": 1.0}, 0.0, 0)
    cells["update_resolved"] = np.where(cells["m"] >= 4096, "fused", "scatter")
    big = np.array([32768.0, 65536.0])
    fused_only = cells[cells["update_resolved"] == "fused"]
    want = extrapolate_series(fused_only, mach, big)
    cells.loc[(cells["m"] < 4096) & (cells["phase"] == "update"), "line_bytes"] *= 50.0
    assert np.allclose(extrapolate_series(cells, mach, big), want)


def test_phase_exponents_compare_only_between_equal_update_modes(tmp_path):
    """A baseline whose auto series resolved another update mode at some widths has other
    content in its forward/backward/update phases: those rows are undecided, named."""
    from subquad.analysis.check import run_check

    run, base = tmp_path / "run", tmp_path / "base"
    shutil.copytree(RECORDED, run)
    shutil.copytree(RECORDED, base)
    runs = pd.read_csv(base / "runs.csv", keep_default_na=False, dtype=str)
    runs.loc[runs["method"] == "subquad", "update_resolved"] = "scatter"
    runs.to_csv(base / "runs.csv", index=False)
    results = run_check(run, base)
    fwd = [r for r in results if r.name.startswith("vs baseline: subquad")
           and " forward work" in r.name]
    assert fwd and all(not r.decided and "update mode differs" in r.detail for r in fwd)
    gram = [r for r in results if r.name.startswith("vs baseline: subquad") and " gram " in r.name]
    assert gram and all(r.decided for r in gram)  # the Gram phase does not depend on it
    same = run_check(run, RECORDED)
    assert all(r.decided for r in same if r.name.startswith("vs baseline"))
