"""Every user mistake on every command: exit 2, one message naming what is wrong, no traceback.

Each case builds its inputs in a fresh directory, runs ``subquad`` in-process and checks the
exit status, a fragment of the message (the parameter, file or key path) and that neither a
traceback nor a raw numpy warning reached the terminal. Cases that must fail *after* running
(a diverging step size) expect exit 1 with the same guarantees.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from subquad import cli
from subquad.results.cells import RUNS_COLUMNS
from tests.test_sweep import TINY

TRAIN = ["train", "--m", "64", "--n", "4", "--d", "8", "--iters", "2"]

#: the small sweep of test_sweep.py without calibration: fast to validate, runs nothing heavy
TOML = TINY.replace("[calibration]\nenabled = true\n", "")


def _toml(old: str, new: str) -> Callable[[Path], list[str]]:
    """A sweep of TOML with ``old`` replaced by ``new`` (``old`` must occur)."""

    def make(tmp: Path) -> list[str]:
        assert old in TOML, old
        path = tmp / "exp.toml"
        path.write_text(TOML.replace(old, new, 1))
        return ["sweep", str(path), "--out", str(tmp / "out"), "--quiet"]

    return make


def _sweep(*extra: str, setup: Callable[[Path], None] | None = None
           ) -> Callable[[Path], list[str]]:
    """A valid sweep file with extra flags; ``{tmp}`` in a flag is the case's directory."""

    def make(tmp: Path) -> list[str]:
        if setup is not None:
            setup(tmp)
        path = tmp / "exp.toml"
        path.write_text(TOML)
        args = [a.replace("{tmp}", str(tmp)) for a in extra]
        return ["sweep", str(path), *(args if "--out" in args else
                                      [*args, "--out", str(tmp / "out")]), "--quiet"]

    return make


def _train(*extra: str) -> Callable[[Path], list[str]]:
    return lambda tmp: [*TRAIN, *extra]


def _runs_csv(rows: int = 3) -> str:
    """A small, well-formed runs.csv (two methods, two widths)."""
    lines = [",".join(RUNS_COLUMNS)]
    for k in range(rows):
        row = dict.fromkeys(RUNS_COLUMNS, "")
        row.update(experiment="x", cell=f"{k:016x}", machine="mach", method="dense-gn",
                   backend="numpy", dtype="float64", m=str(64 << k), n="4", d="8", L="2",
                   c="0.2", threshold="adaptive", data="synthetic", seed="0", sample="0",
                   iters="1", phase="iteration", seconds="0.01", work="100", bytes="800",
                   loss="0.5", status="ok")
        lines.append(",".join(row[c] for c in RUNS_COLUMNS))
    return "\n".join(lines) + "\n"


