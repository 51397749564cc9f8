"""Every user mistake on every command: exit 2, one message naming what is wrong, no traceback.

Each case builds its inputs in a fresh directory, runs ``subquad`` in-process and checks the
exit status, a fragment of the message (the parameter, file or key path) and that neither a
traceback nor a raw numpy warning reached the terminal. Cases that must fail *after* running
(a diverging step size) expect exit 1 with the same guarantees.
"""

from __future__ import annotations

import json
import re
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


def test_at_least_sixty_cases() -> None:
    assert len(CASES) >= 60


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