#: ways to spoil a run directory's runs.csv: (name, writer)
SPOIL: dict[str, Callable[[Path], None]] = {
    "empty": lambda p: p.write_bytes(b""),
    "binary garbage": lambda p: p.write_bytes(bytes(range(256)) * 4),
    "truncated": lambda p: p.write_text(_runs_csv()[: len(_runs_csv()) // 2]),
    "header only": lambda p: p.write_text(_runs_csv(0)),
    "foreign table": lambda p: p.write_text("a,b\n1,2\n"),
    "truncated at a line end": lambda p: p.write_text(
        "\n".join(_runs_csv().splitlines()[:3])[:-40] + "\n"),
}


def _run_dir(tmp: Path, spoil: str | None = None, fitted: bool = False) -> Path:
    d = tmp / "run"
    d.mkdir(exist_ok=True)
    (d / "runs.csv").write_text(_runs_csv())
    if fitted:
        (d / "fits.csv").write_text("fit,method,phase,quantity,axis,exponent\n")
    if spoil is not None:
        SPOIL[spoil](d / "runs.csv")
    return d


def _analysis(command: str, spoil: str) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        d = _run_dir(tmp, spoil)
        extra = ["--baseline", str(d)] if command == "check" else []
        return [command, str(d), *extra]

    return make


def _no_gpu() -> bool:
    from subquad.model.backend import gpu_available

    return not gpu_available()[0]


#: the committed run with per-phase counts and a calibration (subquad model / predict)
WIDTH16 = Path(__file__).resolve().parents[1] / "results" / "width16"


def _width16(tmp: Path, cal: Callable[[dict], dict] | None = None) -> Path:
    """A copy of results/width16 (runs.csv, experiment.toml, calibration.json changed by cal)."""
    d = tmp / "w16"
    d.mkdir()
    for name in ("runs.csv", "experiment.toml", "environment.json"):
        (d / name).write_bytes((WIDTH16 / name).read_bytes())
    data = json.loads((WIDTH16 / "calibration.json").read_text())
    (d / "calibration.json").write_text(json.dumps(cal(data) if cal else data))
    return d


def _other_dtype(data: dict) -> dict:
    for entry in data["machines"].values():
        entry["dtype"] = "float64" if entry["dtype"] == "float32" else "float32"
    return data


def _file(name: str, content: bytes, *argv: str) -> Callable[[Path], list[str]]:
    """Write ``content`` to tmp/name, then run argv ({tmp} and {file} substituted)."""

    def make(tmp: Path) -> list[str]:
        (tmp / name).write_bytes(content)
        return [a.replace("{tmp}", str(tmp)).replace("{file}", str(tmp / name)) for a in argv]

    return make


#: environment variables: (variables, argv, status, fragment); run as ``python -m subquad`` in a
#: subprocess, since a variable such as NUMBA_NUM_THREADS is read when numba first loads
ENV_CASES: dict[str, tuple[dict[str, str], list[str], int, str]] = {
    "env NUMBA_NUM_THREADS 0": ({"NUMBA_NUM_THREADS": "0"}, TRAIN, 2, "$NUMBA_NUM_THREADS"),
    "env NUMBA_NUM_THREADS -3": ({"NUMBA_NUM_THREADS": "-3"}, TRAIN, 2, "$NUMBA_NUM_THREADS"),
    "env NUMBA_NUM_THREADS abc": ({"NUMBA_NUM_THREADS": "abc"}, TRAIN, 2, "$NUMBA_NUM_THREADS"),
    "env NUMBA_NUM_THREADS on fit": ({"NUMBA_NUM_THREADS": "0"}, ["fit", "nowhere"], 2,
                                     "$NUMBA_NUM_THREADS"),
    "env OMP_NUM_THREADS abc": ({"OMP_NUM_THREADS": "abc"}, TRAIN, 2, "$OMP_NUM_THREADS"),
    "env OMP_NUM_THREADS 0": ({"OMP_NUM_THREADS": "0"}, TRAIN, 2, "$OMP_NUM_THREADS"),
    "env OMP_NUM_THREADS 4,x": ({"OMP_NUM_THREADS": "4,x"}, TRAIN, 2, "$OMP_NUM_THREADS"),
    "env OPENBLAS_NUM_THREADS many": ({"OPENBLAS_NUM_THREADS": "many"}, TRAIN, 2,
                                      "$OPENBLAS_NUM_THREADS"),
    "env MKL_NUM_THREADS 0": ({"MKL_NUM_THREADS": "0"}, TRAIN, 2, "$MKL_NUM_THREADS"),
    "env NUMBA_THREADING_LAYER bogus": ({"NUMBA_THREADING_LAYER": "bogus"}, TRAIN, 2,
                                        "$NUMBA_THREADING_LAYER"),
    "env SUBQUAD_EMULATE_CUPY bogus": ({"SUBQUAD_EMULATE_CUPY": "bogus"},
                                       [*TRAIN, "--backend", "cupy"], 2,
                                       "$SUBQUAD_EMULATE_CUPY"),
    "env SUBQUAD_HOST_BUILD_DIR relative": ({"SUBQUAD_HOST_BUILD_DIR": "rel/dir"}, TRAIN, 2,
                                            "$SUBQUAD_HOST_BUILD_DIR"),
    "env SUBQUAD_HOST_BUILD_DIR a file": ({"SUBQUAD_HOST_BUILD_DIR": "/etc/hostname"}, TRAIN, 2,
                                          "$SUBQUAD_HOST_BUILD_DIR"),
    "env XDG_CACHE_HOME relative": ({"XDG_CACHE_HOME": "cache"}, TRAIN, 2, "$XDG_CACHE_HOME"),
    "env XDG_CACHE_HOME a file": ({"XDG_CACHE_HOME": "/etc/hostname"}, TRAIN, 2,
                                  "$XDG_CACHE_HOME"),
    "env MPLBACKEND bogus on train": ({"MPLBACKEND": "bogus"}, TRAIN, 2, "$MPLBACKEND"),
    "env MPLBACKEND bogus on plot": ({"MPLBACKEND": "nonesuch"}, ["plot", "nowhere"], 2,
                                     "$MPLBACKEND"),
}


CASES: dict[str, tuple[Callable[[Path], list[str]], int, str]] = {
    # ---- experiment files: non-finite numbers, unused options, limits ----------------------
    "toml c = nan": (_toml("seed = 0\n", "seed = 0\nc = nan\n"), 2, "fixed.c"),
    "toml two labels, one cell": (_toml('update = "scatter"\n', 'update = "scatter"\n'
                                        'label = "a"\n\n[[methods]]\nmethod = "subquad"\n'
                                        'update = "scatter"\nlabel = "b"\n'),
                                  2, "methods 'a' and 'b' have the same method and options"),
    "toml c = inf": (_toml("seed = 0\n", "seed = 0\nc = inf\n"), 2, "fixed.c"),
    "toml c values with nan": (_toml('axis = "m"\nvalues = [64, 128]',
                                     'axis = "c"\nvalues = [0.1, nan]'),
                               2, "sweeps[0].values[1]"),
    "toml min_sample_seconds nan": (_toml("min_sample_seconds = 0",
                                          "min_sample_seconds = nan"),
                                    2, "timing.min_sample_seconds"),
    "toml cell budget inf": (_toml("cell_budget_seconds = 60", "cell_budget_seconds = inf"),
                             2, "timing.cell_budget_seconds"),
    "toml lr nan": (_toml('method = "dense-gn"', 'method = "dense-gn"\nlr = nan'), 2, "lr"),
    "toml damping -inf": (_toml('method = "dense-gn"', 'method = "dense-gn"\ndamping = -inf'),
                          2, "damping"),
    "toml dense-gn rank_max": (_toml('method = "dense-gn"', 'method = "dense-gn"\nrank_max = 5'),
                               2, "rank-max: only the lazy"),
    "toml dense-gn sketch_size": (_toml('method = "dense-gn"',
                                        'method = "dense-gn"\nsketch_size = 8'),
                                  2, "sketch-size"),
    "toml dense-gd solver": (_toml('method = "dense-gn"', 'method = "dense-gd"\nsolver = "cg"'),
                             2, "solver: dense-gd"),
    "toml scatter with rank_max": (_toml('update = "scatter"', 'update = "scatter"\nrank_max = 8'),
                                   2, "rank-max"),
    "toml cg_maxiter 0": (_toml('update = "scatter"',
                                'update = "scatter"\nsolver = "cg"\ncg_maxiter = 0'),
                          2, "cg-maxiter: must be an integer >= 1"),
    "toml lazy rank_max 0": (_toml('update = "scatter"', 'update = "lazy"\nrank_max = 0'),
                             2, "rank-max: must be an integer >= n"),
    "toml lazy rank_exponent 1.5": (_toml('update = "scatter"',
                                          'update = "lazy"\nrank_exponent = 1.5'),
                                    2, "rank-exponent: must lie in (0, 1]"),
    "toml fit min_m 0": (_toml("[timing]", "[fit]\nmin_m = 0\n[timing]"), 2, "fit.min_m"),
    "toml bad name": (_toml('name = "tiny"', 'name = "a/b"'), 2, "name"),
    "toml syntax error": (_toml("[fixed]", "[fixed"), 2, "not valid TOML"),
    "toml binary": (lambda tmp: (tmp.joinpath("e.toml").write_bytes(b"\xff\xfe\x00garbage"),
                                 ["sweep", str(tmp / "e.toml"), "--quiet"])[1],
                    2, "not valid TOML"),
    "toml empty": (lambda tmp: (tmp.joinpath("e.toml").write_text(""),
                                ["sweep", str(tmp / "e.toml"), "--quiet"])[1], 2, "methods"),
    "toml missing": (lambda tmp: ["sweep", str(tmp / "nope.toml")], 2, "no such experiment"),
    # ---- sweep flags and output directories -------------------------------------------------
    "sweep --out is a file": (_sweep("--out", "{tmp}/f", setup=lambda t: t.joinpath("f")
                                     .write_text("x")), 2, "out: "),
    "sweep --out under /proc": (_sweep("--out", "/proc/subquad-out"), 2, "out: "),
    "sweep --budget 0": (_sweep("--budget", "0"), 2, "budget"),
    "sweep --budget nan": (_sweep("--budget", "nan"), 2, "budget"),
    "sweep --budget -5": (_sweep("--budget", "-5"), 2, "budget"),
    "sweep resume and overwrite": (_sweep("--resume", "--overwrite"), 2, "overwrite"),
    "sweep into finished results": (
        _sweep(setup=lambda t: _run_dir(t).rename(t / "out")), 2, "--overwrite"),
    "sweep --time bogus": (_sweep("--time", "soon"), 2, "--time"),
    "sweep --executor bogus": (_sweep("--executor", "cloud"), 2, "--executor"),
    "sweep config and merge": (_sweep("--merge", "{tmp}"), 2, "merge"),
    "sweep nothing": (lambda tmp: ["sweep"], 2, "CONFIG"),
    "merge without cells": (lambda tmp: ["sweep", "--merge", str(tmp)], 2, "cells/"),
    "merge missing dir": (lambda tmp: ["sweep", "--merge", str(tmp / "nope")], 2, "merge"),
    # ---- train: options a method does not use, limits, advertised forms ---------------------
    "train rank-max 0 lazy": (_train("--update", "lazy", "--rank-max", "0"), 2,
                              "rank-max: must be an integer >= n"),
    "train rank-max 0 default update": (_train("--rank-max", "0"), 2, "rank-max"),
    "train rank-exponent 2": (_train("--update", "lazy", "--rank-exponent", "2"), 2,
                              "rank-exponent"),
    "train rank-max and exponent": (_train("--update", "lazy", "--rank-max", "8",
                                           "--rank-exponent", "0.5"), 2, "not both"),
    "train scatter with rank-exponent": (_train("--update", "scatter", "--rank-exponent", "0.5"),
                                         2, "rank-exponent"),
    "train cg-maxiter 0 cg": (_train("--solver", "cg", "--cg-maxiter", "0"), 2, "cg-maxiter"),
    "train cg-maxiter with cholesky": (_train("--cg-maxiter", "0"), 2, "cg-maxiter"),
    "train cg-tol 0": (_train("--solver", "cg", "--cg-tol", "0"), 2, "cg-tol"),
    "train cg-tol 2": (_train("--solver", "cg", "--cg-tol", "2"), 2, "cg-tol"),
    "train cg-tol nan": (_train("--solver", "cg", "--cg-tol", "nan"), 2, "cg-tol"),
    "train sketch-size 0": (_train("--solver", "pcg-tensorsketch", "--sketch-size", "0"), 2,
                            "sketch-size"),
    "train sketch-size with cholesky": (_train("--sketch-size", "8"), 2, "sketch-size"),
    "train dense-gn rank-max": (_train("--method", "dense-gn", "--rank-max", "5"), 2,
                                "rank-max"),
    "train dense-gn sketch-size": (_train("--method", "dense-gn", "--sketch-size", "4"), 2,
                                   "sketch-size"),
    "train dense-gn forward-kernel": (_train("--method", "dense-gn", "--forward-kernel",
                                             "per-example"), 2, "forward-kernel"),
    "train dense-gn solver cg": (_train("--method", "dense-gn", "--solver", "cg"), 2, "solver"),
    "train dense-gd solver": (_train("--method", "dense-gd", "--solver", "cholesky"), 2,
                              "solver: dense-gd"),
    "train dense-gd damping": (_train("--method", "dense-gd", "--damping", "1"), 2, "damping"),
    "train dense-gd update": (_train("--method", "dense-gd", "--update", "lazy"), 2, "update"),
    "train lr nan": (_train("--lr", "nan"), 2, "lr"),
    "train lr inf": (_train("--lr", "inf"), 2, "lr"),
    "train lr 0": (_train("--lr", "0"), 2, "lr"),
    "train damping nan": (_train("--damping", "nan"), 2, "damping"),
    "train c nan": (_train("--c", "nan"), 2, "c"),
    "train c inf": (_train("--c", "inf"), 2, "c"),
    "train m not a number": (_train("--m", "wide"), 2, "--m"),
    "train update bogus": (_train("--update", "sideways"), 2, "update"),
    "train forward-kernel bogus": (_train("--forward-kernel", "magic"), 2, "forward-kernel"),
    "train labels bogus": (_train("--labels", "random"), 2, "labels"),
    "train dense-gd lr 1e30": (_train("--method", "dense-gd", "--lr", "1e30"), 1,
                               "non-finite loss"),
    # ---- fit / plot / report / check on missing, damaged or foreign tables ------------------
    **{f"{cmd} runs.csv {spoil}": (_analysis(cmd, spoil), 2, "runs.csv")
       for cmd in ("fit", "plot", "report", "check") for spoil in SPOIL},
    "fit missing dir": (lambda tmp: ["fit", str(tmp / "nope")], 2, "DIR"),
    "fit dir without runs.csv": (lambda tmp: ["fit", str(tmp)], 2, "runs.csv"),
    "fit on a file": (lambda tmp: (tmp.joinpath("f.csv").write_text("x"),
                                   ["fit", str(tmp / "f.csv")])[1], 2, "not a directory"),
    "fit min-m 0": (lambda tmp: ["fit", str(_run_dir(tmp)), "--min-m", "0"], 2, "min-m"),
    "fit window bogus": (lambda tmp: ["fit", str(_run_dir(tmp)), "--window", "some"], 2,
                         "--window"),
    "fit garbage experiment.toml": (lambda tmp: (_run_dir(tmp).joinpath("experiment.toml")
                                                 .write_bytes(b"[fit\xff"),
                                                 ["fit", str(tmp / "run")])[1],
                                    2, "experiment.toml"),
    "report garbage fits.csv": (lambda tmp: (_run_dir(tmp).joinpath("fits.csv")
                                             .write_bytes(b"\x00\x01\x02"),
                                             ["report", str(tmp / "run")])[1], 2, "fits.csv"),
    "check missing baseline": (lambda tmp: ["check", str(_run_dir(tmp, fitted=True)),
                                            "--baseline",
                                            str(tmp / "nope")], 2, "baseline"),
    "check without fits": (lambda tmp: ["check", str(_run_dir(tmp)), "--baseline",
                                        str(_run_dir(tmp))], 2, "fits.csv"),
    "check missing limits": (lambda tmp: ["check", str(_run_dir(tmp, fitted=True)),
                                          "--baseline",
                                          str(tmp / "run"), "--limits", str(tmp / "no.toml")],
                             2, "limits"),
    "plot missing dir": (lambda tmp: ["plot", str(tmp / "nope")], 2, "DIR"),
    "report missing dir": (lambda tmp: ["report", str(tmp / "nope")], 2, "DIR"),
    # ---- issue 22: options that do not apply, thread counts, memory advice ---------------
    "sweep --partition with local": (_sweep("--partition", "debug"), 2, "--partition"),
    "sweep --time with local": (_sweep("--time", "10"), 2, "--time"),
    "sweep --gpus-per-task with local": (_sweep("--gpus-per-task", "1"), 2, "--gpus-per-task"),
    "sweep --array-parallelism with local": (_sweep("--array-parallelism", "2"), 2,
                                             "--array-parallelism"),
    "sweep --partition with local-processes": (_sweep("--executor", "local-processes",
                                                      "--partition", "x"), 2, "--partition"),
    "toml threads 1000": (_toml("[timing]", "[timing]\nthreads = 1000"), 2,
                          "usable cores"),
    "calibrate --threads 1000": (lambda tmp: ["calibrate", "--threads", "1000", "--out",
                                              str(tmp / "cal")], 2, "usable cores"),
    "train memory advice float32": (_train("--m", "200000", "--n", "8", "--dtype", "float32"),
                                    2, "what fits: m <= "),
    "predict calibration of another dtype": (
        lambda tmp: ["predict", str(_width16(tmp)), "--calibration",
                     str(_width16(tmp.joinpath("o").mkdir() or tmp / "o", _other_dtype)
                         / "calibration.json")], 2, "pass --force"),
    "model calibration of another dtype": (
        lambda tmp: ["model", str(_width16(tmp, _other_dtype))], 2, "pass --force"),
    # ---- more files and flags across every command ------------------------------------
    "toml threads 0": (_toml("[timing]", "[timing]\nthreads = 0"), 2, "timing.threads"),
    "toml threads string": (_toml("[timing]", '[timing]\nthreads = "2"'), 2, "timing.threads"),
    "toml probes not a boolean": (_toml("[timing]", '[calibration]\nprobes = "yes"\n[timing]'),
                                  2, "calibration.probes"),
    "toml calibration unknown key": (_toml("[timing]", "[calibration]\nprobe = true\n[timing]"),
                                     2, "probe"),
    "toml training iterations -1": (_toml("[timing]", "[training]\niterations = -1\n[timing]"),
                                    2, "training.iterations"),
    "toml training unknown key": (_toml("[timing]", "[training]\niters = 3\n[timing]"), 2,
                                  "iters"),
    "toml executor kind cloud": (_toml("[timing]", '[executor]\nkind = "cloud"\n[timing]'), 2,
                                 "executor.kind"),
    "toml executor time soon": (_toml("[timing]", '[executor]\ntime = "soon"\n[timing]'), 2,
                                "executor.time"),
    "toml executor unknown key": (_toml("[timing]", '[executor]\nqueue = "a"\n[timing]'), 2,
                                  "queue"),
    "toml fit window some": (_toml("[timing]", '[fit]\nwindow = "some"\n[timing]'), 2,
                             "fit.window"),
    "toml timing unknown key": (_toml("[timing]", "[timing]\nwarmups = 2"), 2, "warmups"),
    "toml timing samples 0": (_toml("samples = 2", "samples = 0"), 2, "timing.samples"),
    "toml rounds above samples": (_toml("samples = 2", "samples = 2\nrounds = 99"), 2,
                                  "timing.rounds"),
    "toml fixed data bogus": (_toml("seed = 0\n", 'seed = 0\ndata = "mnist"\n'), 2,
                              "fixed.data"),
    "toml fixed dtype float16": (_toml("seed = 0\n", 'seed = 0\ndtype = "float16"\n'), 2,
                                 "fixed.dtype"),
    "toml seed and seeds": (_toml("seed = 0\n", "seed = 0\nseeds = [1, 2]\n"), 2,
                            "seeds"),
    "toml backend tpu": (_toml('name = "tiny"', 'name = "tiny"\nbackend = "tpu"'), 2,
                         "backend"),
    "toml unknown top key": (_toml('name = "tiny"', 'name = "tiny"\nmode = "fast"'), 2,
                             "mode"),
    "toml method bogus": (_toml('method = "dense-gn"', 'method = "dense-xx"'), 2, "method"),
    "toml dense-gn update": (_toml('method = "dense-gn"', 'method = "dense-gn"\n'
                                   'update = "scatter"'), 2, "update"),
    "toml sweep axis bogus": (_toml('axis = "m"', 'axis = "width"'), 2, "axis"),
    "toml sweep values empty": (_toml('axis = "m"\nvalues = [64, 128]',
                                      'axis = "m"\nvalues = []'), 2, "values"),
    "toml grid ratio 3": (_toml('axis = "m"\nvalues = [64, 128]',
                                'axis = "m"\nvalues = { start = 64, stop = 256, ratio = 3 }'),
                          2, "ratio"),
    "calibrate --dtype float16": (lambda tmp: ["calibrate", "--dtype", "float16", "--out",
                                               str(tmp / "c")], 2, "dtype"),
    "calibrate --backend tpu": (lambda tmp: ["calibrate", "--backend", "tpu", "--out",
                                             str(tmp / "c")], 2, "backend"),
    "predict missing calibration": (lambda tmp: ["predict", str(_width16(tmp)), "--calibration",
                                                 str(tmp / "none.json")], 2, "--calibration"),
    "predict garbage calibration": (_file("cal.json", b"{not json", "predict", str(WIDTH16),
                                          "--calibration", "{file}"), 2, "--calibration"),
    "predict calibration a list": (_file("cal.json", b"[1, 2]", "predict", str(WIDTH16),
                                         "--calibration", "{file}"), 2, "--calibration"),
    "predict calibration machines not objects": (
        _file("cal.json", b'{"machines": {"a": 1}}', "predict", str(WIDTH16), "--calibration",
              "{file}"), 2, "--calibration"),
    "predict calibration without rates": (
        _file("cal.json", b'{"machines": {"a": {"stream": []}}}', "predict", str(WIDTH16),
              "--calibration", "{file}"), 2, "loop_rate"),
    "predict unknown machine": (lambda tmp: ["predict", str(_width16(tmp)), "--calibration",
                                             str(WIDTH16 / "calibration.json"), "--machine",
                                             "nope"], 2, "nope"),
    "predict missing run": (lambda tmp: ["predict", str(tmp / "nope"), "--calibration",
                                         str(WIDTH16 / "calibration.json")], 2, "DIR"),
    "model garbage calibration": (lambda tmp: (_width16(tmp).joinpath("calibration.json")
                                               .write_bytes(b"\x00\xff"),
                                               ["model", str(tmp / "w16")])[1], 2,
                                  "calibration"),
    "model without calibration": (lambda tmp: (_width16(tmp).joinpath("calibration.json")
                                               .unlink(), ["model", str(tmp / "w16")])[1], 2,
                                  "calibration"),
    "model min-m nan": (lambda tmp: ["model", str(_width16(tmp)), "--min-m", "wide"], 2,
                        "--min-m"),
    "upgrade missing dir": (lambda tmp: ["upgrade", str(tmp / "nope")], 2, "DIR"),
    "upgrade runs.csv garbage": (_analysis("upgrade", "binary garbage"), 2, "runs.csv"),
    "check garbage limits": (lambda tmp: (tmp.joinpath("l.toml").write_bytes(b"[gate\xff"),
                                          ["check", str(_run_dir(tmp, fitted=True)),
                                           "--baseline", str(tmp / "run"), "--limits",
                                           str(tmp / "l.toml")])[1], 2, "l.toml"),
    "train --dtype float16": (_train("--dtype", "float16"), 2, "dtype"),
    "train --backend tpu": (_train("--backend", "tpu"), 2, "backend"),
    "train --data mnist": (_train("--data", "mnist"), 2, "data"),
    "train --threshold sideways": (_train("--threshold", "sideways"), 2, "threshold"),
    "train --method bogus": (_train("--method", "bogus"), 2, "method"),
    "train --iters 0": (_train("--iters", "0"), 2, "iters"),
    "train --n above m": (_train("--n", "128"), 2, "n"),
}


if sys.platform != "linux":  # /proc exists on Linux only
    CASES.pop("sweep --out under /proc")


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input(case: str, tmp_path: Path, capsys) -> None:
    make, code, needle = CASES[case]
    argv = make(tmp_path)
    try:
        status = cli.main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        status = exc.code
    out, err = capsys.readouterr()
    assert status == code, (argv, out, err)
    assert needle in err, err
    assert "Traceback" not in out + err and "RuntimeWarning" not in err, err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err  # one message, not a cascade


def test_at_least_150_cases() -> None:
    assert len(CASES) + len(ENV_CASES) >= 150


@pytest.mark.parametrize("case", sorted(ENV_CASES))
def test_bad_environment(case: str, tmp_path: Path) -> None:
    env, argv, code, needle = ENV_CASES[case]
    p = subprocess.run([sys.executable, "-m", "subquad", *argv], capture_output=True, text=True,
                       cwd=tmp_path, env={**os.environ, **env}, timeout=300)
    assert p.returncode == code, (argv, p.stdout, p.stderr)
    assert needle in p.stderr and "Traceback" not in p.stdout + p.stderr, p.stderr
    assert len(p.stderr.splitlines()) == 1, p.stderr


@pytest.mark.skipif(not _no_gpu(), reason="a GPU is usable here")
@pytest.mark.parametrize("calibration", [True, False])
def test_cupy_without_gpu_names_the_gpu_not_memory(tmp_path: Path, capsys,
                                                   calibration: bool) -> None:
    text = 'backend = "cupy"\n' + TOML + ("[calibration]\nenabled = true\n" if calibration
                                          else "")
    path = tmp_path / "e.toml"
    path.write_text(text)
    assert cli.main(["sweep", str(path), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "GPU" in err and "cupy" in err and "MiB" not in err, err
    assert not (tmp_path / "o").exists()


def test_rank_max_message_advertises_only_accepted_forms(capsys) -> None:
    assert cli.main([*TRAIN, "--update", "lazy", "--rank-max", "0"]) == 2
    err = capsys.readouterr().err
    assert "'m^0.5'" not in err and "--rank-exponent" in err, err


def test_advice_fits_the_threshold_in_use() -> None:
    from subquad.model.sparsify import activity_advice

    assert "--threshold adaptive" in activity_advice("fixed", 256, 0.01)
    adaptive = activity_advice("adaptive", 256, 0.01)
    assert "--threshold" not in adaptive and "2.56" in adaptive


@pytest.mark.filterwarnings("ignore::subquad.model.sparsify.DepthInstabilityWarning")
def test_singular_gram_under_fixed_threshold_advises_adaptive(capsys) -> None:
    args = ["train", "--m", "64", "--n", "16", "--L", "6", "--c", "0.5", "--iters", "3",
            "--threshold", "fixed", "--json"]
    status = cli.main(args)
    out, err = capsys.readouterr()
    assert status == 2 and "singular" in err and "--threshold adaptive" in err, err
    record = json.loads(out)  # one JSON object, with the trajectory so far
    assert record["status"] == "singular" and "singular" in record["message"]
    assert len(record["loss"]) >= 1 and record["config"]["threshold"] == "fixed"


def test_train_json_on_divergence_keeps_the_trajectory(capsys) -> None:
    status = cli.main([*TRAIN, "--method", "dense-gd", "--lr", "1e30", "--iters", "5", "--json"])
    out, err = capsys.readouterr()
    assert status == 1
    assert len(out.strip().splitlines()) == 1
    record = json.loads(out)
    assert record["status"] == "nan" and "non-finite loss" in record["message"]
    assert record["loss"] and record["config"]["method"] == "dense-gd"


def test_train_json_on_success_says_ok(capsys) -> None:
    assert cli.main([*TRAIN, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["status"] == "ok" and len(record["loss"]) == 3


def test_internal_error_exits_1_with_a_log(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    import subquad.model.train as train

    def boom(*args, **kwargs):
        raise ZeroDivisionError("deliberate")

    monkeypatch.setattr(train, "run_training", boom)
    assert cli.main(TRAIN) == 1
    err = capsys.readouterr().err
    assert "internal error: ZeroDivisionError: deliberate" in err and "Traceback" not in err
    logs = list((tmp_path / "cache" / "subquad").glob("crash-*.log"))
    assert len(logs) == 1 and str(logs[0]) in err
    assert "Traceback" in logs[0].read_text() and "deliberate" in logs[0].read_text()


def test_no_writer_bypasses_subquad_files() -> None:
    """Every file the project writes goes through subquad.files (atomic, umask)."""
    root = Path(__file__).resolve().parents[1]
    writer = re.compile(r"(?<!atomic_)write_(text|bytes)\(|\.to_csv\((?!index=False\))"
                        r"|\.savefig\((?!buf)|json\.dump\((?!.*sys\.stdout)|shutil\.copy"
                        r"|\bopen\([^)]*,\s*[\"'][^\"']*[wax+]|O_WRONLY|O_CREAT")
    offenders = []
    for path in [*root.joinpath("subquad").rglob("*.py"),
                 *root.joinpath("experiments").rglob("*.py")]:
        if path.name == "files.py":
            continue
        for k, line in enumerate(path.read_text().splitlines(), 1):
            if writer.search(line.split("#")[0]):
                offenders.append(f"{path.relative_to(root)}:{k}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_cg_advice_fits_the_solver(capsys) -> None:
    """Plain CG has no sketch: its advice must not be "raise --sketch-size"."""
    assert cli.main([*TRAIN, "--solver", "cg", "--cg-maxiter", "1", "--cg-tol", "1e-12"]) == 1
    err = capsys.readouterr().err
    assert "did not reach" in err and "--sketch-size" not in err and "pcg-" in err, err
